//! `bench numerics`: AdamW loss curves of one random initialisation in f32, f16 and bf16 on
//! fixed batches, compared step by step.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use bertlab_models::{export_classifier, Precision};
use bertlab_run::{DeviceSetting, UsageError};
use bertlab_tokenize::check_max_len;
use bertlab_train::metrics::cross_entropy_rows;
use bertlab_train::optim::AdamSettings;
use bertlab_train::predict::logits_to_vec;
use bertlab_train::{check_precision, LrSchedule, Schedule, TrainStep};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use serde_json::json;

use crate::flags::{non_negative, positive};
use crate::ids::{IdsFile, PlanBatch};
use crate::models::{random_classifier, ModelChoice};
use crate::numerics_inspect as inspect;
use crate::{emit, round, sync, Runtime};

#[derive(Args)]
pub(crate) struct NumericsArgs {
    /// distilbert (DistilBERT-base), bert (BERT-base), or the path of a config.json.
    #[arg(long, default_value = "distilbert")]
    arch: ModelChoice,
    /// The tokenized IMDB sample (`bertlab bench make-ids`).
    #[arg(long)]
    ids_file: PathBuf,
    /// Optimizer steps per precision.
    #[arg(long, default_value_t = 200, value_parser = bertlab_run::count_arg)]
    steps: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 16, value_parser = bertlab_run::count_arg)]
    batch: usize,
    /// Tokens per row (fixed padding).
    #[arg(long, default_value_t = 128, value_parser = bertlab_run::count_arg)]
    max_len: usize,
    /// Distinct batches, cycled through: the first batch × batches rows of the ids file.
    #[arg(long, default_value_t = 32, value_parser = bertlab_run::count_arg)]
    batches: usize,
    /// AdamW learning rate (ε 1e-8, weight decay 0.01 except biases and LayerNorm).
    #[arg(long, default_value_t = 5e-5, value_parser = positive)]
    lr: f64,
    /// Precisions; f32 is the reference and must be among them.
    #[arg(long, value_delimiter = ',', default_value = "f32,f16,bf16")]
    precision: Vec<Precision>,
    /// Leading steps where f16 overflow skips are expected while the loss scale settles.
    #[arg(long, default_value_t = 10)]
    grace_steps: usize,
    /// Largest gap allowed between a half-precision loss curve and f32's, both smoothed over
    /// 10 steps (single steps are reported too).
    #[arg(long, default_value_t = 0.05, value_parser = non_negative)]
    gap_tolerance: f64,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop early (all precisions at the same step) once this many seconds have passed; the
    /// summary then covers the steps done.
    #[arg(long, value_parser = positive)]
    max_seconds: Option<f64>,
    #[command(flatten)]
    device: DeviceSetting,
    /// Before these steps, compare each half precision's gradient with f32's at the f32 run's
    /// weights, per parameter, and each run's Adam moments with the f32 run's
    /// (`numerics-inspect` lines).
    #[arg(long, value_delimiter = ',')]
    inspect_at: Vec<usize>,
    /// Write the initial model to DIR/init and, with `--inspect-at N`, the f32 run's weights
    /// before step N to DIR/step-N, as transformers snapshots (`scripts/torch_numerics.py`
    /// replays them in PyTorch).
    #[arg(long)]
    export_dir: Option<PathBuf>,
    /// Also train a second f32 run on the same batches with each batch's rows in reverse order:
    /// the same mathematics, other rounding. Its gap to f32 (`f32-rows-reversed`) is how far
    /// rounding alone moves the curve on these weights, the floor any precision's gap is read
    /// against; it is reported, not judged.
    #[arg(long)]
    control: bool,
}

/// `--inspect-at`: the per-parameter comparison before `step`, and the f32 weights exported.
fn inspect_step<B: AutodiffBackend>(
    args: &NumericsArgs,
    step: usize,
    runs: &[NumericsRun<B>],
    arrays: &bertlab_train::BatchArrays,
    labels: &[u32],
    config: &bertlab_models::ModelConfig,
    device: &B::Device,
) -> anyhow::Result<()> {
    let reference =
        runs.iter().find(|r| r.precision == Precision::F32 && !r.reverse_rows).context("no f32 run")?;
    let model = reference.trainer.model();
    if let Some(dir) = &args.export_dir {
        let out = dir.join(format!("step-{step}"));
        export_classifier(model, config, &out, None)
            .with_context(|| format!("{}: cannot export the f32 weights", out.display()))?;
    }
    let reference_grads = inspect::gradient(model, arrays, labels, Precision::F32, device);
    let reference_moments = reference.trainer.optimizer().moments(model);
    for run in runs.iter().filter(|r| r.precision != Precision::F32) {
        let grads = inspect::gradient(model, arrays, labels, run.precision, device);
        let moments = run.trainer.optimizer().moments(run.trainer.model());
        inspect::inspect(
            step,
            run.precision,
            &reference_grads,
            &grads,
            &reference_moments,
            &moments,
            reference.trainer.optimizer().settings(),
            &args.arch.name,
        );
        // The half run's own weights: is its forward (the loss it reports) or its gradient
        // off there, or has it just gone elsewhere?
        let own = run.trainer.model();
        let loss = |p| inspect::loss(own, arrays, labels, p, device, config.num_labels());
        let (own32, own_half) = (
            inspect::gradient(own, arrays, labels, Precision::F32, device),
            inspect::gradient(own, arrays, labels, run.precision, device),
        );
        inspect::own_weights(
            step,
            run.precision,
            loss(Precision::F32),
            loss(run.precision),
            &own32,
            &own_half,
        );
        if let Some(dir) = &args.export_dir {
            let out = dir.join(format!("step-{step}-{}", run.precision.as_str()));
            export_classifier(own, config, &out, None)
                .with_context(|| format!("{}: cannot export the {} weights", out.display(), run.precision))?;
        }
    }
    Ok(())
}

/// Mean |gap| to the reference over the first and the second half of the steps.
fn mean_abs_gap_by_half(losses: &[f64], reference: &[f64]) -> [f64; 2] {
    let gaps: Vec<f64> = losses.iter().zip(reference).map(|(a, b)| (a - b).abs()).collect();
    let half = gaps.len() / 2;
    let mean = |xs: &[f64]| round(xs.iter().sum::<f64>() / xs.len().max(1) as f64, 6);
    [mean(&gaps[..half]), mean(&gaps[half..])]
}

/// Moving average over `window` steps (shorter at the start).
pub(crate) fn smooth(xs: &[f64], window: usize) -> Vec<f64> {
    (0..xs.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window);
            xs[from..=i].iter().sum::<f64>() / (i + 1 - from) as f64
        })
        .collect()
}

struct Curve {
    losses: Vec<f64>,
    skipped: Vec<usize>,
}

/// The label of the `--control` run.
const CONTROL: &str = "f32-rows-reversed";

/// One precision's training in `bench numerics`.
struct NumericsRun<B: AutodiffBackend> {
    /// The precision's name, or [`CONTROL`].
    label: &'static str,
    /// Feed each batch's rows in reverse order (the control).
    reverse_rows: bool,
    precision: Precision,
    trainer: TrainStep<B>,
    curve: Curve,
    seconds: f64,
}

/// Steps between two progress lines on standard error.
const PROGRESS_EVERY: usize = 10;

pub(crate) fn run<B: AutodiffBackend>(args: NumericsArgs, rt: &Runtime<B>) -> anyhow::Result<()> {
    if !args.precision.contains(&Precision::F32) {
        bail!(UsageError("--precision: f32 is the reference curve; include it (e.g. f32,f16,bf16)".into()));
    }
    if let Some((i, p)) = args.precision.iter().enumerate().find(|(i, p)| args.precision[..*i].contains(p)) {
        bail!(UsageError(format!("--precision: {} is listed twice (item {})", p.as_str(), i + 1)));
    }
    if let Some(late) = args.inspect_at.iter().find(|&&step| step >= args.steps) {
        bail!(UsageError(format!(
            "--inspect-at {late}: the run has steps 0 to {} (--steps {})",
            args.steps - 1,
            args.steps
        )));
    }
    let ids = IdsFile::read(&args.ids_file)?;
    ids.check_max_len(args.max_len)?;
    let positions = Some(args.arch.config.max_position_embeddings);
    check_max_len(&args.arch.name, args.max_len, positions, None)?;
    if args.batch * args.batches > ids.ids.len() {
        bail!(
            "--batch {} × --batches {} rows, but the ids file has {}",
            args.batch,
            args.batches,
            ids.ids.len()
        );
    }
    let device = (rt.device)(&args.device.name())?;
    let mut config = args.arch.config.clone();
    // Dropout off: the curves then differ by rounding alone, not by different masks.
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    config.classifier_dropout = 0.0;
    let batches: Vec<PlanBatch> = (0..args.batches)
        .map(|b| PlanBatch { len: args.max_len, rows: (b * args.batch..(b + 1) * args.batch).collect() })
        .collect();
    let model0 = random_classifier::<B>(&config, args.seed, &device);
    if let Some(dir) = &args.export_dir {
        export_classifier(&model0, &config, &dir.join("init"), None)
            .with_context(|| format!("{}: cannot export the initial model", dir.display()))?;
    }
    let schedule = LrSchedule::new(Schedule::Constant, args.lr, args.steps as u64, 0.0);
    let mut runs: Vec<NumericsRun<B>> = Vec::new();
    let mut wanted: Vec<(&'static str, Precision, bool)> =
        args.precision.iter().map(|&p| (p.as_str(), p, false)).collect();
    if args.control {
        wanted.push((CONTROL, Precision::F32, true));
    }
    for (label, precision, reverse_rows) in wanted {
        match check_precision::<B::InnerBackend>(&device, precision) {
            Ok(()) => runs.push(NumericsRun {
                label,
                reverse_rows,
                precision,
                trainer: TrainStep::new(
                    model0.clone(),
                    AdamSettings::hf_adamw(0.01),
                    schedule,
                    None,
                    precision,
                ),
                curve: Curve { losses: Vec::with_capacity(args.steps), skipped: Vec::new() },
                seconds: 0.0,
            }),
            Err(e) => {
                emit(json!({"bench": "numerics", "precision": precision.as_str(), "skipped": e.to_string()}))
            }
        }
    }
    // The precisions advance step by step together, so that a time limit leaves curves of
    // equal length to compare.
    let started = Instant::now();
    let mut steps_done = 0;
    for step in 0..args.steps {
        if args.max_seconds.is_some_and(|limit| started.elapsed().as_secs_f64() > limit) {
            eprintln!("numerics: stopping after {step} of {} steps (--max-seconds)", args.steps);
            break;
        }
        let batch = &batches[step % batches.len()];
        let (arrays, labels) = ids.pack(batch, args.max_len);
        // The control's batch: the same rows in reverse order, packed only when asked for.
        let reversed = args.control.then(|| {
            ids.pack(
                &PlanBatch { len: batch.len, rows: batch.rows.iter().rev().copied().collect() },
                args.max_len,
            )
        });
        if args.inspect_at.contains(&step) {
            inspect_step(&args, step, &runs, &arrays, &labels, &config, &device)?;
        }
        for run in &mut runs {
            let (arrays, labels) = match &reversed {
                Some((arrays, labels)) if run.reverse_rows => (arrays, labels),
                _ => (&arrays, &labels),
            };
            let t = Instant::now();
            let outcome = run.trainer.step(&[(arrays, labels)], &device, None);
            let logits: Vec<f32> = outcome.logits.into_iter().flat_map(logits_to_vec).collect();
            let loss = cross_entropy_rows(&logits, labels, config.num_labels()).iter().sum::<f64>()
                / labels.len() as f64;
            run.curve.losses.push(loss);
            let skipped_before = run.trainer.scaler().skipped_steps();
            if run.trainer.settle().skipped > skipped_before {
                run.curve.skipped.push(step);
            }
            sync::<B>(&device);
            run.seconds += t.elapsed().as_secs_f64();
        }
        steps_done = step + 1;
        // A base-size run takes minutes on a GPU and an hour on a CPU: say that it moves.
        if steps_done % PROGRESS_EVERY == 0 || steps_done == args.steps {
            let losses: Vec<String> = runs
                .iter()
                .map(|r| format!("{} {:.4}", r.label, r.curve.losses.last().copied().unwrap_or(f64::NAN)))
                .collect();
            eprintln!(
                "numerics: step {steps_done}/{} ({:.0} s): {}",
                args.steps,
                started.elapsed().as_secs_f64(),
                losses.join(", ")
            );
        }
    }
    if steps_done == 0 {
        bail!("numerics: no step done (--steps 0, or --max-seconds too short)");
    }
    let mut curves: BTreeMap<&'static str, Curve> = BTreeMap::new();
    for run in runs {
        let n = run.curve.losses.len();
        let tail = &run.curve.losses[n.saturating_sub(10)..];
        emit(json!({
            "bench": "numerics", "model": args.arch.name, "precision": run.label, "seed": args.seed,
            "steps": steps_done, "batch": args.batch, "max_len": args.max_len, "lr": args.lr,
            "seconds": round(run.seconds, 3),
            "seq_per_s": round((steps_done * args.batch) as f64 / run.seconds.max(1e-9), 2),
            "first_loss": run.curve.losses.first(),
            "last10_mean_loss": tail.iter().sum::<f64>() / tail.len().max(1) as f64,
            "skipped_steps": run.curve.skipped, "final_loss_scale": run.trainer.scaler().scale(),
            "losses": run.curve.losses.iter().map(|&l| round(l, 6)).collect::<Vec<_>>(),
        }));
        curves.insert(run.label, run.curve);
    }
    let reference = curves.get("f32").context("the f32 run did not happen")?;
    let smoothed_ref = smooth(&reference.losses, 10);
    let mut gaps = serde_json::Map::new();
    let mut failures = Vec::new();
    for (name, curve) in curves.iter().filter(|(n, _)| **n != "f32") {
        let (mut max_gap, mut at) = (0f64, 0usize);
        for (i, (a, b)) in curve.losses.iter().zip(&reference.losses).enumerate() {
            let gap = if a.is_finite() { (a - b).abs() } else { f64::INFINITY };
            if gap > max_gap {
                (max_gap, at) = (gap, i);
            }
        }
        let smoothed = smooth(&curve.losses, 10);
        let smoothed_gap =
            smoothed.iter().zip(&smoothed_ref).map(|(a, b)| (a - b).abs()).fold(0f64, |m, g| {
                // A non-finite loss is an infinite gap, never one that `max` skips.
                m.max(if g.is_finite() { g } else { f64::INFINITY })
            });
        let late_skips = curve.skipped.iter().filter(|&&s| s >= args.grace_steps).count();
        let pass = smoothed_gap <= args.gap_tolerance && late_skips == 0;
        if !pass && *name != CONTROL {
            failures.push(format!(
                "{name}: smoothed gap {smoothed_gap:.4} (tolerance {}), {late_skips} step(s) skipped after step {}",
                args.gap_tolerance, args.grace_steps
            ));
        }
        gaps.insert(
            name.to_string(),
            json!({
                "max_gap": round(max_gap, 6), "max_gap_step": at, "smoothed_max_gap": round(smoothed_gap, 6),
                "skipped": curve.skipped.len(), "skipped_after_grace": late_skips, "pass": pass,
                "mean_abs_gap_by_half": mean_abs_gap_by_half(&curve.losses, &reference.losses),
                "control": *name == CONTROL,
            }),
        );
    }
    emit(json!({
        "bench": "numerics-summary", "model": args.arch.name, "seed": args.seed, "reference": "f32", "steps": steps_done,
        "steps_asked": args.steps,
        "grace_steps": args.grace_steps, "gap_tolerance": args.gap_tolerance, "precisions": gaps,
        "pass": failures.is_empty(),
    }));
    if !failures.is_empty() {
        bail!("numerics check failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}
