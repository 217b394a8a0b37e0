//! `bench train-throughput`: training seq/s of randomly initialised models on seeded batch
//! plans, which scripts/torch_bench.py replays in PyTorch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::bail;
use bertlab_data::rng::Pcg64;
use bertlab_models::{ModelConfig, Precision};
use bertlab_run::DeviceSetting;
use bertlab_tokenize::check_max_len;
use bertlab_train::device_fault::panic_text;
use bertlab_train::metrics::cross_entropy_rows;
use bertlab_train::optim::AdamSettings;
use bertlab_train::predict::logits_to_vec;
use bertlab_train::{
    check_precision, is_out_of_memory, FaultWatch, LengthBuckets, LrSchedule, Padding, PendingLogits,
    PhaseTimes, Schedule, TrainStep,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::flags::positive;
use crate::ids::{IdsFile, PlanBatch};
use crate::models::{random_classifier, ModelChoice};
use crate::{emit, round, sync, write_atomic, Runtime};

/// Rows per batch: a number, or the notebook's sizes for the max_len.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BatchSize {
    /// 4096 tokens per batch: 32 at 128, 16 at 256, 8 at 512 (the notebook's choices).
    Auto,
    Rows(usize),
}

impl BatchSize {
    pub(crate) fn at(self, max_len: usize) -> usize {
        match self {
            BatchSize::Auto => (4096 / max_len).max(1),
            BatchSize::Rows(n) => n,
        }
    }
}

impl FromStr for BatchSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BatchSize::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(BatchSize::Rows(n)),
                _ => Err(format!("{s:?}: expected a positive number of rows or `auto`")),
            },
        }
    }
}

/// The batches of one throughput measurement, replayed identically by scripts/torch_bench.py.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    max_len: usize,
    batch: usize,
    padding: Padding,
    pad_multiple: usize,
    seed: u64,
    /// Leading batches that are run but not timed: the warm-up steps, then one batch of each
    /// padded length the timed batches use that the warm-up did not (kernel compilation and
    /// autotuning happen once per shape, which a real run amortises over thousands of steps).
    untimed: usize,
    batches: Vec<PlanBatch>,
    /// Training FLOPs of the timed batches per model name (bertlab_run::ModelShape's
    /// definition), so that the PyTorch replay reports MFU by the same count.
    #[serde(default)]
    train_flops: BTreeMap<String, f64>,
}

impl Plan {
    /// Padded tokens and Σ rows × len² (attention's work) of the timed batches.
    fn timed_tokens(&self) -> (u64, u64) {
        let timed = &self.batches[self.untimed..];
        let padded = timed.iter().map(|b| (b.rows.len() * b.len) as u64).sum();
        let attn_sq = timed.iter().map(|b| (b.rows.len() * b.len * b.len) as u64).sum();
        (padded, attn_sq)
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn make_plan(
    ids: &IdsFile,
    max_len: usize,
    batch: usize,
    padding: Padding,
    pad_multiple: usize,
    warmup: usize,
    steps: usize,
    seed: u64,
) -> anyhow::Result<Plan> {
    ids.check_max_len(max_len)?;
    let lengths = ids.lengths(max_len);
    if batch > lengths.len() {
        bail!("--batch {batch}: the ids file has only {} rows", lengths.len());
    }
    // The trainer's batching, epoch after epoch; short last batches are dropped so every
    // timed step has `batch` rows.
    let buckets = LengthBuckets::new(batch, padding, pad_multiple, max_len);
    let mut rng = Pcg64::new(seed);
    let mut pool = Vec::with_capacity(warmup + steps);
    while pool.len() < warmup + steps {
        pool.extend(
            buckets
                .epoch(&lengths, &mut rng)
                .into_iter()
                .filter(|b| b.rows.len() == batch)
                .map(|b| PlanBatch { len: b.padded_len, rows: b.rows }),
        );
    }
    pool.truncate(warmup + steps);
    let timed = pool.split_off(warmup);
    let mut seen: BTreeSet<usize> = pool.iter().map(|b| b.len).collect();
    for b in &timed {
        if seen.insert(b.len) {
            pool.push(b.clone());
        }
    }
    let untimed = pool.len();
    pool.extend(timed);
    Ok(Plan {
        max_len,
        batch,
        padding,
        pad_multiple,
        seed,
        untimed,
        batches: pool,
        train_flops: BTreeMap::new(),
    })
}

#[derive(Args)]
pub(crate) struct ThroughputArgs {
    /// Models, comma-separated: distilbert (DistilBERT-base), bert (BERT-base), or paths of
    /// config.json files.
    #[arg(long, value_delimiter = ',', default_value = "distilbert")]
    arch: Vec<ModelChoice>,
    /// Tokens per row, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128", value_parser = bertlab_run::count_arg)]
    max_len: Vec<usize>,
    /// Rows per batch, or `auto`: 32 at 128, 16 at 256, 8 at 512 (the notebook's sizes).
    #[arg(long, default_value = "auto")]
    batch: BatchSize,
    /// fixed (pad every row to max_len, the notebook) or bucket (dynamic padding, bertlab's
    /// default, on the ids file's real length distribution); comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "fixed")]
    padding: Vec<Padding>,
    /// f32, f16 (with dynamic loss scaling) or bf16; comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    precision: Vec<Precision>,
    /// Timed optimizer steps per measurement.
    #[arg(long, default_value_t = 20, value_parser = bertlab_run::count_arg)]
    steps: usize,
    /// Untimed steps first (plus one per new padded length, see `untimed` in the plan).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// The tokenized IMDB sample (`bertlab bench make-ids`).
    #[arg(long)]
    ids_file: PathBuf,
    /// Bucketed lengths are rounded up to a multiple of this (the trainer's default is 8).
    #[arg(long, default_value_t = 8, value_parser = bertlab_run::count_arg)]
    pad_multiple: usize,
    /// Seed of the batch plans and of the initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 5e-5, value_parser = positive)]
    lr: f64,
    /// Also time each phase of a step (upload, forward, readback, backward, grad norm,
    /// optimizer) in a second pass that syncs the device between phases.
    #[arg(long)]
    profile: bool,
    /// Read each step's logits back right after the step instead of in groups as the trainer
    /// does (bertlab_train::PendingLogits::for_training): measures what a per-step
    /// device→host sync costs.
    #[arg(long)]
    eager_readback: bool,
    /// Write the batch plans here (JSON lines), for scripts/torch_bench.py.
    #[arg(long)]
    plan_out: Option<PathBuf>,
    /// Only write the plans: no model, no device.
    #[arg(long, requires = "plan_out")]
    plan_only: bool,
    #[command(flatten)]
    device: DeviceSetting,
}

/// What one pass over a plan measured.
#[derive(Default)]
struct PassResult {
    seconds: f64,
    untimed_seconds: f64,
    skipped: usize,
    last_loss: f64,
    phases: PhaseTimes,
}

/// How a pass over a plan trains.
#[derive(Debug, Clone, Copy)]
struct PassOptions {
    precision: Precision,
    lr: f64,
    seed: u64,
    /// Sync and time each phase.
    profile: bool,
    /// Read each step's logits back right after the step instead of in groups.
    eager_readback: bool,
}

fn run_plan<B: AutodiffBackend>(
    config: &ModelConfig,
    plan: &Plan,
    ids: &IdsFile,
    o: PassOptions,
    device: &B::Device,
) -> PassResult {
    let model = random_classifier::<B>(config, o.seed, device);
    let schedule = LrSchedule::new(Schedule::Constant, o.lr, plan.batches.len() as u64, 0.0);
    let mut trainer = TrainStep::new(model, AdamSettings::hf_adamw(0.01), schedule, None, o.precision);
    let mut result = PassResult::default();
    let mut phases = PhaseTimes::default();
    let k = config.num_labels();
    let mean_loss = |logits: &[f32], labels: &[u32]| {
        cross_entropy_rows(logits, labels, k).iter().sum::<f64>() / labels.len() as f64
    };
    // Logits (with their labels) read back in groups, as the trainer reads them.
    let mut pending = PendingLogits::<B::InnerBackend, Vec<u32>>::for_training();
    sync::<B>(device);
    let mut started = Instant::now();
    // Steps skipped for f16 overflow before the timed ones (decided on the device, read back).
    let mut skipped_before = 0;
    for (i, b) in plan.batches.iter().enumerate() {
        if i == plan.untimed {
            skipped_before = trainer.settle().skipped;
            sync::<B>(device);
            result.untimed_seconds = started.elapsed().as_secs_f64();
            phases = PhaseTimes::default();
            started = Instant::now();
        }
        let t = Instant::now();
        let (arrays, labels) = ids.pack(b, plan.max_len);
        let timer = if o.profile {
            phases.upload += t.elapsed().as_secs_f64();
            Some(&mut phases)
        } else {
            None
        };
        let outcome = trainer.step(&[(&arrays, &labels)], device, timer);
        let logits = outcome.logits.into_iter().next().expect("one micro-batch, one logits tensor");
        if o.eager_readback || o.profile {
            if i >= plan.untimed {
                result.last_loss = mean_loss(&logits_to_vec(logits), &labels);
            }
        } else {
            pending.push(logits, labels.len(), labels.clone());
            if pending.due() {
                if let Some((labels, host)) = pending.take().pop() {
                    result.last_loss = mean_loss(&host, &labels);
                }
            }
        }
    }
    if let Some((labels, host)) = pending.take().pop() {
        result.last_loss = mean_loss(&host, &labels);
    }
    result.skipped = (trainer.settle().skipped - skipped_before) as usize;
    sync::<B>(device);
    result.seconds = started.elapsed().as_secs_f64();
    result.phases = phases;
    result
}

pub(crate) fn run<B: AutodiffBackend>(args: ThroughputArgs, rt: &Runtime<B>) -> anyhow::Result<()> {
    let ids = IdsFile::read(&args.ids_file)?;
    let mut plans: Vec<Plan> = Vec::new();
    for &max_len in &args.max_len {
        for &padding in &args.padding {
            let batch = args.batch.at(max_len);
            plans.push(make_plan(
                &ids,
                max_len,
                batch,
                padding,
                args.pad_multiple,
                args.warmup,
                args.steps,
                args.seed,
            )?);
        }
    }
    for plan in &mut plans {
        let (padded, attn_sq) = plan.timed_tokens();
        for choice in &args.arch {
            plan.train_flops.insert(choice.name.clone(), choice.shape().train_flops(padded, attn_sq));
        }
    }
    if let Some(path) = &args.plan_out {
        let mut text = String::new();
        for plan in &plans {
            text.push_str(&serde_json::to_string(plan)?);
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())?;
    }
    if args.plan_only {
        return Ok(());
    }
    let device = (rt.device)(&args.device.name())?;
    // A failed measurement (out of memory, a backend panic) is reported as a JSON line and
    // the next one runs: print panics as one line, not with a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let text = panic_text(info.payload());
        eprintln!("bench: panic: {}", text.lines().next().unwrap_or(""));
    }));
    // (after the printer above, which it keeps: it records the device threads' panics)
    bertlab_train::device_fault::install_panic_hook();
    for choice in &args.arch {
        for &precision in &args.precision {
            if let Err(e) = check_precision::<B::InnerBackend>(&device, precision) {
                emit(
                    json!({"bench": "train-throughput", "model": choice.name, "precision": precision.as_str(),
                    "backend": rt.name, "build": rt.build_label(), "unsupported": true, "error": e.to_string()}),
                );
                continue;
            }
            for plan in &plans {
                let record = throughput_one::<B>(choice, plan, &ids, precision, &args, rt, &device);
                emit(record);
                B::InnerBackend::memory_cleanup(&device);
            }
        }
    }
    Ok(())
}

fn throughput_one<B: AutodiffBackend>(
    choice: &ModelChoice,
    plan: &Plan,
    ids: &IdsFile,
    precision: Precision,
    args: &ThroughputArgs,
    rt: &Runtime<B>,
    device: &B::Device,
) -> Value {
    let c = &choice.config;
    let mut record = json!({
        "bench": "train-throughput", "backend": rt.name, "build": rt.build_label(), "model": choice.name,
        "arch": c.architecture.model_type(), "max_len": plan.max_len, "batch": plan.batch,
        "padding": plan.padding.to_string(), "precision": precision.as_str(),
        "readback": if args.eager_readback { "eager" } else { "deferred" },
    });
    // The ids were tokenized already (the ids file's own bound is checked with the plan); what
    // is left is the model's position table.
    if let Err(e) = check_max_len(&choice.name, plan.max_len, Some(c.max_position_embeddings), None) {
        record["error"] = json!(e.to_string());
        return record;
    }
    let timed = &plan.batches[plan.untimed..];
    let lengths = ids.lengths(plan.max_len);
    let real_tokens: u64 = timed.iter().flat_map(|b| &b.rows).map(|&r| lengths[r] as u64).sum();
    let (padded_tokens, attn_sq_tokens) = plan.timed_tokens();
    let rows: usize = timed.iter().map(|b| b.rows.len()).sum();
    let distinct: BTreeSet<usize> = timed.iter().map(|b| b.len).collect();
    let started = Instant::now();
    let faults = FaultWatch::start();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let o = PassOptions {
            precision,
            lr: args.lr,
            seed: args.seed,
            profile: false,
            eager_readback: args.eager_readback,
        };
        let pass = run_plan::<B>(c, plan, ids, o, device);
        let profile =
            args.profile.then(|| run_plan::<B>(c, plan, ids, PassOptions { profile: true, ..o }, device));
        (pass, profile)
    }));
    // A panic of the backend's device thread (CUDA out of memory) leaves timings of work done
    // on lost buffers: report it as the measurement's error, as a panic of this thread is.
    let outcome = match (outcome, faults.fault()) {
        (_, Some(fault)) => Err(Box::new(fault.message) as Box<dyn std::any::Any + Send>),
        (outcome, None) => outcome,
    };
    let (pass, profile) = match outcome {
        Ok(r) => r,
        Err(panic) => {
            let text = panic_text(&*panic);
            record["error"] = json!(text.lines().next().unwrap_or("").chars().take(300).collect::<String>());
            record["out_of_memory"] = json!(is_out_of_memory(&text));
            return record;
        }
    };
    let s = pass.seconds;
    let shape = choice.shape();
    let flops = shape.train_flops(padded_tokens, attn_sq_tokens);
    let tflops = flops / s / 1e12;
    let fields = json!({
        "steps": timed.len(), "untimed_steps": plan.untimed, "distinct_lengths": distinct.len(),
        "seconds": round(s, 4), "untimed_seconds": round(pass.untimed_seconds, 3),
        "total_seconds": round(started.elapsed().as_secs_f64(), 3),
        "step_ms": round(1e3 * s / timed.len() as f64, 3), "seq_per_s": round(rows as f64 / s, 3),
        "tokens_per_s": round(real_tokens as f64 / s, 1), "padded_tokens_per_s": round(padded_tokens as f64 / s, 1),
        "real_tokens": real_tokens, "padded_tokens": padded_tokens, "attn_sq_tokens": attn_sq_tokens,
        "layers": c.num_hidden_layers, "hidden": c.hidden_size, "intermediate": c.intermediate_size,
        "num_labels": c.num_labels(), "matmul_params": shape.matmul_params(), "train_flops": flops,
        "train_tflops": round(tflops, 3), "skipped_steps": pass.skipped, "last_loss": round(pass.last_loss, 5),
    });
    for (k, v) in fields.as_object().expect("an object") {
        record[k] = v.clone();
    }
    if let Some(p) = profile {
        let n = timed.len() as f64;
        let ms = |x: f64| round(1e3 * x / n, 3);
        let ph = &p.phases;
        record["profile_ms_per_step"] = json!({
            "upload": ms(ph.upload), "forward": ms(ph.forward), "readback": ms(ph.readback),
            "backward": ms(ph.backward), "grad_norm": ms(ph.grad_norm), "optimizer": ms(ph.optimizer),
            "step": ms(p.seconds),
        });
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::tests::ids_file;

    #[test]
    fn plans_warm_every_timed_shape_and_are_seeded() {
        let lengths: Vec<usize> = (0..200).map(|i| 5 + (i * 37) % 500).collect();
        let ids = ids_file(&lengths);
        let plan = make_plan(&ids, 256, 8, Padding::Bucket, 8, 2, 30, 7).unwrap();
        assert_eq!(plan.batches.len() - plan.untimed, 30);
        assert!(plan.batches.iter().all(|b| b.rows.len() == 8 && b.len % 8 == 0 && b.len <= 256));
        let warmed: BTreeSet<usize> = plan.batches[..plan.untimed].iter().map(|b| b.len).collect();
        assert!(plan.batches[plan.untimed..].iter().all(|b| warmed.contains(&b.len)));
        let again = make_plan(&ids, 256, 8, Padding::Bucket, 8, 2, 30, 7).unwrap();
        assert_eq!(serde_json::to_string(&plan).unwrap(), serde_json::to_string(&again).unwrap());
        let fixed = make_plan(&ids, 128, 32, Padding::Fixed, 8, 0, 10, 7).unwrap();
        assert_eq!(fixed.untimed, 1, "one untimed step for the single shape");
        assert!(fixed.batches.iter().all(|b| b.len == 128));
        assert!(make_plan(&ids, 1024, 8, Padding::Fixed, 8, 0, 1, 0).is_err());
        assert_eq!(BatchSize::Auto.at(128), 32);
        assert_eq!(BatchSize::Auto.at(512), 8);
    }
}
