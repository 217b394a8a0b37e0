//! `bertlab predict`: the label and its probability for each text, from a fine-tuned model —
//! texts given on the command line, or a file of them (one per line, or a CSV/JSONL column)
//! classified in batches by length, written as JSONL or CSV.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use bertlab_models::Precision;
use bertlab_tokenize::{EncodedTexts, Truncation};
use bertlab_train::metrics::{argmax_rows, softmax_rows};
use bertlab_train::{predict_logits, EvalSettings, Padding};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::device;
use crate::fine_tuned::{check_finite_logits, load_fine_tuned, FineTuned};

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
    #[arg(long)]
    model: String,
    /// Texts to classify (or --file).
    #[arg(value_name = "TEXT", required_unless_present = "file", conflicts_with = "file")]
    texts: Vec<String>,
    /// A file of texts to classify: one per line (.txt and others), a CSV (.csv) or JSONL
    /// (.jsonl) column; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// How --file holds its texts (default: from its extension; lines for standard input).
    #[arg(long, value_enum, requires = "file")]
    input_format: Option<InputFormat>,
    /// The column of the texts in a CSV or JSONL --file.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Write the predictions here (atomically) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// jsonl or csv (default: from --output's extension, else jsonl for --file).
    #[arg(long, value_enum)]
    format: Option<OutputFormat>,
    /// Tokens per text, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// head, tail or head-tail.
    #[arg(long, default_value_t = Truncation::Head)]
    truncation: Truncation,
    /// Texts per batch (batches group texts of similar length).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// f32, f16 or bf16.
    #[arg(long, default_value_t = Precision::F32)]
    precision: Precision,
    /// The build's device by default (the CPU, or GPU 0 in a CUDA build); cuda:N picks a GPU.
    #[arg(long, default_value = "default")]
    device: String,
    /// Print JSON lines for texts given on the command line: {"text", "label", "probability",
    /// "probabilities", "logits"}.
    #[arg(long)]
    json: bool,
}

/// Texts read per chunk of a file: tokenized, classified and written before the next is read,
/// so a file of any size streams through in bounded memory.
const CHUNK: usize = 8192;

/// Run `bertlab predict`.
pub fn run(args: PredictArgs, global: &crate::Global) -> anyhow::Result<()> {
    if args.batch == 0 {
        crate::usage!("--batch 0: must be at least 1");
    }
    if args.max_len < 3 {
        crate::usage!("--max-len {}: must be at least 3", args.max_len);
    }
    let hub = global.hub();
    let device = device(&args.device)?;
    let fine_tuned = load_fine_tuned(&args.model, &hub, &device)?;
    match &args.file {
        None => predict_texts(&args, &fine_tuned, &device),
        Some(file) => predict_file(&args, file, &fine_tuned, &device),
    }
}

/// Probabilities and predicted class of each text, in order.
struct Predictions {
    logits: Vec<f32>,
    probabilities: Vec<f32>,
    predicted: Vec<u32>,
}

fn classify(
    args: &PredictArgs,
    fine_tuned: &FineTuned,
    texts: &[String],
    device: &crate::backend::Device,
) -> anyhow::Result<Predictions> {
    let FineTuned { model, config, tokenizer } = fine_tuned;
    let max_len = args.max_len.min(config.max_position_embeddings);
    let encoded: EncodedTexts = tokenizer.encode_all(texts, max_len, args.truncation, false)?;
    let settings = EvalSettings {
        batch: args.batch,
        padding: Padding::Bucket,
        pad_multiple: 8,
        precision: args.precision,
        pad_id: tokenizer.pad_id(),
    };
    let k = config.num_labels();
    // (a failed allocation on the GPU's device thread would leave garbage logits)
    let logits = bertlab_train::device_fault::watched(|| predict_logits(model, &encoded, &settings, device))?;
    check_finite_logits(&logits, k, &args.model)?;
    let probabilities = softmax_rows(&logits, k);
    let predicted = argmax_rows(&logits, k);
    Ok(Predictions { logits, probabilities, predicted })
}

fn predict_texts(
    args: &PredictArgs,
    fine_tuned: &FineTuned,
    device: &crate::backend::Device,
) -> anyhow::Result<()> {
    let labels = &fine_tuned.config.labels;
    let k = labels.len();
    let p = classify(args, fine_tuned, &args.texts, device)?;
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

/// The format of `file` when not given: by extension; standard input is lines.
fn input_format(args: &PredictArgs, file: &Path) -> InputFormat {
    args.input_format.unwrap_or_else(|| match file.extension().and_then(|e| e.to_str()) {
        Some("csv") => InputFormat::Csv,
        Some("jsonl") | Some("ndjson") => InputFormat::Jsonl,
        _ => InputFormat::Lines,
    })
}

/// Reads a texts file chunk by chunk; errors name the file and the line.
struct TextReader {
    name: String,
    format: InputFormat,
    lines: Box<dyn BufRead>,
    line_no: usize,
    /// CSV: the text column's index (after the header).
    csv_column: Option<usize>,
}

impl TextReader {
    fn open(file: &Path, format: InputFormat, column: &str) -> anyhow::Result<TextReader> {
        let (name, lines): (String, Box<dyn BufRead>) = if file == Path::new("-") {
            ("standard input".into(), Box::new(std::io::BufReader::new(std::io::stdin())))
        } else {
            let f =
                std::fs::File::open(file).with_context(|| format!("{}: cannot read it", file.display()))?;
            if !f.metadata()?.is_file() {
                anyhow::bail!("{}: is not a regular file", file.display());
            }
            (file.display().to_string(), Box::new(std::io::BufReader::new(f)))
        };
        let mut reader = TextReader { name, format, lines, line_no: 0, csv_column: None };
        if format == InputFormat::Csv {
            let header = reader
                .next_line()?
                .with_context(|| format!("{}: empty; a CSV file needs a header row", reader.name))?;
            let fields = parse_csv_record(&header);
            reader.csv_column = Some(fields.iter().position(|f| f == column).with_context(|| {
                format!(
                    "{}: no column `{column}` (columns: {}); name it with --text-column",
                    reader.name,
                    fields.join(", ")
                )
            })?);
        }
        Ok(reader)
    }

    fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        let mut line = String::new();
        let n = self
            .lines
            .read_line(&mut line)
            .with_context(|| format!("{}: line {}", self.name, self.line_no + 1))?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
    }

    /// Up to `n` texts (fewer at the end; none when the file is done).
    fn chunk(&mut self, n: usize, column: &str) -> anyhow::Result<Vec<String>> {
        let mut texts = Vec::with_capacity(n.min(CHUNK));
        while texts.len() < n {
            let Some(mut line) = self.next_line()? else { break };
            match self.format {
                InputFormat::Lines => {
                    if !line.trim().is_empty() {
                        texts.push(line);
                    }
                }
                InputFormat::Jsonl => {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let value: serde_json::Value = serde_json::from_str(&line).with_context(|| {
                        format!("{}: line {}: not a JSON object", self.name, self.line_no)
                    })?;
                    let text = value.get(column).and_then(|v| v.as_str()).with_context(|| {
                        format!(
                            "{}: line {}: no string `{column}` (name the column with --text-column)",
                            self.name, self.line_no
                        )
                    })?;
                    texts.push(text.to_string());
                }
                InputFormat::Csv => {
                    // A quoted field may hold newlines: read on until the quotes balance.
                    while line.matches('"').count() % 2 == 1 {
                        let Some(more) = self.next_line()? else {
                            anyhow::bail!(
                                "{}: line {}: a quoted field is never closed",
                                self.name,
                                self.line_no
                            )
                        };
                        line.push('\n');
                        line.push_str(&more);
                    }
                    if line.is_empty() {
                        continue;
                    }
                    let fields = parse_csv_record(&line);
                    let at = self.csv_column.expect("the header was read");
                    let text = fields.get(at).with_context(|| {
                        format!(
                            "{}: line {}: {} fields, no column {}",
                            self.name,
                            self.line_no,
                            fields.len(),
                            at + 1
                        )
                    })?;
                    texts.push(text.clone());
                }
            }
        }
        Ok(texts)
    }
}

/// The fields of one CSV record (RFC 4180 quoting).
fn parse_csv_record(line: &str) -> Vec<String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(line.as_bytes());
    reader
        .records()
        .next()
        .and_then(Result::ok)
        .map(|r| r.iter().map(str::to_string).collect())
        .unwrap_or_default()
}

fn predict_file(
    args: &PredictArgs,
    file: &Path,
    fine_tuned: &FineTuned,
    device: &crate::backend::Device,
) -> anyhow::Result<()> {
    let format = args.format.unwrap_or(
        match args.output.as_ref().and_then(|o| o.extension()).and_then(|e| e.to_str()) {
            Some("csv") => OutputFormat::Csv,
            _ => OutputFormat::Jsonl,
        },
    );
    let mut reader = TextReader::open(file, input_format(args, file), &args.text_column)?;
    let labels = fine_tuned.config.labels.clone();
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
        let mut csv_out = (format == OutputFormat::Csv).then(|| csv::Writer::from_writer(Vec::new()));
        if let Some(c) = csv_out.as_mut() {
            let mut header = vec!["row".to_string(), "label".into(), "probability".into()];
            header.extend(labels.iter().map(|l| format!("p:{l}")));
            c.write_record(&header)?;
        }
        loop {
            let texts = reader.chunk(CHUNK, &args.text_column)?;
            if texts.is_empty() {
                break;
            }
            let p = classify(args, fine_tuned, &texts, device)?;
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
        args.batch,
        args.max_len.min(fine_tuned.config.max_position_embeddings),
        args.precision,
        args.output.as_ref().map(|o| format!(" → {}", o.display())).unwrap_or_default()
    );
    Ok(())
}
