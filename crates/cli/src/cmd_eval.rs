//! `bertlab eval`: metrics of a fine-tuned model (e.g. a run's `best/`) on a split of a dataset.

use anyhow::Context;
use bertlab_data::{DataOptions, DatasetSource, RunSplits};
use bertlab_run::{align_labels, DataSelection, Inference, InferenceSettings};
use bertlab_train::predict::{metrics_from_logits, predict_logits};
use bertlab_train::{EvalSettings, Padding};
use clap::{Args, ValueEnum};

use crate::fine_tuned::{
    check_finite_logits, load_fine_tuned, open_device, recorded_run, resolve_inference, FineTuned,
};

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

/// `bertlab eval …`: every setting not given is the run's (when --model is a run's `best/`,
/// from `<model>/../record.json`), else `bertlab train`'s default.
#[derive(Args)]
pub struct EvalArgs {
    /// Fine-tuned model directory (config.json, model.safetensors, tokenizer files), e.g. runs/x/best.
    #[arg(long, value_parser = bertlab_run::model_arg)]
    model: String,
    /// Rows to evaluate on.
    #[arg(long, value_enum, default_value_t = EvalSplit::Test)]
    split: EvalSplit,
    #[command(flatten)]
    data: DataSelection,
    #[command(flatten)]
    inference: InferenceSettings,
    /// Print the metrics as JSON.
    #[arg(long)]
    json: bool,
}

/// Run `bertlab eval`.
pub fn run(args: EvalArgs, global: &crate::Global) -> anyhow::Result<()> {
    let hub = global.hub();
    let run = recorded_run(&args.model)?;
    let data = args.data.resolve(run.as_ref()).map_err(crate::invalid_flag)?;
    let (subset, seed, split_mode) = (data.subset, data.seed, data.splits);
    let data_options = DataOptions::of_spec(&data);

    let device = open_device(&args.inference, run.as_ref())?;
    let FineTuned { model, config, tokenizer } = load_fine_tuned(&args.model, &hub, &device)?;
    let Inference { max_len, truncation, batch, precision, pad_multiple, .. } =
        resolve_inference(&args.inference, run.as_ref(), &tokenizer)?;

    let source = DatasetSource::parse(&data.source)?;
    let splits =
        source.load_splits(&data_options, &hub).with_context(|| format!("loading --source {source}"))?;
    let (texts, labels, class_names) = match args.split {
        EvalSplit::HubTest => {
            // A run's notebook splits draw its training rows from the dataset's train and test
            // splits joined: scoring the test split whole would score rows it trained on.
            if let (Some(_), Some(rows)) = (&run, splits.rows_of(bertlab_data::Split::Test)) {
                let s = RunSplits::new(&splits, split_mode, subset, seed)?;
                let trained = s.train.iter().chain(&s.val).filter(|r| rows.contains(r)).count();
                if trained > 0 {
                    return Err(crate::UsageError(format!(
                        "--split hub-test: {trained} of its {} rows are among the run's training and validation \
                         rows ({split_mode} splits at subset {subset}, seed {seed}, draw them from the dataset's \
                         train and test splits together); evaluate with --split test, the run's held-out rows",
                        rows.len()
                    ))
                    .into());
                }
            }
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
    let settings =
        EvalSettings { batch, padding: Padding::Bucket, pad_multiple, precision, pad_id: tokenizer.pad_id() };
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
        // The dataset's own test split is whole: no split mode, subset or seed chose its rows.
        let drawn = match args.split {
            EvalSplit::HubTest => String::new(),
            _ => format!(", {split_mode} splits, subset {subset}, seed {seed}"),
        };
        println!(
            "{} on {:?} of {source} ({} rows{drawn}, max_len {max_len}):",
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
