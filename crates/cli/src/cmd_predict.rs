//! `bertlab predict`: the label and its probability for each text, from a fine-tuned model —
//! texts given on the command line, or a file of them (one per line, or a CSV/JSONL column)
//! classified in batches by length, written as JSONL or CSV.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bertlab_data::{TextFormat, TextStream};
use bertlab_run::{Inference, InferenceSettings};
use bertlab_tokenize::EncodedTexts;
use bertlab_train::metrics::{argmax_rows, softmax_rows};
use bertlab_train::{predict_logits, EvalSettings, Padding};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::fine_tuned::{
    check_finite_logits, load_fine_tuned, open_device, recorded_run, resolve_inference, FineTuned,
};

/// How `--file` holds its texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InputFormat {
    /// One text per line (blank lines skipped).
    Lines,
    /// CSV with a header row; the texts are in `--text-column`.
    Csv,
    /// One JSON object per line; the texts are in `--text-column`.
    Jsonl,
}

impl From<InputFormat> for TextFormat {
    fn from(format: InputFormat) -> TextFormat {
        match format {
            InputFormat::Lines => TextFormat::Lines,
            InputFormat::Csv => TextFormat::Csv,
            InputFormat::Jsonl => TextFormat::Jsonl,
        }
    }
}

/// How predictions are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// One JSON object per text: row, label, probability, every class's probability.
    Jsonl,
    /// A header, then one row per text: row, label, probability, one column per class.
    Csv,
}

/// `bertlab predict …`
#[derive(Args)]
pub struct PredictArgs {
    /// Fine-tuned model directory, e.g. runs/x/best.
    #[arg(long, value_parser = bertlab_run::model_arg)]
    model: String,
    /// Texts to classify (or --file).
    #[arg(value_name = "TEXT", required_unless_present = "file", conflicts_with = "file")]
    texts: Vec<String>,
    /// A file of texts to classify: one per line (.txt and others), a CSV (.csv) or JSONL
    /// (.jsonl) column; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// How --file holds its texts (default: from its extension; lines for standard input).
    #[arg(long, value_enum)]
    input_format: Option<InputFormat>,
    /// The column of the texts in a CSV or JSONL --file.
    #[arg(long, default_value = "text", value_parser = bertlab_run::column_arg)]
    text_column: String,
    /// Write the predictions of --file here (atomically) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// jsonl or csv, the predictions of --file (default: from --output's extension, else jsonl).
    #[arg(long, value_enum)]
    format: Option<OutputFormat>,
    #[command(flatten)]
    inference: InferenceSettings,
    /// Print JSON lines for texts given on the command line: {"text", "label", "probability",
    /// "probabilities", "logits"}.
    #[arg(long)]
    json: bool,
}

/// Texts read per chunk of a file: tokenized, classified and written before the next is read,
/// so a file of any size streams through in bounded memory.
const CHUNK: usize = 8192;

/// Run `bertlab predict`: every setting not given is the run's (when --model is a run's
/// `best/`), else `bertlab train`'s default, and `max_len` the longest the model allows.
pub fn run(args: PredictArgs, global: &crate::Global) -> anyhow::Result<()> {
    check_io(&args)?;
    let run = recorded_run(&args.model)?;
    let device = open_device(&args.inference, run.as_ref())?;
    let hub = global.hub();
    let fine_tuned = load_fine_tuned(&args.model, &hub, &device)?;
    let inference = resolve_inference(&args.inference, run.as_ref(), &fine_tuned.tokenizer)?;
    let predictor = Predictor {
        model_name: &args.model,
        fine_tuned: &fine_tuned,
        inference: &inference,
        device: &device,
    };
    match &args.file {
        None => predict_texts(&args, &predictor),
        Some(file) => predict_file(&args, file, &predictor),
    }
}

/// Before the model is loaded: every text given on the command line has words, and `--output`
/// is not the `--file` it would replace.
fn check_io(args: &PredictArgs) -> anyhow::Result<()> {
    // (clap's `requires = "file"` is not enforced here: it drops a requirement that conflicts
    // with an argument given, and the texts conflict with --file.)
    if args.file.is_none() {
        let given = [
            ("--output", args.output.is_some()),
            ("--format", args.format.is_some()),
            ("--input-format", args.input_format.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
            return Err(crate::UsageError(format!(
                "{flag} is for --file: the predictions of texts given on the command line are printed \
                 (--json for JSON lines)"
            ))
            .into());
        }
    }
    if let Some(i) = args.texts.iter().position(|t| bertlab_data::is_blank_text(t)) {
        return Err(crate::UsageError(format!(
            "text {}: empty or only whitespace: nothing to classify",
            i + 1
        ))
        .into());
    }
    if let Some(output) = &args.output {
        if bertlab_run::RunRecord::is_at(output) {
            return Err(crate::UsageError(format!(
                "--output {}: it is a run's record, which the predictions would replace; choose another --output",
                output.display()
            ))
            .into());
        }
        // What the command reads: the texts, the model's files and the run's record beside them.
        let model = std::path::Path::new(&args.model);
        let mut inputs = bertlab_run::files_in(model);
        inputs.extend(bertlab_run::inference::record_beside(model));
        inputs.extend(args.file.clone());
        if let Some(input) = bertlab_run::replaces_input(output, inputs.iter().map(|p| p.as_path())) {
            let what = if Some(input) == args.file.as_deref() {
                "the --file being read"
            } else {
                "a file of --model"
            };
            return Err(crate::UsageError(format!(
                "--output {}: it is {what} ({}), which the predictions would replace; choose another --output",
                output.display(),
                input.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// A loaded model and the settings it runs with.
struct Predictor<'a> {
    model_name: &'a str,
    fine_tuned: &'a FineTuned,
    inference: &'a Inference,
    device: &'a crate::backend::Device,
}

/// Probabilities and predicted class of each text, in order.
struct Predictions {
    logits: Vec<f32>,
    probabilities: Vec<f32>,
    predicted: Vec<u32>,
}

impl Predictor<'_> {
    fn classify(&self, texts: &[String]) -> anyhow::Result<Predictions> {
        let FineTuned { model, config, tokenizer } = self.fine_tuned;
        let Inference { max_len, truncation, batch, precision, pad_multiple, .. } = *self.inference;
        let encoded: EncodedTexts = tokenizer.encode_all(texts, max_len, truncation, false)?;
        let settings = EvalSettings {
            batch,
            padding: Padding::Bucket,
            pad_multiple,
            precision,
            pad_id: tokenizer.pad_id(),
        };
        let k = config.num_labels();
        // (a failed allocation on the GPU's device thread would leave garbage logits)
        let logits =
            bertlab_train::device_fault::watched(|| predict_logits(model, &encoded, &settings, self.device))?;
        check_finite_logits(&logits, k, self.model_name)?;
        let probabilities = softmax_rows(&logits, k);
        let predicted = argmax_rows(&logits, k);
        Ok(Predictions { logits, probabilities, predicted })
    }
}

fn predict_texts(args: &PredictArgs, predictor: &Predictor) -> anyhow::Result<()> {
    let labels = &predictor.fine_tuned.config.labels;
    let k = labels.len();
    let p = predictor.classify(&args.texts)?;
    let mut out = std::io::stdout().lock();
    for (i, text) in args.texts.iter().enumerate() {
        let label = p.predicted[i] as usize;
        let name = labels.get(label).cloned().unwrap_or_else(|| label.to_string());
        let probs = &p.probabilities[i * k..(i + 1) * k];
        if args.json {
            let line = serde_json::json!({
                "text": text,
                "label": name,
                "probability": probs[label],
                "probabilities": probs,
                "logits": &p.logits[i * k..(i + 1) * k],
            });
            writeln!(out, "{line}")?;
        } else {
            let shown: String = text.chars().take(70).collect();
            let ellipsis = if text.chars().count() > 70 { "…" } else { "" };
            writeln!(out, "{name}\t{:.4}\t{shown}{ellipsis}", probs[label])?;
        }
    }
    Ok(())
}

fn predict_file(args: &PredictArgs, file: &Path, predictor: &Predictor) -> anyhow::Result<()> {
    let output_format = args.format.unwrap_or(
        match args.output.as_ref().and_then(|o| o.extension()).and_then(|e| e.to_str()) {
            Some("csv") => OutputFormat::Csv,
            _ => OutputFormat::Jsonl,
        },
    );
    let format = args.input_format.map_or_else(|| TextFormat::of_path(file), TextFormat::from);
    let mut reader = TextStream::open(file, format, &args.text_column)?;
    let labels = predictor.fine_tuned.config.labels.clone();
    let k = labels.len();
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} texts classified, {per_sec}, {elapsed}")
                .expect("a valid template"),
        )
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut rows = 0usize;
    let mut write = |w: &mut dyn Write| -> anyhow::Result<()> {
        let mut csv_out = (output_format == OutputFormat::Csv).then(|| csv::Writer::from_writer(Vec::new()));
        if let Some(c) = csv_out.as_mut() {
            let mut header = vec!["row".to_string(), "label".into(), "probability".into()];
            header.extend(labels.iter().map(|l| format!("p:{l}")));
            c.write_record(&header)?;
        }
        loop {
            let texts = reader.next_chunk(CHUNK)?;
            if texts.is_empty() {
                break;
            }
            if let Some(i) = texts.iter().position(|t| bertlab_data::is_blank_text(t)) {
                anyhow::bail!(
                    "{}: text {} is empty or only whitespace: nothing to classify (the training data \
                     refuses such rows too)",
                    file.display(),
                    rows + i + 1
                );
            }
            let p = predictor.classify(&texts)?;
            for i in 0..texts.len() {
                rows += 1;
                let label = p.predicted[i] as usize;
                let probs = &p.probabilities[i * k..(i + 1) * k];
                match csv_out.as_mut() {
                    Some(c) => {
                        let mut record =
                            vec![rows.to_string(), labels[label].clone(), probs[label].to_string()];
                        record.extend(probs.iter().map(|v| v.to_string()));
                        c.write_record(&record)?;
                    }
                    None => {
                        let all: serde_json::Map<String, serde_json::Value> = labels
                            .iter()
                            .zip(probs)
                            .map(|(l, v)| (l.clone(), serde_json::json!(v)))
                            .collect();
                        let line = serde_json::json!({
                            "row": rows, "label": labels[label], "probability": probs[label], "probabilities": all,
                        });
                        writeln!(w, "{line}")?;
                    }
                }
            }
            // The chunk's CSV rows go out before the next chunk is read.
            if let Some(c) = csv_out.take() {
                let bytes = c.into_inner().map_err(|e| anyhow::anyhow!("writing CSV: {e}"))?;
                w.write_all(&bytes)?;
                csv_out = Some(csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new()));
            }
            bar.inc(texts.len() as u64);
        }
        if rows == 0 {
            // (an --output already there is left as it was)
            anyhow::bail!("{}: no texts in it: nothing to classify", file.display());
        }
        Ok(())
    };
    match &args.output {
        Some(path) => {
            let mut failure = None;
            bertlab_run::write_atomic_with(path, |w| {
                write(w).map_err(|e| {
                    let message = format!("{e:#}");
                    failure = Some(e);
                    std::io::Error::other(message)
                })
            })
            .map_err(|e| failure.take().unwrap_or_else(|| anyhow::anyhow!("{}: {e}", path.display())))?;
        }
        None => write(&mut std::io::stdout().lock())?,
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{rows} texts classified in {seconds:.1} s: {:.1} texts/s (batch {}, max_len {}, {}){}",
        rows as f64 / seconds.max(1e-9),
        predictor.inference.batch,
        predictor.inference.max_len,
        predictor.inference.precision,
        args.output.as_ref().map(|o| format!(" → {}", o.display())).unwrap_or_default()
    );
    Ok(())
}
