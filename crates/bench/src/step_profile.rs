//! `bench step-profile`: what one steady-state training step asks of the device — kernels
//! launched, device→host waits — and the kernels a run compiles, counted, not estimated
//! (issue 24's before-and-after measure for fused kernels and a wait-free step).
//!
//! **Launches** come from CubeCL's own launch log: the GPU builds' binary turns on CubeCL's
//! `[profiling]` logger at level `minimal` (one `Executing <kernel>` line for each kernel
//! launch, written by the device thread after the launch) and its `[compilation]` logger at
//! `basic` (one `[Compiling kernel] <name>` line per kernel compiled), both into one file
//! ([`crate::KernelLog`]). CubeCL writes that file from a background thread, so counting lines
//! at a moment would miss lines still on their way; instead the bench launches a *marker*
//! kernel at each boundary (Burn's `cross` product, whose `CrossKernel` a BERT never runs),
//! after a sync. CubeCL logs in launch order through one channel per device, so the lines
//! between two marker lines are exactly the launches between the two boundaries, and the count
//! is read once the last marker's line is in the file.
//!
//! With `--kernel-times` the same log is taken at CubeCL's level `basic`: each launch's line
//! holds its duration on the device (`| 1.234ms | <kernel>`, CubeCL's profiler: device
//! timestamps where the runtime has them), summed per step and per kernel kind — how long the
//! device computes in a step, to set against the wall time of the plain profile's step (the
//! rest is the device waiting on the host). CubeCL times a kernel by waiting for it, so the
//! timed run's own seconds per step are not the asynchronous step's.
//!
//! **Host waits** are counted where bertlab waits: CubeCL logs no read-backs or syncs, so they
//! are the count of [`bertlab_models::host_wait`], the one path by which the training step
//! reads back (the step state `TrainStep::settle` reads with the logits, the logits) or
//! syncs. Waits inside Burn or CubeCL (autotuning, on a shape's first steps) are not seen.
//!
//! What is measured, per configuration: a random classifier of the architecture (its layer
//! structure; `--hidden` / `--layers` cut it), AdamW steps (`TrainStep`, the trainer's step:
//! forward, loss, backward, the f16 overflow check, the optimizer) on fixed-length batches of
//! random ids with padding, `--warmup` steps first (compilation and autotuning), then two
//! blocks of `--steps` steps. After each block the block's logits are read back in one
//! transfer as `PendingLogits` does (the trainer does it every 64 batches): that read is
//! reported apart, since it is not a per-step cost. Two blocks, not one, so that a count that
//! is not yet steady shows as two different numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bertlab_data::rng::Pcg64;
use bertlab_models::{host_wait, ModelConfig, Precision};
use bertlab_run::{DeviceSetting, UsageError};
use bertlab_train::device_fault::panic_text;
use bertlab_train::optim::AdamSettings;
use bertlab_train::{
    check_precision, Batch, BatchArrays, FaultWatch, LrSchedule, PendingLogits, Schedule, TrainStep,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use clap::Args;
use serde_json::{json, Value};

use crate::flags::positive;
use crate::models::{random_classifier, ModelChoice};
use crate::throughput::BatchSize;
use crate::{emit, round, LaunchDetail, Runtime};

#[derive(Args)]
pub(crate) struct StepProfileArgs {
    /// Models, comma-separated: distilbert (DistilBERT-base's layer structure), bert
    /// (BERT-base's), or paths of config.json files.
    #[arg(long, value_delimiter = ',', default_value = "distilbert")]
    arch: Vec<ModelChoice>,
    /// Tokens per row (every batch is padded to it), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,512", value_parser = bertlab_run::count_arg)]
    max_len: Vec<usize>,
    /// Rows per batch, or `auto`: 32 at 128, 16 at 256, 8 at 512 (the notebook's sizes).
    #[arg(long, default_value = "auto")]
    batch: BatchSize,
    /// f32, f16 (with dynamic loss scaling) or bf16; comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "f16")]
    precision: Vec<Precision>,
    /// Cut the width: hidden size (heads of 64, at least one, and a feed-forward 4× as wide, as
    /// in the base models). Launches grow with the layers; the width moves them a little,
    /// through the number of heads (measured: BENCHMARKS.md), so a software GPU can count a base
    /// model's launches at a small width, a few short.
    #[arg(long, value_parser = bertlab_run::count_arg)]
    hidden: Option<usize>,
    /// Encoder layers (default: the model's).
    #[arg(long, value_parser = bertlab_run::count_arg)]
    layers: Option<usize>,
    /// Steps before counting (kernel compilation and autotuning happen in these).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Steps in each of the two counted blocks.
    #[arg(long, default_value_t = 4, value_parser = bertlab_run::count_arg)]
    steps: usize,
    /// Seed of the initialisation and the batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 5e-5, value_parser = positive)]
    lr: f64,
    /// Keep CubeCL's launch and compilation log in this file (default: a temporary file,
    /// removed after).
    #[arg(long)]
    kernel_log: Option<PathBuf>,
    /// Time every kernel on the device (CubeCL's profiler): `device_ms_per_step`, by kernel.
    /// Each launch then waits for its kernel, so this run's `seconds_per_step` is not the
    /// asynchronous step's: take that from a run without this flag.
    #[arg(long)]
    kernel_times: bool,
    #[command(flatten)]
    device: DeviceSetting,
}

/// The model a configuration trains: the choice, cut to `--hidden` / `--layers`.
fn cut(choice: &ModelChoice, hidden: Option<usize>, layers: Option<usize>) -> anyhow::Result<ModelConfig> {
    let mut c = choice.config.clone();
    if let Some(h) = hidden {
        c.hidden_size = h;
        if h > 64 && h % 64 != 0 {
            bail!(UsageError(format!(
                "--hidden {h}: must be a multiple of 64 (heads of 64), or at most 64 (one head)"
            )));
        }
        c.num_attention_heads = (h / 64).max(1);
        c.intermediate_size = 4 * h;
    }
    if let Some(l) = layers {
        c.num_hidden_layers = l;
    }
    Ok(c)
}

/// `count` batches of `rows` × `len` random ids (row lengths from half of `len` to all of it,
/// so that the attention mask has padding as real batches do), with alternating labels.
fn random_batches(
    rows: usize,
    len: usize,
    vocab: usize,
    count: usize,
    seed: u64,
) -> Vec<(BatchArrays, Vec<u32>)> {
    let mut rng = Pcg64::new(seed ^ 0x5eed_57e9);
    // (`bounded(n)` draws from 0..=n)
    (0..count)
        .map(|_| {
            let lengths: Vec<usize> =
                (0..rows).map(|_| len / 2 + rng.bounded((len - len / 2) as u64) as usize).collect();
            let batch = Batch { rows: (0..rows).collect(), padded_len: len, filler: 0 };
            let low = 1000.min(vocab as u64 - 1);
            let arrays = BatchArrays::pack(&batch, 0, |r, out| {
                out.extend(
                    (0..lengths[r].max(2)).map(|_| (low + rng.bounded(vocab as u64 - 1 - low)) as i64),
                );
            });
            (arrays, (0..rows).map(|r| (r % 2) as u32).collect())
        })
        .collect()
}

/// Launches of Burn's `cross` product, which marks a boundary in CubeCL's launch log: no
/// BERT step runs it, and its kernel's name is its own.
struct Marker<B: Backend> {
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    /// Markers launched so far.
    placed: usize,
}

/// How CubeCL names the marker's kernel in its log.
const MARKER_KERNEL: &str = "CrossKernel";

impl<B: Backend> Marker<B> {
    fn new(device: &B::Device) -> Self {
        let a = Tensor::<B, 2>::from_floats([[1.0, 0.0, 0.0]], device);
        let b = Tensor::<B, 2>::from_floats([[0.0, 1.0, 0.0]], device);
        Marker { a, b, placed: 0 }
    }

    /// Wait for everything queued, then launch the marker and wait for it: every launch before
    /// this call is logged before the marker's line, every launch after it after.
    fn place(&mut self, device: &B::Device) -> usize {
        B::sync(device).ok();
        let out = self.a.clone().cross(self.b.clone(), 1);
        // (kept alive until the sync, so the lazy backends run it)
        B::sync(device).ok();
        drop(out);
        self.placed += 1;
        self.placed - 1
    }
}

/// What CubeCL's log holds between consecutive markers: segment `i` lies between marker `i`
/// and marker `i + 1` (segment 0 of a fresh log is before the first marker: unused).
#[derive(Debug, Default, PartialEq)]
struct Segment {
    /// Launches per kernel kind ([`kernel_kind`]).
    launches: BTreeMap<String, u64>,
    /// Seconds on the device per kernel kind (lines with a duration only).
    durations: BTreeMap<String, f64>,
    /// Kernels compiled.
    compiled: u64,
}

impl Segment {
    fn total(&self) -> u64 {
        self.launches.values().sum()
    }
}

/// The kind of a launched kernel, from CubeCL's name for it (`ReduceKernel | TensorArgs |
/// WgpuRuntime`): its first two parts, without the runtime's name — enough to tell element-wise
/// fusions, matmuls with and without a fused epilogue, reductions, copies and random draws.
fn kernel_kind(name: &str) -> String {
    let parts: Vec<&str> = name.split(" | ").filter(|p| !p.ends_with("Runtime")).take(2).collect();
    parts.join(" | ")
}

/// Seconds from the way Rust prints a `Duration` (`{:?}`: `812ns`, `12.5µs`, `1.25ms`, `2s`),
/// as CubeCL's profiling log writes them.
fn parse_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, scale) = [("ns", 1e-9), ("µs", 1e-6), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|&(unit, scale)| text.strip_suffix(unit).map(|n| (n, scale)))?;
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some(value * scale)
}

/// A launch line of CubeCL's log: the kernel's name and, at level `basic`, its duration
/// (`Executing <kernel>`, or `| <duration> | <kernel>`).
fn launch_line(line: &str) -> Option<(&str, Option<f64>)> {
    if let Some(name) = line.strip_prefix("Executing ") {
        return Some((name, None));
    }
    let (duration, name) = line.strip_prefix("| ")?.split_once(" | ")?;
    Some((name, Some(parse_duration(duration)?)))
}

/// Split CubeCL's log (launch lines and `[Compiling kernel] <name>` lines) at the marker
/// launches; `None` until `markers` marker lines are in it.
fn segments(log: &str, markers: usize) -> Option<Vec<Segment>> {
    let mut out = vec![Segment::default()];
    for line in log.lines() {
        if let Some((name, duration)) = launch_line(line) {
            if name.starts_with(MARKER_KERNEL) {
                out.push(Segment::default());
            } else {
                let segment = out.last_mut().expect("one segment");
                let kind = kernel_kind(name);
                if let Some(d) = duration {
                    *segment.durations.entry(kind.clone()).or_default() += d;
                }
                *segment.launches.entry(kind).or_default() += 1;
            }
        } else if line.starts_with("[Compiling kernel]") {
            out.last_mut().expect("one segment").compiled += 1;
        }
    }
    (out.len() > markers).then_some(out)
}

/// Read the log once `markers` marker lines are in it (CubeCL writes it from a background
/// thread, a little after the launches).
fn read_log(path: &Path, markers: usize) -> anyhow::Result<Vec<Segment>> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read CubeCL's log", path.display()))?;
        if let Some(s) = segments(&text, markers) {
            return Ok(s);
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "{}: {markers} marker launches ({MARKER_KERNEL}) were made but the log holds fewer after 120 s: \
                 is CubeCL's profiling logger on?",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Marker indices and host-wait counts of one configuration's measurement.
struct Measured {
    /// Marker placed at the start (before the model is made) and at the end.
    first: usize,
    last: usize,
    /// Per block: the marker before its steps, and the one between its steps and its read.
    blocks: Vec<(usize, usize)>,
    /// Host waits during each block's steps, and during each block's logits read.
    step_waits: Vec<u64>,
    read_waits: Vec<u64>,
    skipped: usize,
    seconds_per_step: f64,
}

/// One configuration: warm-up, then two counted blocks, each followed by its logits read.
fn measure<B: AutodiffBackend>(
    config: &ModelConfig,
    batch: usize,
    max_len: usize,
    precision: Precision,
    args: &StepProfileArgs,
    marker: &mut Marker<B::InnerBackend>,
    device: &B::Device,
) -> Measured {
    let first = marker.place(device);
    let model = random_classifier::<B>(config, args.seed, device);
    let total = args.warmup + 2 * args.steps;
    let schedule = LrSchedule::new(Schedule::Constant, args.lr, total as u64, 0.0);
    let mut trainer = TrainStep::new(model, AdamSettings::hf_adamw(0.01), schedule, None, precision);
    let batches = random_batches(batch, max_len, config.vocab_size, 4, args.seed);
    let mut step = 0;
    let mut run = |trainer: &mut TrainStep<B>, pending: &mut PendingLogits<B::InnerBackend, ()>| {
        let (arrays, labels) = &batches[step % batches.len()];
        step += 1;
        let outcome = trainer.step(&[(arrays, labels)], device, None);
        for logits in outcome.logits {
            pending.push(logits, labels.len(), ());
        }
    };
    // The trainer reads every 64 batches; here only at the end of each block.
    let mut pending = PendingLogits::<B::InnerBackend, ()>::new(usize::MAX, Duration::MAX);
    for _ in 0..args.warmup {
        run(&mut trainer, &mut pending);
    }
    let _ = pending.take();
    trainer.settle();
    let mut m = Measured {
        first,
        last: 0,
        blocks: Vec::new(),
        step_waits: Vec::new(),
        read_waits: Vec::new(),
        skipped: 0,
        seconds_per_step: 0.0,
    };
    let mut seconds = 0.0;
    for _ in 0..2 {
        let start = marker.place(device);
        let t = Instant::now();
        let waits = host_wait::count();
        let skipped_before = trainer.scaler().skipped_steps();
        for _ in 0..args.steps {
            run(&mut trainer, &mut pending);
        }
        m.step_waits.push(host_wait::count() - waits);
        let steps_end = marker.place(device);
        seconds += t.elapsed().as_secs_f64();
        let waits = host_wait::count();
        let _ = pending.take();
        // What the device decided (f16 overflow skips), read with the logits as the trainer does.
        m.skipped += (trainer.settle().skipped - skipped_before) as usize;
        m.read_waits.push(host_wait::count() - waits);
        m.blocks.push((start, steps_end));
    }
    m.last = marker.place(device);
    m.seconds_per_step = seconds / (2 * args.steps) as f64;
    m
}

/// Where CubeCL's log goes, and whether it is removed at the end.
struct LogFile {
    path: PathBuf,
    temporary: bool,
}

impl Drop for LogFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub(crate) fn run<B: AutodiffBackend>(args: StepProfileArgs, rt: &Runtime<B>) -> anyhow::Result<()> {
    let mut configs = Vec::new();
    for choice in &args.arch {
        configs.push((choice, cut(choice, args.hidden, args.layers)?));
    }
    for &max_len in &args.max_len {
        for (choice, c) in &configs {
            if max_len < bertlab_run::MIN_MAX_LEN || max_len > c.max_position_embeddings {
                let (least, most) = (bertlab_run::MIN_MAX_LEN, c.max_position_embeddings);
                bail!(UsageError(format!(
                    "--max-len {max_len}: {} takes {least} to {most} tokens",
                    choice.name
                )));
            }
        }
    }
    // CubeCL's logs must be on before the device is made (its configuration is read once).
    let log = match rt.kernel_log {
        Some(enable) => {
            let (path, temporary) = match &args.kernel_log {
                Some(p) => (p.clone(), false),
                None => (
                    std::env::temp_dir().join(format!("bertlab-step-profile-{}.log", std::process::id())),
                    true,
                ),
            };
            // CubeCL appends: start from an empty file.
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("{}: cannot replace", path.display()))
                }
                _ => {}
            }
            let detail = if args.kernel_times { LaunchDetail::Durations } else { LaunchDetail::Names };
            let setup = enable(&path, detail)?;
            Some((LogFile { path, temporary }, setup))
        }
        None => None,
    };
    let device = (rt.device)(&args.device.name())?;
    bertlab_train::device_fault::install_panic_hook();
    let mut marker = Marker::<B::InnerBackend>::new(&device);
    for (choice, config) in &configs {
        for &precision in &args.precision {
            let mut record = json!({
                "bench": "step-profile", "backend": rt.name, "build": rt.build_label(), "model": choice.name,
                "arch": config.architecture.model_type(), "precision": precision.as_str(),
                "layers": config.num_hidden_layers, "hidden": config.hidden_size,
                "heads": config.num_attention_heads, "intermediate": config.intermediate_size,
                "commit": bertlab_run::record::git_commit(),
            });
            if let Err(e) = check_precision::<B::InnerBackend>(&device, precision) {
                record["unsupported"] = json!(true);
                record["error"] = json!(e.to_string());
                emit(record);
                continue;
            }
            for &max_len in &args.max_len {
                let batch = args.batch.at(max_len);
                let mut record = record.clone();
                record["batch"] = json!(batch);
                record["max_len"] = json!(max_len);
                let faults = FaultWatch::start();
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    measure::<B>(config, batch, max_len, precision, &args, &mut marker, &device)
                }));
                let fault = faults.fault().map(|f| f.message);
                match (outcome, fault) {
                    (Ok(m), None) => {
                        let counts = match &log {
                            Some((file, _)) => Some(read_log(&file.path, marker.placed)?),
                            None => None,
                        };
                        fill(&mut record, &m, counts.as_deref(), &args, log.as_ref().map(|(_, s)| s));
                    }
                    (outcome, fault) => {
                        let text = fault.unwrap_or_else(|| match outcome {
                            Err(panic) => panic_text(&*panic),
                            Ok(_) => unreachable!("a fault or a panic"),
                        });
                        let line: String = text.lines().next().unwrap_or("").chars().take(300).collect();
                        record["error"] = json!(line);
                        emit(record);
                        // The markers after a failure may be missing: count nothing more.
                        bail!("{} at {batch} × {max_len}, {}: {line}", choice.name, precision.as_str());
                    }
                }
                emit(record);
                B::InnerBackend::memory_cleanup(&device);
            }
        }
    }
    drop(log);
    Ok(())
}

/// The result fields of one configuration; `counts` is `None` in a build without CubeCL.
fn fill(
    record: &mut Value,
    m: &Measured,
    counts: Option<&[Segment]>,
    args: &StepProfileArgs,
    setup: Option<&crate::KernelLogSetup>,
) {
    let n = args.steps as f64;
    let per_step = |x: u64| round(x as f64 / n, 3);
    let fields = json!({
        "warmup_steps": args.warmup, "steps_measured": 2 * args.steps, "blocks": 2,
        "host_waits_per_step": round(m.step_waits.iter().sum::<u64>() as f64 / (2.0 * n), 3),
        "host_waits_per_step_blocks": m.step_waits.iter().map(|&w| per_step(w)).collect::<Vec<_>>(),
        "host_waits_counted_by": "bertlab_models::host_wait (CubeCL logs no read-backs or syncs)",
        "logits_read": {"batches": args.steps, "host_waits": m.read_waits.iter().max()},
        "skipped_steps": m.skipped, "seconds_per_step": round(m.seconds_per_step, 4),
    });
    for (k, v) in fields.as_object().expect("an object") {
        record[k] = v.clone();
    }
    let Some(segs) = counts else {
        record["launches_per_step"] = Value::Null;
        record["kernels_compiled"] = Value::Null;
        record["launches_counted_by"] =
            json!("not applicable: this build runs no CubeCL kernels (no GPU launches to count)");
        if args.kernel_times {
            record["device_ms_per_step"] = Value::Null;
        }
        return;
    };
    let block: Vec<u64> =
        m.blocks.iter().map(|&(start, end)| (start + 1..=end).map(|i| segs[i].total()).sum()).collect();
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for &(start, end) in &m.blocks {
        for seg in &segs[start + 1..=end] {
            for (kind, c) in &seg.launches {
                *by_kind.entry(kind).or_default() += c;
            }
        }
    }
    let mut kinds: Vec<(&str, u64)> = by_kind.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kinds: serde_json::Map<String, Value> =
        kinds.into_iter().map(|(k, c)| (k.to_string(), json!(round(c as f64 / (2.0 * n), 2)))).collect();
    let compiled: u64 = segs[m.first + 1..=m.last].iter().map(|s| s.compiled).sum();
    let compiled_measured: u64 =
        m.blocks.iter().flat_map(|&(s, e)| &segs[s + 1..=e]).map(|s| s.compiled).sum();
    let read_launches: Vec<u64> = m.blocks.iter().map(|&(_, end)| segs[end + 1].total()).collect();
    let fields = json!({
        "launches_per_step": round(block.iter().sum::<u64>() as f64 / (2.0 * n), 3),
        "launches_per_step_blocks": block.iter().map(|&b| per_step(b)).collect::<Vec<_>>(),
        "launches_per_step_by_kernel": kinds,
        "launches_counted_by": "CubeCL's profiling log (level minimal: one line per launch)",
        "kernels_compiled": compiled,
        "kernels_compiled_in_measured_steps": compiled_measured,
        "kernel_cache": setup.and_then(|s| s.kernel_cache.as_ref()).map(|p| p.display().to_string()),
    });
    for (k, v) in fields.as_object().expect("an object") {
        record[k] = v.clone();
    }
    record["logits_read"]["launches"] = json!(read_launches.iter().max());
    if args.kernel_times {
        kernel_times(record, m, segs, n);
    }
}

/// The `--kernel-times` fields: device milliseconds per step, in all, per block and per
/// kernel kind.
fn kernel_times(record: &mut Value, m: &Measured, segs: &[Segment], steps_per_block: f64) {
    let mut by_kind: BTreeMap<&str, f64> = BTreeMap::new();
    let mut blocks = Vec::new();
    for &(start, end) in &m.blocks {
        let mut block = 0.0;
        for seg in &segs[start + 1..=end] {
            for (kind, d) in &seg.durations {
                *by_kind.entry(kind).or_default() += d;
                block += d;
            }
        }
        blocks.push(block);
    }
    let steps = steps_per_block * blocks.len() as f64;
    let kinds: serde_json::Map<String, Value> =
        by_kind.into_iter().map(|(k, d)| (k.to_string(), json!(round(1e3 * d / steps, 4)))).collect();
    record["kernel_times"] = json!(true);
    record["device_ms_per_step"] = json!(round(1e3 * blocks.iter().sum::<f64>() / steps, 4));
    record["device_ms_per_step_blocks"] =
        json!(blocks.iter().map(|b| round(1e3 * b / steps_per_block, 4)).collect::<Vec<_>>());
    record["device_ms_per_step_by_kernel"] = json!(kinds);
    record["device_ms_timed_by"] = json!(
        "CubeCL's profiler (log level basic): each kernel waited for and timed alone; \
         seconds_per_step here includes those waits"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_kinds_keep_two_parts_without_the_runtime() {
        assert_eq!(kernel_kind("ReduceKernel | TensorArgs | WgpuRuntime"), "ReduceKernel | TensorArgs");
        assert_eq!(kernel_kind("ElemwiseFuse | WgpuRuntime"), "ElemwiseFuse");
        assert_eq!(kernel_kind("PrngKernel | BernoulliFamily | CudaRuntime"), "PrngKernel | BernoulliFamily");
        assert_eq!(
            kernel_kind("MatmulEntry | FusedMatmulArgs | DynamicScalar | __Lhs"),
            "MatmulEntry | FusedMatmulArgs"
        );
    }

    #[test]
    fn the_log_is_split_at_the_markers() {
        let log = "[Compiling kernel] cross\nExecuting CrossKernel | WgpuRuntime\n\
                   [Compiling kernel] a\nExecuting ElemwiseFuse | WgpuRuntime\nExecuting ElemwiseFuse | WgpuRuntime\n\
                   Executing CopyKernel | WgpuRuntime\nExecuting CrossKernel | WgpuRuntime\n";
        assert!(segments(log, 3).is_none(), "two markers so far");
        let s = segments(log, 2).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].total(), s[0].compiled), (0, 1));
        assert_eq!(s[1].compiled, 1);
        assert_eq!(s[1].launches["ElemwiseFuse"], 2);
        assert_eq!(s[1].total(), 3);
        assert_eq!(s[2], Segment::default());
    }

    #[test]
    fn durations_are_read_as_rust_prints_them() {
        // As CubeCL writes them: `{:<10?}`.
        for nanos in [0u64, 812, 12_500, 999_999, 1_250_000, 2_000_000_000, 2_000_001_000] {
            let d = Duration::from_nanos(nanos);
            let text = format!("{d:<10?}");
            let read = parse_duration(&text).unwrap_or_else(|| panic!("{text:?} not read"));
            assert!((read - d.as_secs_f64()).abs() <= 1e-12 * (1.0 + d.as_secs_f64()), "{text:?}: {read}");
        }
        assert_eq!(parse_duration("12.5µs"), Some(12.5 * 1e-6));
        for bad in ["", "ms", "1.5", "NaNms", "infs", "1.5 parsecs"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timed_launches_are_split_and_summed() {
        let log = "| 3µs        | CrossKernel | WgpuRuntime\n[Compiling kernel] a\n\
                   | 1.5ms      | ElemwiseFuse | WgpuRuntime\n| 500µs      | ElemwiseFuse | WgpuRuntime\n\
                   | 2ms        | MatmulEntry | TensorArgs | WgpuRuntime\n\
                   | 4µs        | CrossKernel | WgpuRuntime\n";
        let s = segments(log, 2).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].launches["ElemwiseFuse"], 2);
        assert_eq!(s[1].total(), 3);
        assert!((s[1].durations["ElemwiseFuse"] - 2.0e-3).abs() < 1e-12);
        assert!((s[1].durations["MatmulEntry | TensorArgs"] - 2.0e-3).abs() < 1e-12);
        assert!(s[2].durations.is_empty());
        // A launch line whose duration does not parse is not a launch.
        assert_eq!(launch_line("| soon | ElemwiseFuse"), None);
        assert_eq!(launch_line("Executing ElemwiseFuse"), Some(("ElemwiseFuse", None)));
    }

    #[test]
    fn kernel_times_are_per_step_and_per_kind() {
        let log = "| 1µs | CrossKernel\n| 3ms | MatmulEntry | X\n| 1ms | ElemwiseFuse\n| 1µs | CrossKernel\n\
                   | 1µs | CrossKernel\n| 5ms | MatmulEntry | X\n| 1ms | ElemwiseFuse\n| 1µs | CrossKernel\n";
        let segs = segments(log, 4).unwrap();
        let m = Measured {
            first: 0,
            last: 3,
            blocks: vec![(0, 1), (2, 3)],
            step_waits: vec![0, 0],
            read_waits: vec![0, 0],
            skipped: 0,
            seconds_per_step: 0.0,
        };
        let mut record = json!({});
        kernel_times(&mut record, &m, &segs, 2.0);
        // Blocks of 2 steps: 4 ms and 6 ms of kernels, 2.5 ms a step in all.
        assert_eq!(record["device_ms_per_step"], json!(2.5));
        assert_eq!(record["device_ms_per_step_blocks"], json!([2.0, 3.0]));
        assert_eq!(record["device_ms_per_step_by_kernel"].as_object().unwrap().len(), 2);
        assert_eq!(record["device_ms_per_step_by_kernel"]["MatmulEntry | X"], json!(2.0));
        assert_eq!(record["device_ms_per_step_by_kernel"]["ElemwiseFuse"], json!(0.5));
    }

    #[test]
    fn widths_are_cut_as_the_base_models_are_shaped() {
        let d: ModelChoice = "distilbert".parse().unwrap();
        let c = cut(&d, Some(128), Some(2)).unwrap();
        assert_eq!(
            (c.hidden_size, c.num_attention_heads, c.intermediate_size, c.num_hidden_layers),
            (128, 2, 512, 2)
        );
        let c = cut(&d, Some(32), None).unwrap();
        assert_eq!((c.num_attention_heads, c.num_hidden_layers), (1, 6));
        assert!(cut(&d, Some(100), None).is_err());
        // (`--hidden 0` and `--layers 0` are refused by their value parser: crates/cli/tests/bench.rs.)
    }

    #[test]
    fn random_batches_are_padded_to_the_length() {
        let b = random_batches(4, 16, 30522, 2, 0);
        assert_eq!(b.len(), 2);
        let (arrays, labels) = &b[0];
        assert_eq!((arrays.rows, arrays.len, labels.len()), (4, 16, 4));
        let real: i64 = arrays.attention_mask.iter().sum();
        assert!((32..=64).contains(&real), "{real}");
        // Every length from half to all of the row, and no id past the vocabulary.
        let many = random_batches(64, 16, 1200, 4, 1);
        let lengths: std::collections::BTreeSet<i64> =
            many.iter().flat_map(|(a, _)| a.attention_mask.chunks(16).map(|r| r.iter().sum())).collect();
        assert_eq!(lengths, (8..=16).collect());
        assert!(many.iter().flat_map(|(a, _)| &a.input_ids).all(|&id| id < 1200));
        assert!(arrays.input_ids.iter().zip(&arrays.attention_mask).all(|(&id, &m)| (m == 0) == (id == 0)));
    }
}
