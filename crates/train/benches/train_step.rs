//! Training throughput of bertlab against PyTorch eager on the same work: MiniLM-L6 (all-MiniLM-L6-v2,
//! a 6-layer 384-wide BERT) with a fresh 2-class head, batch 16 × 128 tokens (random ids, full
//! attention mask, fixed shapes), AdamW (lr 5e-5, ε 1e-8, weight decay 0.01), dropout on.
//!
//! `cargo bench -p bertlab-train --bench train_step` — needs ../shared (skips without it); the
//! PyTorch row needs `python3` with torch and transformers (skipped when absent) and runs with
//! `torch.set_num_threads(N)`, N = this machine's available parallelism (BENCH_THREADS overrides).
//! BENCH_MODEL overrides the model directory. BENCH_STEPS (default 10) timed steps after 2
//! warm-up steps; BENCH_TORCH=0 skips PyTorch.
//! The two alternate for BENCH_ROUNDS rounds (default 2) and each reports its fastest round, so
//! that load from other processes on a shared machine hits both alike.

use bertlab_data::rng::Pcg64;
use bertlab_hub::{HubOptions, RepoKind, RepoRef};
use bertlab_models::{load_classifier, Precision};
use bertlab_train::optim::AdamSettings;
use bertlab_train::{BatchArrays, LrSchedule, PhaseTimes, Schedule, TrainStep};
use burn::backend::{Autodiff, Flex};
use std::time::Instant;

type AB = Autodiff<Flex>;

const BATCH: usize = 16;
const SEQ: usize = 128;
const LR: f64 = 5e-5;

fn random_batch(rng: &mut Pcg64) -> (BatchArrays, Vec<u32>) {
    let mut ids = Vec::with_capacity(BATCH * SEQ);
    for _ in 0..BATCH {
        ids.push(101);
        for _ in 1..SEQ - 1 {
            ids.push(1000 + rng.interval(28_999) as i64);
        }
        ids.push(102);
    }
    let labels = (0..BATCH).map(|_| rng.interval(1) as u32).collect();
    (BatchArrays { input_ids: ids, attention_mask: vec![1; BATCH * SEQ], rows: BATCH, len: SEQ }, labels)
}

struct Timing {
    seconds_per_step: f64,
    fwd_bwd: f64,
    optimizer: f64,
}

fn bench_burn(model_dir: &std::path::Path, steps: usize) -> Timing {
    let device = Default::default();
    let repo = RepoRef::parse(model_dir.to_str().unwrap(), RepoKind::Model);
    let labels = vec!["neg".to_string(), "pos".to_string()];
    let (model, _, _) = load_classifier::<AB>(&repo, &HubOptions::default(), &labels, 0, &device).unwrap();
    // The trainer's own step (what `fit` runs), at a constant learning rate.
    let schedule = LrSchedule::new(Schedule::Constant, LR, (steps + 2) as u64, 0.0);
    let mut trainer = TrainStep::new(model, AdamSettings::hf_adamw(0.01), schedule, None, Precision::F32);
    let mut rng = Pcg64::new(0);
    let mut phases = PhaseTimes::default();
    let mut started = Instant::now();
    for step in 0..steps + 2 {
        if step == 2 {
            phases = PhaseTimes::default();
            started = Instant::now();
        }
        let (arrays, y) = random_batch(&mut rng);
        // Flex is eager: the phase timer's device syncs cost nothing here.
        trainer.step(&[(&arrays, &y)], &device, Some(&mut phases));
    }
    let n = steps as f64;
    Timing {
        seconds_per_step: started.elapsed().as_secs_f64() / n,
        fwd_bwd: (phases.upload + phases.forward + phases.readback + phases.backward) / n,
        optimizer: (phases.grad_norm + phases.optimizer) / n,
    }
}

const TORCH_SCRIPT: &str = r#"
import json, sys, time, torch
from transformers import AutoModelForSequenceClassification
model_dir, steps, threads, batch, seq, lr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
model.train()
decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, eps=1e-8)
g = torch.Generator().manual_seed(0)
fb = op = 0.0
for step in range(steps + 2):
    if step == 2:
        fb = op = 0.0
        start = time.perf_counter()
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    ids[:, 0] = 101; ids[:, -1] = 102
    labels = torch.randint(0, 2, (batch,), generator=g)
    t = time.perf_counter()
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    loss.backward()
    fb += time.perf_counter() - t
    t = time.perf_counter()
    opt.step(); opt.zero_grad()
    op += time.perf_counter() - t
total = time.perf_counter() - start
print(json.dumps({"seconds_per_step": total / steps, "fwd_bwd": fb / steps, "optimizer": op / steps, "torch": torch.__version__}))
"#;

fn bench_torch(
    model_dir: &std::path::Path,
    steps: usize,
    threads: usize,
) -> Result<(Timing, String), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", TORCH_SCRIPT, model_dir.to_str().unwrap()])
        .args([steps.to_string(), threads.to_string(), BATCH.to_string(), SEQ.to_string(), LR.to_string()])
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("python3 failed").to_string());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().ok_or("no output")?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok((
        Timing { seconds_per_step: f("seconds_per_step"), fwd_bwd: f("fwd_bwd"), optimizer: f("optimizer") },
        v["torch"].as_str().unwrap_or("?").to_string(),
    ))
}

fn main() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    // BENCH_MODEL: another BERT/DistilBERT snapshot directory (same shapes are then not implied).
    let model_dir = std::env::var_os("BENCH_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| shared.join("models/all-MiniLM-L6-v2"));
    let steps: usize = std::env::var("BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let threads: usize = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2).max(1);
    let skip_torch = std::env::var("BENCH_TORCH").as_deref() == Ok("0");

    println!(
        "MiniLM-L6 training step, batch {BATCH} × {SEQ} tokens, AdamW, f32, {steps} timed steps, \
         {threads} threads, best of {rounds} alternating rounds"
    );
    let fastest = |a: Timing, b: Timing| if b.seconds_per_step < a.seconds_per_step { b } else { a };
    let mut burn: Option<Timing> = None;
    let mut torch: Result<(Timing, String), String> = Err("BENCH_TORCH=0".to_string());
    for round in 0..rounds {
        let b = bench_burn(&model_dir, steps);
        eprintln!("round {}: bertlab {:.3} s/step", round + 1, b.seconds_per_step);
        burn = Some(match burn {
            Some(prev) => fastest(prev, b),
            None => b,
        });
        if !skip_torch {
            torch = match (torch, bench_torch(&model_dir, steps, threads)) {
                (Ok((prev, v)), Ok((t, _))) => Ok((fastest(prev, t), v)),
                (_, Ok((t, v))) => Ok((t, v)),
                (_, Err(e)) => Err(e),
            };
            if let Ok((t, _)) = &torch {
                eprintln!("round {}: PyTorch {:.3} s/step", round + 1, t.seconds_per_step);
            }
        }
    }
    let burn = burn.expect("at least one round");
    let burn_seq = BATCH as f64 / burn.seconds_per_step;
    println!();
    println!("| implementation | s/step | fwd+bwd s | optimizer s | seq/s | vs PyTorch |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |name: &str, t: &Timing, ratio: &str| {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.1} | {ratio} |",
            t.seconds_per_step,
            t.fwd_bwd,
            t.optimizer,
            BATCH as f64 / t.seconds_per_step
        )
    };
    match torch {
        Ok((t, version)) => {
            let torch_seq = BATCH as f64 / t.seconds_per_step;
            row("bertlab (burn-flex 0.21)", &burn, &format!("{:.2}×", burn_seq / torch_seq));
            row(&format!("PyTorch {version} eager"), &t, "1.00×");
        }
        Err(why) => {
            row("bertlab (burn-flex 0.21)", &burn, "n/a");
            println!("\nPyTorch baseline skipped: {why}");
        }
    }
}
