//! `bertlab train`: one fine-tuning run from a spec file and/or flags.

use std::path::PathBuf;

use anyhow::Context;
use bertlab_tokenize::Truncation;
use bertlab_train::{
    hms, train, OptimizerKind, Padding, PrecisionSpec, ProgressMode, RestoreBest, RunSpec, Schedule,
    SpecError, TrainOptions,
};
use clap::Args;

use crate::backend::{device, TrainBackend, BACKEND_NAME};

/// `bertlab train …`: every field of the spec file is also a flag, and a flag overrides the file.
#[derive(Args)]
pub struct TrainArgs {
    /// Run spec (TOML; keys as the flags with `_` for `-`). Unset keys take the notebook's
    /// defaults: distilbert-base-uncased, max_len 128, 3 epochs, batch 32, Adam 1e-5, patience 2.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Model: a Hub id or a local snapshot directory.
    #[arg(long)]
    model: Option<String>,
    /// Data: `hub`, `hub:ORG/NAME[@REV]`, or a directory with plain_text/*.parquet.
    #[arg(long)]
    source: Option<String>,
    /// Fraction of the whole dataset to use, in (0, 1].
    #[arg(long)]
    subset: Option<f64>,
    /// Seed of splits, head initialisation, dropout and batch order.
    #[arg(long)]
    seed: Option<u64>,
    /// Tokens per sequence, [CLS] and [SEP] included.
    #[arg(long)]
    max_len: Option<usize>,
    /// head, tail or head-tail.
    #[arg(long)]
    truncation: Option<Truncation>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Training batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Validation/test batch size.
    #[arg(long)]
    eval_batch: Option<usize>,
    /// Maximum epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// adam (Keras: eps 1e-7, no decay) or adamw (HF: eps 1e-8, decay 0.01 except biases/LayerNorm).
    #[arg(long)]
    optimizer: Option<OptimizerKind>,
    /// constant or linear (with --warmup-ratio).
    #[arg(long)]
    schedule: Option<Schedule>,
    /// Fraction of steps spent warming up (linear schedule).
    #[arg(long)]
    warmup_ratio: Option<f64>,
    /// Weight decay (default: adam 0, adamw 0.01).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clip gradients to this global L2 norm.
    #[arg(long)]
    grad_clip: Option<f64>,
    /// Micro-batches per optimizer step (effective batch = batch × accum).
    #[arg(long)]
    accum: Option<usize>,
    /// f32, f16 (dynamic loss scaling) or bf16.
    #[arg(long)]
    precision: Option<PrecisionSpec>,
    /// bucket (dynamic padding, default) or fixed (pad to max_len, the notebook).
    #[arg(long)]
    padding: Option<Padding>,
    /// Round bucketed lengths up to a multiple of this.
    #[arg(long)]
    pad_multiple: Option<usize>,
    /// Epochs without val-loss improvement before stopping.
    #[arg(long)]
    patience: Option<usize>,
    /// always (default) or on-stop (Keras: restore only when patience runs out).
    #[arg(long)]
    restore_best: Option<RestoreBest>,
    /// Run directory (record.json, best/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, or cuda / cuda:N in a CUDA build.
    #[arg(long)]
    device: Option<String>,
    /// Token cache directory.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Print the resolved spec as TOML and exit.
    #[arg(long)]
    print_spec: bool,
    /// No progress output (the summary still prints).
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    /// The spec file (or defaults) with the flags applied.
    fn resolve(&self, global: &crate::Global) -> anyhow::Result<RunSpec> {
        let mut s = match &self.spec {
            Some(path) => RunSpec::from_toml_file(path)?,
            None => RunSpec::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field {
                    s.$field = v.clone();
                }
            )*};
        }
        set!(model, source, subset, seed, max_len, truncation, lr, batch, eval_batch, epochs, optimizer);
        set!(
            schedule,
            warmup_ratio,
            accum,
            precision,
            padding,
            pad_multiple,
            patience,
            restore_best,
            out,
            device
        );
        if self.weight_decay.is_some() {
            s.weight_decay = self.weight_decay;
        }
        if self.grad_clip.is_some() {
            s.grad_clip = self.grad_clip;
        }
        if self.cache_dir.is_some() {
            s.cache_dir = self.cache_dir.clone();
        }
        s.offline |= global.offline;
        if let Err(SpecError::Invalid { field, value, why }) = s.validate() {
            anyhow::bail!("--{} {value}: {why}", field.replace('_', "-"));
        }
        Ok(s)
    }
}

/// Run `bertlab train`.
pub fn run(args: TrainArgs, global: &crate::Global) -> anyhow::Result<()> {
    let spec = args.resolve(global)?;
    if args.print_spec {
        print!("{}", spec.to_toml());
        return Ok(());
    }
    let device = device(&spec.device)?;
    quiet_out_of_memory_panics();
    let options = TrainOptions {
        backend_name: BACKEND_NAME.into(),
        progress: if args.quiet { ProgressMode::Quiet } else { ProgressMode::Auto },
        hub: global.hub(),
        skip_export: false,
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

/// The backend reports CUDA out-of-memory by panicking with a long message and backtrace; the
/// trainer turns that panic into a one-line error, so don't let the default hook print it too.
fn quiet_out_of_memory_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if !bertlab_train::is_out_of_memory(&message) {
            default_hook(info);
        }
    }));
}
