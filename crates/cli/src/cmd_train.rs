//! `bertlab train`: one fine-tuning run from a spec file and/or flags.

use std::path::PathBuf;

use anyhow::Context;
use bertlab_run::format::hms;
use bertlab_run::{RunOverrides, RunSpec};
use bertlab_train::{train, ProgressMode, TrainOptions};
use clap::Args;

use crate::backend::{device, TrainBackend, BACKEND_NAME};

/// `bertlab train …`: every key of the spec file is also a flag (`max_len` → `--max-len`), and a
/// flag overrides the file.
#[derive(Args)]
pub struct TrainArgs {
    /// Run spec (TOML; keys as the flags with `_` for `-`). Unset keys take the notebook's
    /// defaults: distilbert-base-uncased, max_len 128, 3 epochs, batch 32, Adam 1e-5, patience 2.
    #[arg(long)]
    spec: Option<PathBuf>,
    #[command(flatten)]
    settings: RunOverrides,
    /// Print the resolved spec as TOML and exit.
    #[arg(long, conflicts_with = "dry_run")]
    print_spec: bool,
    /// Print the batch shapes the run will feed the model (`rows × length`, training and
    /// evaluation; a GPU build compiles and tunes kernels per shape) and exit.
    #[arg(long)]
    dry_run: bool,
    /// Discard the checkpoint of an interrupted run in --out and start over (by default an
    /// interrupted run resumes after its last finished epoch).
    #[arg(long)]
    fresh: bool,
    /// Replace the completed run in --out (by default a --out holding a record is refused).
    #[arg(long)]
    overwrite: bool,
    /// No progress output (the summary still prints).
    #[arg(long)]
    quiet: bool,
    /// Before the first step, run each batch shape the run will meet once forward and backward, so a
    /// GPU build compiles and tunes its kernels up front (kept in ~/.cache/bertlab for later
    /// runs) instead of inside the first epoch. Default: on in the GPU builds.
    #[arg(long, overrides_with = "no_warmup")]
    warmup: bool,
    /// No warm-up (the default of the CPU build, which compiles no kernels).
    #[arg(long)]
    no_warmup: bool,
    /// Batch shapes (`ROWSxLENGTH`, comma-separated, e.g. 32x128,32x96) whose kernels are
    /// compiled and tuned already, met by an earlier run on this machine: the warm-up skips
    /// them. `cargo xtask` passes the shapes its earlier runs met, so a pipeline warms each once.
    #[arg(long, value_delimiter = ',', value_parser = bertlab_run::shape::parse_batch_shape)]
    warmed_shapes: Vec<[usize; 2]>,
}

impl TrainArgs {
    /// The spec file (or defaults) with the flags applied.
    fn resolve(&self, global: &crate::Global) -> anyhow::Result<RunSpec> {
        let mut s = match &self.spec {
            Some(path) => {
                RunSpec::from_toml_file(path).with_context(|| format!("--spec {}", path.display()))?
            }
            None => RunSpec::default(),
        };
        self.settings.apply_to(&mut s);
        s.offline |= global.offline;
        if let Err(e) = s.validate() {
            // A bad value from the file names the file; one from a flag names the flag. Either
            // is a setting whose value cannot be used: a usage error (exit 2).
            match (&self.spec, self.settings.keys().contains(&e.key)) {
                (Some(path), false) => {
                    return Err(crate::UsageError(format!("{}: {e}", path.display())).into())
                }
                _ => return Err(crate::invalid_flag(e)),
            }
        }
        Ok(s)
    }
}

/// Run `bertlab train`.
pub fn run(args: TrainArgs, global: &crate::Global) -> anyhow::Result<()> {
    let spec = args.resolve(global)?;
    if args.print_spec {
        match spec.to_toml() {
            Ok(toml) => print!("{toml}"),
            Err(e) => return Err(crate::invalid_flag(e)),
        }
        return Ok(());
    }
    if args.dry_run {
        // What the run would stop on at once, checked where no network is needed.
        let checked = bertlab_train::check_local_inputs(&spec)
            .with_context(|| format!("training run {}", spec.out.display()))?;
        let shapes = spec.planned_shapes();
        let text: Vec<String> = shapes.iter().map(|[rows, len]| format!("{rows}×{len}")).collect();
        println!(
            "{}: at most {} batch shapes (rows × length): {} — training batch {}, evaluation batch {}, \
             lengths padded to {}",
            spec.out.display(),
            shapes.len(),
            text.join(" "),
            spec.batch,
            spec.eval_batch_size(),
            match spec.padding {
                bertlab_run::Padding::Fixed => format!("max_len {}", spec.max_len),
                bertlab_run::Padding::Bucket =>
                    format!("multiples of {} up to max_len {}", spec.pad_multiple, spec.max_len),
            }
        );
        let said = |checked: bool, what: &str, value: &str| match checked {
            true => format!("{what} {value} found"),
            false => format!("{what} {value} on the Hub, not looked up"),
        };
        println!(
            "{}: {}; {}",
            spec.out.display(),
            said(checked.source_checked, "data", &spec.source),
            said(checked.model_checked, "model", &spec.model)
        );
        return Ok(());
    }
    let device = device(&spec.device)?;
    // Out-of-memory panics become a one-line error (exit code 3), also those of the backend's
    // device thread, which only this hook sees: don't print their backtraces.
    bertlab_train::device_fault::install_panic_hook();
    let options = TrainOptions {
        // (`train` adds a non-default attention kernel's name, `BERTLAB_ATTENTION`.)
        backend_name: BACKEND_NAME.into(),
        progress: if args.quiet { ProgressMode::Quiet } else { ProgressMode::Auto },
        hub: global.hub(),
        skip_export: false,
        fresh: args.fresh,
        overwrite: args.overwrite,
        warmup: args.warmup || (!args.no_warmup && crate::backend::COMPILES_KERNELS),
        warmed_shapes: args.warmed_shapes,
    };
    let record = train::<TrainBackend>(&spec, &device, &options)
        .with_context(|| format!("training run {}", spec.out.display()))?;
    let test = record.test.as_ref().context("the record has no test metrics")?;
    println!(
        "{}: test accuracy {:.4}, F1 {:.4}, best epoch {}, elapsed {} → {}",
        spec.out.display(),
        test.accuracy,
        test.f1,
        record.best_epoch.map_or("-".into(), |e| e.to_string()),
        hms(record.timings.elapsed_seconds),
        spec.out.join("record.json").display()
    );
    Ok(())
}
