//! The CPU goals of issue 16 in one table: all-MiniLM-L6-v2 with a 2-class head, bertlab (burn-flex,
//! fused ops and the reference decomposition) against PyTorch eager (`transformers`), same
//! shapes, same token ids, same thread count (2 by default):
//!
//! - training step, batch 16 × 128, forward + cross-entropy + backward + AdamW (lr 5e-5,
//!   ε 1e-8, weight decay 0.01), dropout on (goal: ≥ 1.0× PyTorch);
//! - inference, batch 64 × 128, eval mode, logits read back (goal: ≥ 1.2× PyTorch).
//!
//! ```text
//! BENCH_PYTHON=/tmp/venv-torch/bin/python cargo bench -p bertlab-models --bench step
//! ```
//!
//! bertlab's AdamW is a minimal one written here with Burn tensor ops, the same ~13 element-wise
//! ops per parameter as bertlab-train's optimizer (which this crate cannot depend on); PyTorch
//! runs `torch.optim.AdamW` (its default foreach implementation). The implementations alternate
//! for BENCH_ROUNDS rounds (default 3) of BENCH_STEPS training steps (default 5) and
//! BENCH_BATCHES inference batches (default 3), after one warm-up round; each reports its best
//! round (mean over the round), so load from other processes hits all alike. Needs ../shared (or
//! BERTLAB_SHARED); the PyTorch column is skipped, with the reason, when BENCH_PYTHON (default
//! `python3`) lacks torch or transformers. BENCH_MODEL picks another snapshot directory;
//! BENCH_KERNELS=fused or =reference times only that bertlab implementation.

mod support;

use std::time::Instant;

use bertlab_hub::{HubOptions, RepoRef};
use bertlab_models::{load_classifier, Kernels, Precision, TextClassifier};
use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use support::*;

type AD = Autodiff<Flex>;

const TRAIN_BATCH: usize = 16;
const INFER_BATCH: usize = 64;
const SEQ: usize = 128;
const TRAIN_BATCHES: usize = 4;
const LR: f64 = 5e-5;
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const WEIGHT_DECAY: f64 = 0.01;

/// AdamW as `torch.optim.AdamW`, moments in f32 tensors keyed by parameter id.
struct AdamW {
    steps: i32,
    first: GradientsParams,
    second: GradientsParams,
}

struct AdamWMapper<'a> {
    grads: GradientsParams,
    opt: &'a mut AdamW,
}

impl ModuleMapper<AD> for AdamWMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AD, D>>) -> Param<Tensor<AD, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<Flex, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let t = self.opt.steps;
        let m = match self.opt.first.remove::<Flex, D>(id) {
            Some(m) => m.mul_scalar(BETA1).add(grad.clone().mul_scalar(1.0 - BETA1)),
            None => grad.clone().mul_scalar(1.0 - BETA1),
        };
        let g2 = grad.square().mul_scalar(1.0 - BETA2);
        let v = match self.opt.second.remove::<Flex, D>(id) {
            Some(v) => v.mul_scalar(BETA2).add(g2),
            None => g2,
        };
        let denom = v.clone().sqrt().mul_scalar(1.0 / (1.0 - BETA2.powi(t)).sqrt()).add_scalar(EPS);
        let update = m.clone().div(denom).mul_scalar(LR / (1.0 - BETA1.powi(t)));
        let value = tensor.inner().mul_scalar(1.0 - LR * WEIGHT_DECAY).sub(update);
        self.opt.first.register::<Flex, D>(id, m);
        self.opt.second.register::<Flex, D>(id, v);
        Param::from_mapped_value(id, Tensor::from_inner(value).require_grad(), mapper)
    }
}

impl AdamW {
    fn new() -> AdamW {
        AdamW { steps: 0, first: GradientsParams::new(), second: GradientsParams::new() }
    }

    fn step(&mut self, model: TextClassifier<AD>, grads: GradientsParams) -> TextClassifier<AD> {
        self.steps += 1;
        model.map(&mut AdamWMapper { grads, opt: self })
    }
}

/// Seconds of one training step's phases.
#[derive(Default, Clone, Copy)]
struct Phases {
    forward: f64,
    backward: f64,
    optimizer: f64,
}

impl Phases {
    fn total(&self) -> f64 {
        self.forward + self.backward + self.optimizer
    }
}

struct Batch {
    ids: Vec<i64>,
    labels: Vec<i64>,
}

/// One bertlab implementation (fused or reference) with its own model and optimizer state.
struct Bertlab {
    name: String,
    model: Option<TextClassifier<AD>>,
    adam: AdamW,
}

impl Bertlab {
    fn train_step(&mut self, batch: &Batch) -> Phases {
        let device = Default::default();
        let model = self.model.take().expect("model present between steps");
        let ids =
            Tensor::<AD, 2, Int>::from_data(TensorData::new(batch.ids.clone(), [TRAIN_BATCH, SEQ]), &device);
        let mask = Tensor::<AD, 2, Int>::ones([TRAIN_BATCH, SEQ], &device);
        let t = Instant::now();
        let logits = model.forward(ids, mask, Precision::F32);
        let onehot: Vec<f32> =
            batch.labels.iter().flat_map(|&l| [(l == 0) as i32 as f32, (l == 1) as i32 as f32]).collect();
        let onehot = Tensor::<AD, 2>::from_data(TensorData::new(onehot, [TRAIN_BATCH, 2]), &device);
        let loss = (log_softmax(logits, 1) * onehot).sum().div_scalar(TRAIN_BATCH as f64).neg();
        let forward = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let backward = t.elapsed().as_secs_f64();
        let t = Instant::now();
        // Flex is eager: the update is done when `step` returns.
        self.model = Some(self.adam.step(model, grads));
        Phases { forward, backward, optimizer: t.elapsed().as_secs_f64() }
    }

    fn infer(&self, ids: &[i64]) -> f64 {
        let device = Default::default();
        let model = self.model.as_ref().expect("model present").valid();
        let ids =
            Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids.to_vec(), [INFER_BATCH, SEQ]), &device);
        let mask = Tensor::<Flex, 2, Int>::ones([INFER_BATCH, SEQ], &device);
        let t = Instant::now();
        let logits: Vec<f32> = model.forward(ids, mask, Precision::F32).into_data().to_vec().unwrap();
        let seconds = t.elapsed().as_secs_f64();
        assert!(logits.iter().all(|v| v.is_finite()), "{}: non-finite logits", self.name);
        seconds
    }
}

const TORCH_SCRIPT: &str = r#"
import json, sys, time
args = json.loads(sys.stdin.readline())
import torch
torch.set_num_threads(args["threads"])
torch.manual_seed(0)
from transformers import AutoModelForSequenceClassification
model = AutoModelForSequenceClassification.from_pretrained(args["model"], num_labels=2)
model.train()
decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=args["lr"], eps=1e-8)
seq = args["seq"]
train = [(torch.tensor(b["ids"]).reshape(-1, seq), torch.tensor(b["labels"])) for b in args["train"]]
infer_ids = torch.tensor(args["infer"]).reshape(-1, seq)
def train_step(i):
    ids, labels = train[i % len(train)]
    t0 = time.perf_counter()
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step(); opt.zero_grad()
    t3 = time.perf_counter()
    return [t1 - t0, t2 - t1, t3 - t2]
def infer():
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        model(input_ids=infer_ids, attention_mask=torch.ones_like(infer_ids)).logits.sum().item()
    t = time.perf_counter() - t0
    model.train()
    return t
print(json.dumps({"torch": torch.__version__, "attn": model.config._attn_implementation, "threads": torch.get_num_threads()}), flush=True)
step = 0
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "train":
        out = []
        for _ in range(req["n"]):
            out.append(train_step(step)); step += 1
    else:
        out = [infer() for _ in range(req["n"])]
    print(json.dumps(out), flush=True)
"#;

/// Best rounds of one implementation.
#[derive(Default)]
struct Results {
    train: Best,
    phases: Option<Phases>,
    infer: Best,
}

impl Results {
    fn add_train(&mut self, steps: &[Phases]) {
        let n = steps.len() as f64;
        let mean = Phases {
            forward: steps.iter().map(|p| p.forward).sum::<f64>() / n,
            backward: steps.iter().map(|p| p.backward).sum::<f64>() / n,
            optimizer: steps.iter().map(|p| p.optimizer).sum::<f64>() / n,
        };
        if self.train.0.is_none_or(|b| mean.total() < b) {
            self.phases = Some(mean);
        }
        self.train.add(mean.total());
    }
}

fn main() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let threads = threads();
    init_threads(threads);
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    let steps = env_usize("BENCH_STEPS", 5).max(1);
    let batches = env_usize("BENCH_BATCHES", 3).max(1);
    let model_dir = std::env::var_os("BENCH_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| shared.join("models/all-MiniLM-L6-v2"));

    let train: Vec<Batch> = (0..TRAIN_BATCHES)
        .map(|i| Batch {
            ids: token_ids(TRAIN_BATCH, SEQ, 100 + i as u64),
            labels: token_ids(1, TRAIN_BATCH + 2, 200 + i as u64)[1..=TRAIN_BATCH]
                .iter()
                .map(|v| v % 2)
                .collect(),
        })
        .collect();
    let infer_ids = token_ids(INFER_BATCH, SEQ, 7);

    let labels = ["neg".to_string(), "pos".to_string()];
    let device = Default::default();
    AD::seed(&device, 0);
    let (model, _, _) = load_classifier::<AD>(
        &RepoRef::Local(model_dir.clone()),
        &HubOptions::default(),
        &labels,
        0,
        &device,
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", model_dir.display()));
    // BENCH_KERNELS=fused|reference times one of the two (profiling); default both.
    let only = std::env::var("BENCH_KERNELS").unwrap_or_default();
    let mut impls: Vec<Bertlab> =
        [("bertlab fused", Kernels::Fused), ("bertlab reference", Kernels::Reference)]
            .into_iter()
            .filter(|(name, _)| only.is_empty() || name.ends_with(only.as_str()))
            .map(|(name, k)| Bertlab {
                name: name.to_string(),
                model: Some(model.clone().with_kernels(k)),
                adam: AdamW::new(),
            })
            .collect();

    let args = serde_json::json!({
        "model": model_dir, "threads": threads, "lr": LR, "seq": SEQ,
        "train": train.iter().map(|b| serde_json::json!({"ids": b.ids, "labels": b.labels})).collect::<Vec<_>>(),
        "infer": infer_ids,
    });
    let mut torch = match Python::start(TORCH_SCRIPT, &args) {
        Ok(p) => Some(p),
        Err(why) => {
            eprintln!("PyTorch skipped: {why}");
            None
        }
    };
    let torch_name = torch.as_ref().map(|t| {
        format!(
            "PyTorch {} eager ({} attention, {} threads)",
            t.hello["torch"].as_str().unwrap_or("?"),
            t.hello["attn"].as_str().unwrap_or("?"),
            t.hello["threads"]
        )
    });

    println!("all-MiniLM-L6-v2, {threads} threads, {} — load average at start {}", machine(), load_average());
    let mut results: Vec<Results> = (0..impls.len() + 1).map(|_| Results::default()).collect();
    let mut step_index = 0;
    // Round 0 warms up (allocator, page cache, Python's first calls) and is not counted.
    for round in 0..=rounds {
        for (i, imp) in impls.iter_mut().enumerate() {
            let phases: Vec<Phases> =
                (0..steps).map(|s| imp.train_step(&train[(step_index + s) % TRAIN_BATCHES])).collect();
            let infer: Vec<f64> = (0..batches).map(|_| imp.infer(&infer_ids)).collect();
            eprintln!(
                "round {round}: {} train {:.3} s/step, infer {:.3} s/batch (load {})",
                imp.name,
                mean(&phases.iter().map(Phases::total).collect::<Vec<_>>()),
                mean(&infer),
                load_average()
            );
            if round > 0 {
                results[i].add_train(&phases);
                results[i].infer.add(mean(&infer));
            }
        }
        step_index += steps;
        if let Some(t) = torch.as_mut() {
            let answer = t.ask(&serde_json::json!({"op": "train", "n": steps}));
            let phases: Vec<Phases> = answer
                .as_array()
                .expect("a list of steps")
                .iter()
                .map(|s| Phases {
                    forward: s[0].as_f64().unwrap_or(f64::NAN),
                    backward: s[1].as_f64().unwrap_or(f64::NAN),
                    optimizer: s[2].as_f64().unwrap_or(f64::NAN),
                })
                .collect();
            let infer: Vec<f64> = t
                .ask(&serde_json::json!({"op": "infer", "n": batches}))
                .as_array()
                .expect("a list")
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect();
            eprintln!(
                "round {round}: PyTorch train {:.3} s/step, infer {:.3} s/batch (load {})",
                mean(&phases.iter().map(Phases::total).collect::<Vec<_>>()),
                mean(&infer),
                load_average()
            );
            if round > 0 {
                let last = results.len() - 1;
                results[last].add_train(&phases);
                results[last].infer.add(mean(&infer));
            }
        }
    }

    let torch_result = torch_name.as_ref().map(|_| &results[impls.len()]);
    let ratio = |ours: Best, theirs: Option<Best>| match (ours.0, theirs.and_then(|t| t.0)) {
        (Some(o), Some(t)) => format!("{:.2}×", t / o),
        _ => "-".to_string(),
    };
    println!();
    println!(
        "| implementation | train s/step (fwd / bwd / AdamW) | train seq/s | vs PyTorch (goal ≥ 1.0×) | inference s/batch | inference seq/s | vs PyTorch (goal ≥ 1.2×) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rows: Vec<(String, &Results)> =
        impls.iter().map(|i| i.name.clone()).zip(results.iter()).collect();
    if let (Some(name), Some(r)) = (&torch_name, torch_result) {
        rows.push((name.clone(), r));
    }
    for (name, r) in rows {
        let phases = r.phases.map_or("-".to_string(), |p| {
            format!("{:.3} ({:.3} / {:.3} / {:.3})", p.total(), p.forward, p.backward, p.optimizer)
        });
        println!(
            "| {name} | {phases} | {} | {} | {} | {} | {} |",
            r.train.0.map_or("-".to_string(), |t| format!("{:.1}", TRAIN_BATCH as f64 / t)),
            ratio(r.train, torch_result.map(|t| t.train)),
            r.infer.show(1.0, 3),
            r.infer.0.map_or("-".to_string(), |t| format!("{:.1}", INFER_BATCH as f64 / t)),
            ratio(r.infer, torch_result.map(|t| t.infer)),
        );
    }
    println!(
        "\ntraining: batch {TRAIN_BATCH} x {SEQ}, AdamW, f32, dropout on; inference: batch {INFER_BATCH} x {SEQ}, \
         eval mode; best of {rounds} interleaved rounds ({steps} steps, {batches} batches each); load average at end {}",
        load_average()
    );
    if torch.is_none() {
        println!("PyTorch column skipped (see the line above the table).");
    }
}
