//! Forward-pass throughput of all-MiniLM-L6-v2 (6 layers, 384 wide) at batch 32 × 128 tokens
//! on the CPU with 2 threads: Burn's Flex backend (the fused ops, and the seam's reference
//! decomposition, f32) against
//! PyTorch (`transformers`, eval, `no_grad`, `torch.set_num_threads(2)`) in the same run.
//!
//! ```text
//! cargo bench -p bertlab-models --bench forward
//! BERTLAB_BENCH_ITERS=10 cargo bench -p bertlab-models --bench forward
//! ```
//!
//! Needs ../shared (or BERTLAB_SHARED); the PyTorch row is skipped when BENCH_PYTHON (default
//! `python3`) lacks torch or transformers.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use bertlab_hub::{HubOptions, RepoRef};
use bertlab_models::{load_encoder, Encoder, Kernels, Precision};
use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};

const BATCH: usize = 32;
const SEQ: usize = 128;
const THREADS: usize = 2;

/// Deterministic `[CLS] w… [SEP]` rows of real-vocabulary ids (an LCG; no padding).
fn input_ids() -> Vec<i64> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut ids = Vec::with_capacity(BATCH * SEQ);
    for _ in 0..BATCH {
        ids.push(101);
        for _ in 1..SEQ - 1 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ids.push(1996 + ((state >> 33) % 27_000) as i64);
        }
        ids.push(102);
    }
    ids
}

/// Seconds of one Burn forward, result read back (Flex is eager, so this is all the work).
fn time_burn(encoder: &Encoder<Flex>, ids: &[i64]) -> f64 {
    let device = Default::default();
    let input = Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids.to_vec(), [BATCH, SEQ]), &device);
    let mask = Tensor::<Flex, 2, Int>::ones([BATCH, SEQ], &device);
    let start = Instant::now();
    let out = encoder.forward(input, mask, Precision::F32);
    let sum: f32 = out.last_hidden_state.sum().into_scalar();
    assert!(sum.is_finite());
    start.elapsed().as_secs_f64()
}

/// A persistent PyTorch process: `transformers`' `AutoModel` on the same ids, timed one
/// forward per request, so that its iterations interleave with Burn's and both see the same
/// machine load (this benchmark runs on shared 2-core machines).
const TORCH_SCRIPT: &str = r#"
import json, sys, time
import torch
from transformers import AutoModel
args = json.loads(sys.stdin.readline())
torch.set_num_threads(args["threads"])
model = AutoModel.from_pretrained(args["model"]).eval()
ids = torch.tensor(args["ids"]).reshape(args["batch"], args["seq"])
mask = torch.ones_like(ids)
def forward():
    start = time.perf_counter()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask).last_hidden_state.sum().item()
    return time.perf_counter() - start
forward()
print(json.dumps({"torch": torch.__version__, "attn": model.config._attn_implementation}), flush=True)
for line in sys.stdin:
    print(forward(), flush=True)
"#;

struct Torch {
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
    what: String,
}

impl Torch {
    /// Start the process and run its warm-up forward; `Err` says why PyTorch is skipped.
    fn start(model: &std::path::Path, ids: &[i64]) -> Result<Torch, String> {
        let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let mut child = Command::new(&python)
            .args(["-c", TORCH_SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{python} not runnable: {e}"))?;
        let request = serde_json::json!({
            "model": model, "ids": ids, "batch": BATCH, "seq": SEQ, "threads": THREADS,
        });
        let stdin = child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{request}").map_err(|e| e.to_string())?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let Ok(hello) = serde_json::from_str::<serde_json::Value>(&line) else {
            let mut stderr = String::new();
            let _ = child.stderr.take().map(|mut e| std::io::Read::read_to_string(&mut e, &mut stderr));
            let _ = child.wait();
            return Err(format!("{python} failed: {}", stderr.lines().last().unwrap_or("no output")));
        };
        let what = format!(
            "PyTorch {} ({} attention)",
            hello["torch"].as_str().unwrap_or("?"),
            hello["attn"].as_str().unwrap_or("?")
        );
        Ok(Torch { child, stdout, what })
    }

    /// Seconds of one forward.
    fn time(&mut self) -> f64 {
        let stdin = self.child.stdin.as_mut().expect("piped");
        writeln!(stdin, "run").expect("PyTorch process alive");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("PyTorch process alive");
        line.trim().parse().unwrap_or_else(|_| panic!("PyTorch process replied {line:?}"))
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // EOF ends the python loop
        let _ = self.child.wait();
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes flags such as `--bench`; this harness takes none.
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    rayon::ThreadPoolBuilder::new().num_threads(THREADS).build_global().expect("rayon pool set once");
    let iters: usize = std::env::var("BERTLAB_BENCH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let model = shared.join("models/all-MiniLM-L6-v2");
    let (encoder, _, _) =
        load_encoder::<Flex>(&RepoRef::Local(model.clone()), &HubOptions::default(), &Default::default())
            .expect("loading all-MiniLM-L6-v2");
    let ids = input_ids();

    let encoders: Vec<(String, Encoder<Flex>)> = vec![
        ("burn-flex f32, fused ops".to_string(), encoder.clone().with_kernels(Kernels::Fused)),
        (
            "burn-flex f32, reference decomposition".to_string(),
            encoder.clone().with_kernels(Kernels::Reference),
        ),
    ];
    let mut torch = match Torch::start(&model, &ids) {
        Ok(torch) => Some(torch),
        Err(why) => {
            eprintln!("PyTorch skipped: {why}");
            None
        }
    };
    for (_, e) in &encoders {
        time_burn(e, &ids); // warm-up
    }
    // Round-robin, so that every implementation sees the same load over the run.
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); encoders.len() + 1];
    for _ in 0..iters {
        for (i, (_, e)) in encoders.iter().enumerate() {
            times[i].push(time_burn(e, &ids));
        }
        if let Some(t) = torch.as_mut() {
            times[encoders.len()].push(t.time());
        }
    }
    let mut rows: Vec<(String, f64)> =
        encoders.iter().zip(&times).map(|((name, _), t)| (name.clone(), median(t))).collect();
    let torch_median = torch.as_ref().map(|t| {
        let m = median(&times[encoders.len()]);
        rows.push((t.what.clone(), m));
        m
    });

    println!("\nall-MiniLM-L6-v2 forward, batch {BATCH} x {SEQ} tokens, {THREADS} CPU threads, median of {iters} interleaved runs");
    println!("{:<52} {:>10} {:>9} {:>12}", "implementation", "ms/batch", "seq/s", "vs PyTorch");
    for (name, t) in &rows {
        let ratio = torch_median.map_or("-".to_string(), |p| format!("{:.2}x", p / t));
        println!("{name:<52} {:>10.1} {:>9.1} {ratio:>12}", t * 1e3, BATCH as f64 / t);
    }
    println!("(vs PyTorch: throughput relative to PyTorch's; above 1 means faster)");
}
