//! `bertlab eval`: metrics of a fine-tuned model (e.g. a run's `best/`) on a split of a dataset.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bertlab_data::{DataOptions, DatasetSource, RunSplits};
use bertlab_models::Precision;
use bertlab_run::{align_labels, SplitMode};
use bertlab_tokenize::Truncation;
use bertlab_train::predict::{metrics_from_logits, predict_logits};
use bertlab_train::{EvalSettings, Padding, RunRecord};
use clap::{Args, ValueEnum};

use crate::backend::device;
use crate::fine_tuned::{check_finite_logits, load_fine_tuned, FineTuned};

/// Which rows to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EvalSplit {
    /// The run's test split at --splits/--subset/--seed (notebook: 20 % of the pool; given:
    /// the dataset's test split).
    Test,
    /// The run's validation split (notebook: 10 % of the pool).
    Val,
    /// The run's training split.
    Train,
    /// The dataset's own `test` split, whole (25,000 IMDB reviews).
    #[value(alias = "dataset-test")]
    HubTest,
}

/// `bertlab eval …`
#[derive(Args)]
pub struct EvalArgs {
    /// Fine-tuned model directory (config.json, model.safetensors, tokenizer files), e.g. runs/x/best.
    #[arg(long)]
    model: String,
    /// Data: `hub` (IMDB), `hub:ORG/NAME[@REV]`, a directory of data files, or one .parquet,
    /// .csv, .tsv or .jsonl file (default: the run's, from `<model>/../record.json`, else `hub`).
    #[arg(long)]
    source: Option<String>,
    /// The column holding the texts (default: the run's, else `text`).
    #[arg(long)]
    text_column: Option<String>,
    /// The column holding the labels, class ids or names (default: the run's, else `label`).
    #[arg(long)]
    label_column: Option<String>,
    /// The dataset's config, where it has several (default: the run's).
    #[arg(long)]
    config: Option<String>,
    /// notebook (all rows joined, the notebook's recipe) or given (the dataset's own splits)
    /// (default: the run's, else notebook).
    #[arg(long)]
    splits: Option<SplitMode>,
    /// Rows to evaluate on.
    #[arg(long, value_enum, default_value_t = EvalSplit::Test)]
    split: EvalSplit,
    /// Subset fraction of the notebook split (default: the run's, from `<model>/../record.json`, else 1.0).
    #[arg(long)]
    subset: Option<f64>,
    /// Seed of the notebook split (default: the run's, else 42).
    #[arg(long)]
    seed: Option<u64>,
    /// Tokens per review (default: the run's, else 128).
    #[arg(long)]
    max_len: Option<usize>,
    /// head, tail or head-tail (default: the run's, else head).
    #[arg(long)]
    truncation: Option<Truncation>,
    /// Rows per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// f32, f16 or bf16.
    #[arg(long, default_value_t = Precision::F32)]
    precision: Precision,
    /// The build's device by default (the CPU, or GPU 0 in a CUDA build); cuda:N picks a GPU.
    #[arg(long, default_value = "default")]
    device: String,
    /// Print the metrics as JSON.
    #[arg(long)]
    json: bool,
}

/// The record of the run that exported `model_dir`, when it is a run's `best/`.
fn run_record(model_dir: &Path) -> Option<RunRecord> {
    let path: PathBuf = model_dir.parent()?.join("record.json");
    RunRecord::read(&path).ok()
}

/// Run `bertlab eval`.
pub fn run(args: EvalArgs, global: &crate::Global) -> anyhow::Result<()> {
    let hub = global.hub();
    let record = run_record(Path::new(&args.model));
    let from_run = record.as_ref().map(|r| &r.spec);
    let subset = args.subset.or(from_run.map(|s| s.subset)).unwrap_or(1.0);
    let seed = args.seed.or(from_run.map(|s| s.seed)).unwrap_or(42);
    let max_len = args.max_len.or(from_run.map(|s| s.max_len)).unwrap_or(128);
    let truncation = args.truncation.or(from_run.map(|s| s.truncation)).unwrap_or_default();
    let split_mode = args.splits.or(from_run.map(|s| s.splits)).unwrap_or_default();
    let source_spec =
        args.source.clone().or(from_run.map(|s| s.source.clone())).unwrap_or_else(|| "hub".into());
    let data_options = DataOptions {
        text_column: args
            .text_column
            .clone()
            .or(from_run.map(|s| s.text_column.clone()))
            .unwrap_or_else(|| "text".into()),
        label_column: args
            .label_column
            .clone()
            .or(from_run.map(|s| s.label_column.clone()))
            .unwrap_or_else(|| "label".into()),
        config: args.config.clone().or(from_run.and_then(|s| s.dataset_config.clone())),
    };
    if !(subset > 0.0 && subset <= 1.0) {
        crate::usage!("--subset {subset}: must be a fraction in (0, 1]");
    }
    if args.batch == 0 {
        crate::usage!("--batch 0: must be at least 1");
    }
    if !(3..=4096).contains(&max_len) {
        crate::usage!("--max-len {max_len}: must be in 3..=4096");
    }

    let device = device(&args.device)?;
    let FineTuned { model, config, tokenizer } = load_fine_tuned(&args.model, &hub, &device)?;

    let source = DatasetSource::parse(&source_spec)?;
    let splits =
        source.load_splits(&data_options, &hub).with_context(|| format!("loading --source {source}"))?;
    let (texts, labels, class_names) = match args.split {
        EvalSplit::HubTest => {
            let Some(data) = splits.test else {
                anyhow::bail!(
                    "--source {source} has no test split: evaluate with --split test, val or train"
                );
            };
            (data.texts, data.labels, data.class_names)
        }
        split => {
            let s = RunSplits::new(&splits, split_mode, subset, seed).with_context(|| {
                format!("splitting at --splits {split_mode} --subset {subset} --seed {seed}")
            })?;
            let data = splits.into_joined();
            let rows = match split {
                EvalSplit::Train => &s.train,
                EvalSplit::Val => &s.val,
                _ => &s.test,
            };
            let picked = data.select(rows);
            (picked.texts, picked.labels, picked.class_names)
        }
    };
    // Metrics against the model's own outputs: the data's labels matched to them by name.
    let alignment = align_labels(&config.labels, &class_names)
        .map_err(|e| anyhow::anyhow!("--model {} on --source {source}: {e}", args.model))?;
    if let Some(note) = alignment.note(&config.labels, &class_names) {
        eprintln!("note: {note}");
    }
    let labels: Vec<u32> = labels.iter().map(|&l| alignment.model_label(l)).collect();
    let encoded = tokenizer.encode_all(&texts, max_len, truncation, !args.json)?;
    let settings = EvalSettings {
        batch: args.batch,
        padding: Padding::Bucket,
        pad_multiple: 8,
        precision: args.precision,
        pad_id: tokenizer.pad_id(),
    };
    let started = std::time::Instant::now();
    // (a failed allocation on the GPU's device thread would leave garbage logits)
    let logits =
        bertlab_train::device_fault::watched(|| predict_logits(&model, &encoded, &settings, &device))?;
    check_finite_logits(&logits, config.num_labels(), &args.model)?;
    let metrics = metrics_from_logits(&logits, &labels, config.num_labels());
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&metrics)?);
    } else {
        println!(
            "{} on {:?} of {source} ({} rows, {split_mode} splits, max_len {max_len}, subset {subset}, seed {seed}):",
            args.model, args.split, metrics.n
        );
        let loss = metrics.loss.map_or("n/a".into(), |l| format!("{l:.4}"));
        if config.num_labels() == 2 {
            println!(
                "Accuracy: {:.4}   F1: {:.4}   Precision: {:.4}   Recall: {:.4}   Loss: {loss}   (positive class {})",
                metrics.accuracy, metrics.f1, metrics.precision, metrics.recall, config.labels[1]
            );
        } else {
            println!(
                "Accuracy: {:.4}   macro F1: {:.4}   weighted F1: {:.4}   Loss: {loss}",
                metrics.accuracy, metrics.macro_f1, metrics.weighted_f1
            );
        }
        println!("{:<20} {:>9} {:>9} {:>9} {:>8}", "class", "precision", "recall", "F1", "support");
        for (name, c) in config.labels.iter().zip(&metrics.per_class) {
            println!("{name:<20} {:>9.4} {:>9.4} {:>9.4} {:>8}", c.precision, c.recall, c.f1, c.support);
        }
        println!("Confusion matrix (rows true, columns predicted; {}):", config.labels.join(", "));
        for row in &metrics.confusion {
            println!("  {row:?}");
        }
        println!("{:.1} texts/s", metrics.n as f64 / seconds);
    }
    Ok(())
}
