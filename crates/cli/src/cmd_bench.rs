//! `bertlab bench`: checks and measurements of the backend this binary was built with — the
//! device side of the CUDA path (scripts/device-check.sh drives them on a GPU machine; every
//! subcommand also runs on the CPU build):
//!
//! - `env`: the backend, its device and the half precisions it computes in;
//! - `parity`: f32 logits and hidden states against the `transformers` fixtures, one AdamW
//!   step against PyTorch's, and f16/bf16 against f32;
//! - `numerics`: AdamW loss curves of one random initialisation in f32, f16 and bf16 on fixed
//!   IMDB batches: the largest gap between the curves and the steps lost to f16 overflow;
//! - `train-throughput`: training seq/s of randomly initialised models on seeded batch plans,
//!   which `--plan-out` writes for scripts/torch_bench.py to replay in PyTorch;
//! - `table`: bertlab against PyTorch, with MFU; `make-ids`: the small tokenized IMDB sample
//!   the other benches read (so the GPU machine needs neither the dataset nor a tokenizer).
//!
//! Each measurement is one JSON object per line on stdout; progress and summaries go to
//! stderr. `parity` and `numerics` exit non-zero when a check fails, after printing all.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context};
use bertlab_data::rng::Pcg64;
use bertlab_data::{DatasetSource, Split};
use bertlab_hub::{RepoKind, RepoRef};
use bertlab_models::{
    load_classifier, load_encoder, AttentionKernel, ModelConfig, Precision, TextClassifier,
};
use bertlab_tokenize::{Truncation, WordPieceTokenizer};
use bertlab_train::metrics::cross_entropy_rows;
use bertlab_train::optim::{grad_sq_norm, AdamSettings, DecayPolicy, EpsilonForm};
use bertlab_train::predict::{batch_tensors, logits_to_vec};
use bertlab_train::{
    check_precision, forward_backward, is_out_of_memory, weighted_cross_entropy, Adam, BatchArrays,
    DynamicLossScaler, LengthBuckets, Padding, PendingLogits, ScaleDecision,
};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::ElementConversion;
use burn::tensor::backend::Backend as _;
use burn::tensor::Tensor;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backend::{device, Backend, TrainBackend, BACKEND_NAME};

type Device = <Backend as burn::tensor::backend::BackendTypes>::Device;

/// `bertlab bench …`
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The backend, device and supported precisions of this build (one JSON line).
    Env(EnvArgs),
    /// f32 parity with the transformers fixtures (logits, hidden states, one AdamW step) and
    /// f16/bf16 error against f32.
    Parity(ParityArgs),
    /// Loss curves of 200 AdamW steps in f32, f16 and bf16 from one random initialisation.
    Numerics(NumericsArgs),
    /// Training throughput of randomly initialised DistilBERT-base / BERT-base.
    TrainThroughput(ThroughputArgs),
    /// bertlab vs PyTorch table (seq/s, ratio, MFU) from the JSON lines of both.
    Table(TableArgs),
    /// Tokenize a fixed sample of IMDB train reviews into a small ids file for the benches.
    MakeIds(MakeIdsArgs),
}

/// Run `bertlab bench`.
pub fn run(args: BenchArgs, global: &crate::Global) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Env(a) => run_env(a),
        BenchCommand::Parity(a) => run_parity(a, global),
        BenchCommand::Numerics(a) => run_numerics(a),
        BenchCommand::TrainThroughput(a) => run_throughput(a),
        BenchCommand::Table(a) => run_table(a),
        BenchCommand::MakeIds(a) => run_make_ids(a, global),
    }
}

/// Print one result line (flushed, so a script reading the pipe sees it at once).
fn emit(value: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn sync(device: &Device) {
    // Burn launches asynchronously on GPUs: a timing is only real after a sync.
    TrainBackend::sync(device).ok();
}

/// The backend this binary computes with, as the table shows it: `cuda`, `cuda+fusion` (Burn's
/// CUDA backend wrapped in its kernel-fusion layer), `cpu (burn-flex)`.
fn build_label() -> String {
    if std::any::type_name::<Backend>().contains("Fusion") {
        format!("{BACKEND_NAME}+fusion")
    } else {
        BACKEND_NAME.to_string()
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

// ---------------------------------------------------------------------------------------------
// Models

/// A model to benchmark: a base architecture built in code, or any `config.json`.
#[derive(Debug, Clone)]
struct ModelChoice {
    /// `distilbert-base`, `bert-base`, or the config's directory name.
    name: String,
    config: ModelConfig,
}

/// `distilbert-base-uncased`'s config.json (the sizes of the notebook's model).
const DISTILBERT_BASE: &str = r#"{"model_type": "distilbert", "vocab_size": 30522, "dim": 768,
    "n_layers": 6, "n_heads": 12, "hidden_dim": 3072, "max_position_embeddings": 512,
    "activation": "gelu", "dropout": 0.1, "attention_dropout": 0.1, "seq_classif_dropout": 0.2,
    "initializer_range": 0.02, "sinusoidal_pos_embds": false, "pad_token_id": 0}"#;

/// `bert-base-uncased`'s config.json.
const BERT_BASE: &str = r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12,
    "initializer_range": 0.02, "pad_token_id": 0}"#;

impl FromStr for ModelChoice {
    type Err = String;
    fn from_str(spec: &str) -> Result<Self, String> {
        let builtin = |name: &str, json: &str| ModelChoice {
            name: name.to_string(),
            config: ModelConfig::from_json(json, name).expect("the built-in configs are valid"),
        };
        match spec {
            "distilbert" | "distilbert-base" => Ok(builtin("distilbert-base", DISTILBERT_BASE)),
            "bert" | "bert-base" => Ok(builtin("bert-base", BERT_BASE)),
            path => {
                let path = Path::new(path);
                let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
                if !file.is_file() {
                    return Err(format!(
                        "{spec:?}: expected distilbert, bert, or the path of a config.json (or its directory)"
                    ));
                }
                let config = ModelConfig::from_file(&file).map_err(|e| e.to_string())?;
                let name = file
                    .parent()
                    .and_then(Path::file_name)
                    .map_or_else(|| spec.to_string(), |n| n.to_string_lossy().into_owned());
                Ok(ModelChoice { name, config })
            }
        }
    }
}

/// Parameters of the matrix products (weights of every Linear: attention, feed-forward, the
/// pooler or DistilBERT's pre-classifier, the classifier) — the N of "6N FLOPs per token".
/// Embedding lookups do no matmul, so they are not counted.
fn matmul_params(c: &ModelConfig) -> u64 {
    let (h, i, l, k) =
        (c.hidden_size as u64, c.intermediate_size as u64, c.num_hidden_layers as u64, c.num_labels() as u64);
    l * (4 * h * h + 2 * h * i) + h * h + h * k
}

/// Training FLOPs of `tokens` tokens in rows of `len`: 6N per token plus the attention
/// products, 12·L·d·s per token (forward QKᵀ and PV, 2·2·L·d·s; backward twice that).
fn train_flops(c: &ModelConfig, padded_tokens: u64, attn_sq_tokens: u64) -> f64 {
    6.0 * matmul_params(c) as f64 * padded_tokens as f64
        + 12.0 * c.num_hidden_layers as f64 * c.hidden_size as f64 * attn_sq_tokens as f64
}

/// Forces the lazy initialisation of every parameter, so that clones of the module share one
/// set of weights (a clone of an uninitialised parameter would draw its own).
struct Materialize;

impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// A randomly initialised classifier, every weight drawn now from `seed`.
fn random_classifier(config: &ModelConfig, seed: u64, device: &Device) -> TextClassifier<TrainBackend> {
    TrainBackend::seed(device, seed);
    let model = TextClassifier::<TrainBackend>::random(config.clone(), device);
    model.visit(&mut Materialize);
    model
}

fn loss_scaler(precision: Precision) -> DynamicLossScaler {
    // f16 needs loss scaling (its exponent range is 5 bits); bf16 has f32's range.
    if precision == Precision::F16 {
        DynamicLossScaler::f16()
    } else {
        DynamicLossScaler::disabled()
    }
}

/// The optimizer half of the trainer's step (crates/train/src/trainer.rs, `fit`): unscale, skip
/// on f16 overflow, AdamW. Returns the model and whether the step was skipped.
fn optimizer_step(
    adam: &mut Adam<TrainBackend>,
    scaler: &mut DynamicLossScaler,
    model: TextClassifier<TrainBackend>,
    grads: GradientsParams,
    lr: f64,
    phases: Option<&mut Phases>,
    device: &Device,
) -> (TextClassifier<TrainBackend>, bool) {
    let multiplier = 1.0 / scaler.scale();
    let t = Instant::now();
    if scaler.is_dynamic() {
        let sq: f64 = grad_sq_norm::<TrainBackend, _>(&model, &grads).map_or(0.0, |t| t.into_scalar().elem());
        let norm = sq.sqrt() / scaler.scale();
        if scaler.update(norm.is_finite()) == ScaleDecision::Skip {
            return (model, true);
        }
    }
    let grad_norm = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let model = adam.step(lr, model, grads, multiplier);
    if let Some(p) = phases {
        sync(device);
        p.grad_norm += grad_norm;
        p.optimizer += t.elapsed().as_secs_f64();
    }
    (model, false)
}

/// Seconds spent in each phase of the timed steps (`--profile`: the device is synced after
/// each phase, so the phases add up to a slower step than the unprofiled one).
#[derive(Debug, Default, Clone, Serialize)]
struct Phases {
    /// Packing the batch on the host and copying ids, mask and labels to the device.
    upload: f64,
    /// The forward pass.
    forward: f64,
    /// Reading the logits back to the host (the trainer does it every step for loss/accuracy).
    readback: f64,
    /// Loss and backward pass.
    backward: f64,
    /// Global gradient norm (f16 overflow check; a device→host read).
    grad_norm: f64,
    /// AdamW update of every parameter.
    optimizer: f64,
}

/// `forward_backward` of the trainer with a sync and a timer between its phases.
fn profiled_forward_backward(
    model: &TextClassifier<TrainBackend>,
    arrays: &BatchArrays,
    labels: &[u32],
    weight: f64,
    precision: Precision,
    device: &Device,
    phases: &mut Phases,
) -> (GradientsParams, Vec<f32>) {
    let t = Instant::now();
    let (ids, mask) = batch_tensors::<TrainBackend>(arrays, device);
    sync(device);
    phases.upload += t.elapsed().as_secs_f64();
    let t = Instant::now();
    let logits = model.forward(ids, mask, precision);
    sync(device);
    phases.forward += t.elapsed().as_secs_f64();
    let t = Instant::now();
    let host = logits_to_vec(logits.clone().detach());
    phases.readback += t.elapsed().as_secs_f64();
    let t = Instant::now();
    let loss = weighted_cross_entropy(logits, labels, weight, device);
    let grads = GradientsParams::from_grads(loss.backward(), model);
    sync(device);
    phases.backward += t.elapsed().as_secs_f64();
    (grads, host)
}

// ---------------------------------------------------------------------------------------------
// The ids file

/// A fixed sample of tokenized IMDB reviews (`bench make-ids`), truncated at `max_len` with
/// head truncation; shorter `max_len`s are cut from it the same way.
#[derive(Debug, Serialize, Deserialize)]
struct IdsFile {
    /// `bertlab-bench-ids/1`.
    format: String,
    /// The dataset and tokenizer it was made from, and how.
    source: String,
    tokenizer: String,
    split: String,
    seed: u64,
    max_len: usize,
    sep_id: u32,
    pad_id: u32,
    /// Class of each row.
    labels: Vec<u32>,
    /// `[CLS] … [SEP]` of each row.
    ids: Vec<Vec<u32>>,
}

const IDS_FORMAT: &str = "bertlab-bench-ids/1";

impl IdsFile {
    fn read(path: &Path) -> anyhow::Result<IdsFile> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("{}: cannot read the ids file (make one with `bertlab bench make-ids`)", path.display())
        })?;
        let file: IdsFile = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a bench ids file", path.display()))?;
        if file.format != IDS_FORMAT {
            bail!("{}: format {:?}, expected {IDS_FORMAT:?}", path.display(), file.format);
        }
        if file.ids.len() != file.labels.len() || file.ids.is_empty() {
            bail!("{}: {} rows of ids but {} labels", path.display(), file.ids.len(), file.labels.len());
        }
        Ok(file)
    }

    fn check_max_len(&self, max_len: usize) -> anyhow::Result<()> {
        if max_len > self.max_len || max_len < 2 {
            bail!(
                "--max-len {max_len}: the ids file holds rows of at most {} tokens (and 2 is the least)",
                self.max_len
            );
        }
        Ok(())
    }

    /// Row lengths at `max_len`.
    fn lengths(&self, max_len: usize) -> Vec<usize> {
        self.ids.iter().map(|r| r.len().min(max_len)).collect()
    }

    /// Append `row` head-truncated to `max_len`: `[CLS]` + the first `max_len − 2` pieces + `[SEP]`.
    fn row_into(&self, row: usize, max_len: usize, out: &mut Vec<i64>) {
        let ids = &self.ids[row];
        if ids.len() <= max_len {
            out.extend(ids.iter().map(|&id| id as i64));
        } else {
            out.extend(ids[..max_len - 1].iter().map(|&id| id as i64));
            out.push(self.sep_id as i64);
        }
    }

    fn pack(&self, batch: &PlanBatch, max_len: usize) -> (BatchArrays, Vec<u32>) {
        let b = bertlab_train::Batch { rows: batch.rows.clone(), padded_len: batch.len };
        let arrays = BatchArrays::pack(&b, self.pad_id, |r, out| self.row_into(r, max_len, out));
        let labels = batch.rows.iter().map(|&r| self.labels[r]).collect();
        (arrays, labels)
    }
}

#[derive(Args)]
struct MakeIdsArgs {
    /// Dataset: a directory holding plain_text/{train,test}-*.parquet (e.g.
    /// ../shared/data/hf-imdb), `hub` or `hub:ORG/NAME[@REV]`.
    #[arg(long)]
    source: String,
    /// Tokenizer: a model directory or Hub id with the bert-base-uncased vocabulary (e.g.
    /// ../shared/models/all-MiniLM-L6-v2).
    #[arg(long)]
    model: String,
    /// Reviews to sample from the train split (seeded shuffle).
    #[arg(long, default_value_t = 1024)]
    rows: usize,
    /// Tokens per row at most, [CLS] and [SEP] included (head truncation).
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// Seed of the sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file (JSON).
    #[arg(long)]
    out: PathBuf,
}

fn run_make_ids(args: MakeIdsArgs, global: &crate::Global) -> anyhow::Result<()> {
    let hub = global.hub();
    let source = DatasetSource::parse(&args.source)?;
    let data = source.load_split(Split::Train, &hub)?;
    if args.rows == 0 || args.rows > data.len() {
        bail!("--rows {}: the train split has {} rows", args.rows, data.len());
    }
    let rows: Vec<usize> = Pcg64::new(args.seed).permutation(data.len())[..args.rows].to_vec();
    let texts: Vec<&str> = rows.iter().map(|&r| data.texts[r].as_str()).collect();
    let tokenizer = WordPieceTokenizer::from_repo(&RepoRef::parse(&args.model, RepoKind::Model), &hub)?;
    let encoded = tokenizer.encode_all(&texts, args.max_len, Truncation::Head, false)?;
    let file = IdsFile {
        format: IDS_FORMAT.into(),
        source: source.to_string(),
        tokenizer: args.model.clone(),
        split: "train".into(),
        seed: args.seed,
        max_len: args.max_len,
        sep_id: tokenizer.sep_id(),
        pad_id: tokenizer.pad_id(),
        labels: rows.iter().map(|&r| data.labels[r]).collect(),
        ids: (0..encoded.len()).map(|r| encoded.ids(r)).collect(),
    };
    let text = serde_json::to_string(&file)?;
    write_atomic(&args.out, text.as_bytes())?;
    let lengths = file.lengths(args.max_len);
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
    let over = |n: usize| lengths.iter().filter(|&&l| l > n).count() as f64 / lengths.len() as f64;
    emit(json!({
        "bench": "make-ids", "out": args.out, "rows": args.rows, "bytes": text.len(),
        "mean_len": round(mean, 1), "share_over_128": round(over(128), 3),
        "share_over_256": round(over(256), 3), "share_at_max_len": round(over(args.max_len - 1), 3),
    }));
    Ok(())
}

/// [`bertlab_hub::write_atomic`] with the path in the error.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    bertlab_hub::write_atomic(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

// ---------------------------------------------------------------------------------------------
// env

#[derive(Args)]
struct EnvArgs {
    /// cpu, or cuda / cuda:N in a CUDA build.
    #[arg(long, default_value = "default")]
    device: String,
}

fn run_env(args: EnvArgs) -> anyhow::Result<()> {
    let device = device(&args.device)?;
    let backend_type = std::any::type_name::<Backend>();
    let probe = |p: Precision| match check_precision::<Backend>(&device, p) {
        Ok(()) => json!(true),
        Err(e) => json!(e.to_string()),
    };
    emit(json!({
        "bench": "env",
        "bertlab": env!("CARGO_PKG_VERSION"),
        "backend": BACKEND_NAME,
        "build": build_label(),
        "backend_type": backend_type,
        // Burn's CUDA backend is wrapped in `Fusion<…>` when built with the `fusion` feature.
        "fusion": backend_type.contains("Fusion"),
        "device": format!("{device:?}"),
        "backend_name": Backend::name(&device),
        "f16": probe(Precision::F16),
        "bf16": probe(Precision::BF16),
        "host_threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
    }));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// parity

#[derive(Args)]
struct ParityArgs {
    /// Directory of the transformers fixtures: tiny-bert, tiny-distilbert (hidden states),
    /// tiny-bert-classifier, tiny-distilbert-classifier (logits, adamw_step.json); e.g.
    /// ../shared/fixtures. Each needs config.json, model.safetensors and expected.json.
    #[arg(long)]
    fixtures: PathBuf,
    /// Largest f32 error allowed against transformers (max abs).
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f64,
    /// Half precisions to compare with f32.
    #[arg(long, value_delimiter = ',', default_value = "f16,bf16")]
    half: Vec<Precision>,
    /// Also compare f16/bf16 with f32 on randomly initialised DistilBERT-base and BERT-base,
    /// on the first 8 rows of this ids file at 128 tokens.
    #[arg(long)]
    ids_file: Option<PathBuf>,
    /// cpu, or cuda / cuda:N in a CUDA build.
    #[arg(long, default_value = "default")]
    device: String,
}

/// Errors of `got` against `want`.
#[derive(Debug, Clone, Copy)]
struct Errors {
    max_abs: f64,
    /// ‖got − want‖₂ / ‖want‖₂.
    rel_l2: f64,
    finite: bool,
}

fn errors(got: &[f32], want: &[f32]) -> Errors {
    assert_eq!(got.len(), want.len(), "outputs of different sizes");
    let (mut max_abs, mut diff2, mut ref2, mut finite) = (0f64, 0f64, 0f64, true);
    for (&g, &w) in got.iter().zip(want) {
        finite &= g.is_finite();
        let d = (g as f64 - w as f64).abs();
        max_abs = max_abs.max(d);
        diff2 += d * d;
        ref2 += (w as f64) * (w as f64);
    }
    Errors { max_abs, rel_l2: (diff2 / ref2.max(f64::MIN_POSITIVE)).sqrt(), finite }
}

/// Relative L2 error allowed for a half-precision output against f32: f16 keeps 11
/// significant bits (≈5e-4 per rounding) and bf16 8 (≈4e-3); a few layers of accumulated
/// rounding stay well inside these, a wrong cast or an overflow does not.
fn half_bound(p: Precision) -> f64 {
    match p {
        Precision::F16 => 1e-2,
        Precision::BF16 => 5e-2,
        Precision::F32 => 0.0,
    }
}

struct ParityRun {
    failures: Vec<String>,
}

impl ParityRun {
    /// f32 against transformers.
    fn f32_check(&mut self, fixture: &str, output: &str, kernel: &str, got: &[f32], want: &[f32], tol: f64) {
        let e = errors(got, want);
        let pass = e.finite && e.max_abs <= tol;
        if !pass {
            self.failures.push(format!(
                "{fixture} {output} f32 ({kernel}): max abs error {:.2e} > {tol:.0e}",
                e.max_abs
            ));
        }
        emit(json!({
            "bench": "parity", "fixture": fixture, "output": output, "precision": "f32", "kernel": kernel,
            "reference": "transformers", "max_abs": e.max_abs, "rel_l2": e.rel_l2, "tolerance": tol, "pass": pass,
        }));
    }

    /// Half precision against our own f32 (and against transformers, when given).
    #[allow(clippy::too_many_arguments)]
    fn half_check(
        &mut self,
        fixture: &str,
        output: &str,
        kernel: &str,
        precision: Precision,
        got: &[f32],
        f32_out: &[f32],
        transformers: Option<&[f32]>,
    ) {
        let e = errors(got, f32_out);
        let bound = half_bound(precision);
        let pass = e.finite && e.rel_l2 <= bound;
        if !pass {
            self.failures.push(format!(
                "{fixture} {output} {precision} ({kernel}): relative error {:.2e} against f32 > {bound:.0e}",
                e.rel_l2
            ));
        }
        let vs_hf = transformers.map(|t| errors(got, t).max_abs);
        emit(json!({
            "bench": "parity", "fixture": fixture, "output": output, "precision": precision.as_str(),
            "kernel": kernel, "reference": "f32", "max_abs": e.max_abs, "rel_l2": e.rel_l2,
            "bound_rel_l2": bound, "max_abs_vs_transformers": vs_hf, "pass": pass,
        }));
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

/// All numbers of a nested JSON array, row-major.
fn flat_f32(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flat_f32).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN) as f32],
        _ => vec![f32::NAN],
    }
}

/// A `[rows, cols]` int matrix (ids or mask) of expected.json as packed arrays.
fn expected_arrays(expected: &Value, path: &Path) -> anyhow::Result<BatchArrays> {
    let matrix = |key: &str| -> anyhow::Result<(Vec<i64>, usize, usize)> {
        let rows = expected[key].as_array().with_context(|| format!("{}: no {key} array", path.display()))?;
        let cols = rows.first().and_then(Value::as_array).map_or(0, Vec::len);
        let mut flat = Vec::with_capacity(rows.len() * cols);
        for row in rows {
            let row = row.as_array().filter(|r| r.len() == cols);
            let row = row.with_context(|| format!("{}: {key} rows must have {cols} ints", path.display()))?;
            flat.extend(row.iter().map(|v| v.as_i64().unwrap_or(-1)));
        }
        Ok((flat, rows.len(), cols))
    };
    let (input_ids, rows, len) = matrix("input_ids")?;
    let (attention_mask, mrows, mlen) = matrix("attention_mask")?;
    if (rows, len) != (mrows, mlen) {
        bail!("{}: input_ids and attention_mask differ in shape", path.display());
    }
    Ok(BatchArrays { input_ids, attention_mask, rows, len })
}

const KERNELS: [(AttentionKernel, &str); 2] =
    [(AttentionKernel::Fused, "fused"), (AttentionKernel::Explicit, "explicit")];

fn run_parity(args: ParityArgs, global: &crate::Global) -> anyhow::Result<()> {
    let device = device(&args.device)?;
    let hub = global.hub();
    let mut run = ParityRun { failures: Vec::new() };
    let mut halves = Vec::new();
    for &p in args.half.iter().filter(|&&p| p != Precision::F32) {
        match check_precision::<Backend>(&device, p) {
            Ok(()) => halves.push(p),
            Err(e) => emit(json!({"bench": "parity", "precision": p.as_str(), "skipped": e.to_string()})),
        }
    }
    let mut checked = 0;
    for name in ["tiny-bert", "tiny-distilbert", "tiny-bert-classifier", "tiny-distilbert-classifier"] {
        let dir = args.fixtures.join(name);
        let expected_path = dir.join("expected.json");
        if !expected_path.is_file() {
            emit(
                json!({"bench": "parity", "fixture": name, "skipped": format!("{} not found", expected_path.display())}),
            );
            continue;
        }
        checked += 1;
        let expected = read_json(&expected_path)?;
        let arrays = expected_arrays(&expected, &expected_path)?;
        let repo = RepoRef::Local(dir.clone());
        let tensors = || batch_tensors::<Backend>(&arrays, &device);
        if let Some(logits) = expected.get("logits") {
            let want = flat_f32(logits);
            let (model, _, _) = load_classifier::<Backend>(&repo, &hub, &[], 0, &device)
                .with_context(|| format!("loading {}", dir.display()))?;
            for (kernel, kname) in KERNELS {
                let model = model.clone().with_attention_kernel(kernel);
                let (ids, mask) = tensors();
                let f32_out = logits_to_vec(model.forward(ids, mask, Precision::F32));
                run.f32_check(name, "logits", kname, &f32_out, &want, args.tolerance);
                for &p in &halves {
                    let (ids, mask) = tensors();
                    let got = logits_to_vec(model.forward(ids, mask, p));
                    run.half_check(name, "logits", kname, p, &got, &f32_out, Some(&want));
                }
            }
        } else {
            let (encoder, _, _) = load_encoder::<Backend>(&repo, &hub, &device)
                .with_context(|| format!("loading {}", dir.display()))?;
            let want_hidden = flat_f32(&expected["last_hidden_state"]);
            let want_pooled = expected.get("pooler_output").map(flat_f32);
            for (kernel, kname) in KERNELS {
                let encoder = encoder.clone().with_attention_kernel(kernel);
                let (ids, mask) = tensors();
                let out = encoder.forward(ids, mask, Precision::F32);
                let hidden = logits_to_vec(out.last_hidden_state);
                run.f32_check(name, "last_hidden_state", kname, &hidden, &want_hidden, args.tolerance);
                let pooled = out.pooler_output.map(logits_to_vec);
                if let (Some(got), Some(want)) = (&pooled, &want_pooled) {
                    run.f32_check(name, "pooler_output", kname, got, want, args.tolerance);
                }
                for &p in &halves {
                    let (ids, mask) = tensors();
                    let out = encoder.forward(ids, mask, p);
                    let got = logits_to_vec(out.last_hidden_state);
                    run.half_check(name, "last_hidden_state", kname, p, &got, &hidden, Some(&want_hidden));
                }
            }
        }
        if dir.join("adamw_step.json").is_file() {
            adamw_step_check(&mut run, name, &dir, &expected, &arrays, &device, global)?;
        }
    }
    if checked == 0 {
        bail!(
            "{}: none of the fixtures is there (expected tiny-bert/expected.json, …)",
            args.fixtures.display()
        );
    }
    if let Some(path) = &args.ids_file {
        let ids = IdsFile::read(path)?;
        for arch in ["distilbert", "bert"] {
            base_model_half_check(&mut run, arch, &ids, &halves, &device)?;
        }
    }
    if !run.failures.is_empty() {
        bail!("{} parity check(s) failed:\n  {}", run.failures.len(), run.failures.join("\n  "));
    }
    Ok(())
}

/// One AdamW step through the training path (autodiff, explicit attention, backward kernels)
/// against `torch.optim.AdamW` (adamw_step.json: all parameters decayed, eval mode).
fn adamw_step_check(
    run: &mut ParityRun,
    name: &str,
    dir: &Path,
    expected: &Value,
    arrays: &BatchArrays,
    device: &Device,
    global: &crate::Global,
) -> anyhow::Result<()> {
    let path = dir.join("adamw_step.json");
    let step = read_json(&path)?;
    let number =
        |key: &str| step[key].as_f64().with_context(|| format!("{}: no number {key}", path.display()));
    let labels: Vec<u32> = step["labels"]
        .as_array()
        .with_context(|| format!("{}: no labels", path.display()))?
        .iter()
        .map(|l| l.as_u64().unwrap_or(0) as u32)
        .collect();
    let settings = AdamSettings {
        beta1: step["betas"][0].as_f64().unwrap_or(0.9),
        beta2: step["betas"][1].as_f64().unwrap_or(0.999),
        epsilon: number("eps")?,
        epsilon_form: EpsilonForm::BiasCorrected,
        weight_decay: number("weight_decay")?,
        decay_policy: DecayPolicy::All,
    };
    let (model, _, _) =
        load_classifier::<TrainBackend>(&RepoRef::Local(dir.to_path_buf()), &global.hub(), &[], 0, device)?;
    let rows = arrays.rows;
    let (grads, logits) =
        forward_backward(&model, arrays, &labels, 1.0 / rows as f64, Precision::F32, device);
    let logits = logits_to_vec(logits);
    let loss = cross_entropy_rows(&logits, &labels, 2).iter().sum::<f64>() / rows as f64;
    let loss_err = (loss - number("loss_before")?).abs();
    let logits_err = errors(&logits, &flat_f32(&expected["logits"])).max_abs;
    let mut adam = Adam::<TrainBackend>::new(settings, &model);
    let after = adam.step(number("lr")?, model, grads, 1.0).valid();
    let (ids, mask) = batch_tensors::<Backend>(arrays, device);
    let got = logits_to_vec(after.forward(ids, mask, Precision::F32));
    let after_err = errors(&got, &flat_f32(&step["logits_after"])).max_abs;
    // The step moves these logits by ~1e-2 from values of ~1e-2: hold them to 1e-5, well
    // under the step and far over f32 rounding (the CPU build matches to ~1e-8).
    let (loss_tol, after_tol) = (1e-4, 1e-5);
    let pass = loss_err <= loss_tol && logits_err <= 1e-4 && after_err <= after_tol;
    if !pass {
        run.failures.push(format!(
            "{name} AdamW step: loss error {loss_err:.2e}, logits before {logits_err:.2e}, logits after {after_err:.2e}"
        ));
    }
    emit(json!({
        "bench": "parity", "fixture": name, "output": "adamw_step", "precision": "f32", "kernel": "explicit",
        "reference": "torch.optim.AdamW", "loss_abs_error": loss_err, "logits_before_max_abs": logits_err,
        "logits_after_max_abs": after_err, "tolerance": after_tol, "pass": pass,
    }));
    Ok(())
}

/// f16/bf16 against f32 on a randomly initialised base model and real IMDB rows.
fn base_model_half_check(
    run: &mut ParityRun,
    arch: &str,
    ids: &IdsFile,
    halves: &[Precision],
    device: &Device,
) -> anyhow::Result<()> {
    let choice: ModelChoice = arch.parse().map_err(anyhow::Error::msg)?;
    let max_len = 128.min(ids.max_len);
    let rows: Vec<usize> = (0..8.min(ids.ids.len())).collect();
    let lengths = ids.lengths(max_len);
    let len = rows.iter().map(|&r| lengths[r]).max().unwrap_or(2);
    let (arrays, _) = ids.pack(&PlanBatch { len, rows }, max_len);
    let model = random_classifier(&choice.config, 0, device).valid();
    for (kernel, kname) in KERNELS {
        let model = model.clone().with_attention_kernel(kernel);
        let (i, m) = batch_tensors::<Backend>(&arrays, device);
        let f32_out = logits_to_vec(model.forward(i, m, Precision::F32));
        for &p in halves {
            let (i, m) = batch_tensors::<Backend>(&arrays, device);
            let got = logits_to_vec(model.forward(i, m, p));
            run.half_check(&format!("random {}", choice.name), "logits", kname, p, &got, &f32_out, None);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// numerics

#[derive(Args)]
struct NumericsArgs {
    /// distilbert (DistilBERT-base), bert (BERT-base), or the path of a config.json.
    #[arg(long, default_value = "distilbert")]
    arch: ModelChoice,
    /// The tokenized IMDB sample (`bertlab bench make-ids`).
    #[arg(long)]
    ids_file: PathBuf,
    /// Optimizer steps per precision.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Tokens per row (fixed padding).
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Distinct batches, cycled through: the first batch × batches rows of the ids file.
    #[arg(long, default_value_t = 32)]
    batches: usize,
    /// AdamW learning rate (ε 1e-8, weight decay 0.01 except biases and LayerNorm).
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Precisions; f32 is the reference and must be among them.
    #[arg(long, value_delimiter = ',', default_value = "f32,f16,bf16")]
    precision: Vec<Precision>,
    /// Leading steps where f16 overflow skips are expected while the loss scale settles.
    #[arg(long, default_value_t = 10)]
    grace_steps: usize,
    /// Largest gap allowed between a half-precision loss curve and f32's, both smoothed over
    /// 10 steps (single steps are reported too).
    #[arg(long, default_value_t = 0.05)]
    gap_tolerance: f64,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop early (all precisions at the same step) once this many seconds have passed; the
    /// summary then covers the steps done.
    #[arg(long)]
    max_seconds: Option<f64>,
    /// cpu, or cuda / cuda:N in a CUDA build.
    #[arg(long, default_value = "default")]
    device: String,
}

/// Moving average over `window` steps (shorter at the start).
fn smooth(xs: &[f64], window: usize) -> Vec<f64> {
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

/// One precision's training in `bench numerics`.
struct NumericsRun {
    precision: Precision,
    /// Taken out for each step (the optimizer consumes the module) and put back.
    model: Option<TextClassifier<TrainBackend>>,
    adam: Adam<TrainBackend>,
    scaler: DynamicLossScaler,
    curve: Curve,
    seconds: f64,
}

fn run_numerics(args: NumericsArgs) -> anyhow::Result<()> {
    if !args.precision.contains(&Precision::F32) {
        bail!("--precision: f32 is the reference curve; include it (e.g. f32,f16,bf16)");
    }
    let ids = IdsFile::read(&args.ids_file)?;
    ids.check_max_len(args.max_len)?;
    if args.batch * args.batches > ids.ids.len() {
        bail!(
            "--batch {} × --batches {} rows, but the ids file has {}",
            args.batch,
            args.batches,
            ids.ids.len()
        );
    }
    let device = device(&args.device)?;
    let mut config = args.arch.config.clone();
    // Dropout off: the curves then differ by rounding alone, not by different masks.
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    config.classifier_dropout = 0.0;
    let batches: Vec<PlanBatch> = (0..args.batches)
        .map(|b| PlanBatch { len: args.max_len, rows: (b * args.batch..(b + 1) * args.batch).collect() })
        .collect();
    let model0 = random_classifier(&config, args.seed, &device);
    let mut runs: Vec<NumericsRun> = Vec::new();
    for &precision in &args.precision {
        match check_precision::<Backend>(&device, precision) {
            Ok(()) => runs.push(NumericsRun {
                precision,
                adam: Adam::<TrainBackend>::new(AdamSettings::hf_adamw(0.01), &model0),
                model: Some(model0.clone()),
                scaler: loss_scaler(precision),
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
        let (arrays, labels) = ids.pack(&batches[step % batches.len()], args.max_len);
        for run in &mut runs {
            let t = Instant::now();
            let model = run.model.take().expect("the model is put back after each step");
            let weight = run.scaler.scale() / labels.len() as f64;
            let (grads, logits) = forward_backward(&model, &arrays, &labels, weight, run.precision, &device);
            let logits = logits_to_vec(logits);
            let loss = cross_entropy_rows(&logits, &labels, config.num_labels()).iter().sum::<f64>()
                / labels.len() as f64;
            run.curve.losses.push(loss);
            let (model, skipped) =
                optimizer_step(&mut run.adam, &mut run.scaler, model, grads, args.lr, None, &device);
            if skipped {
                run.curve.skipped.push(step);
            }
            run.model = Some(model);
            sync(&device);
            run.seconds += t.elapsed().as_secs_f64();
        }
        steps_done = step + 1;
    }
    if steps_done == 0 {
        bail!("numerics: no step done (--steps 0, or --max-seconds too short)");
    }
    let mut curves: BTreeMap<&'static str, Curve> = BTreeMap::new();
    for run in runs {
        let n = run.curve.losses.len();
        let tail = &run.curve.losses[n.saturating_sub(10)..];
        emit(json!({
            "bench": "numerics", "model": args.arch.name, "precision": run.precision.as_str(),
            "steps": steps_done, "batch": args.batch, "max_len": args.max_len, "lr": args.lr,
            "seconds": round(run.seconds, 3),
            "seq_per_s": round((steps_done * args.batch) as f64 / run.seconds.max(1e-9), 2),
            "first_loss": run.curve.losses.first(),
            "last10_mean_loss": tail.iter().sum::<f64>() / tail.len().max(1) as f64,
            "skipped_steps": run.curve.skipped, "final_loss_scale": run.scaler.scale(),
            "losses": run.curve.losses.iter().map(|&l| round(l, 6)).collect::<Vec<_>>(),
        }));
        curves.insert(run.precision.as_str(), run.curve);
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
            smoothed.iter().zip(&smoothed_ref).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
        let late_skips = curve.skipped.iter().filter(|&&s| s >= args.grace_steps).count();
        let pass = smoothed_gap <= args.gap_tolerance && late_skips == 0;
        if !pass {
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
            }),
        );
    }
    emit(json!({
        "bench": "numerics-summary", "model": args.arch.name, "reference": "f32", "steps": steps_done,
        "steps_asked": args.steps,
        "grace_steps": args.grace_steps, "gap_tolerance": args.gap_tolerance, "precisions": gaps,
        "pass": failures.is_empty(),
    }));
    if !failures.is_empty() {
        bail!("numerics check failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// train-throughput

/// Rows per batch: a number, or the notebook's sizes for the max_len.
#[derive(Debug, Clone, Copy)]
enum BatchSize {
    /// 4096 tokens per batch: 32 at 128, 16 at 256, 8 at 512 (the notebook's choices).
    Auto,
    Rows(usize),
}

impl BatchSize {
    fn at(self, max_len: usize) -> usize {
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
struct Plan {
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
}

/// Rows of the ids file and the length they are padded to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlanBatch {
    len: usize,
    rows: Vec<usize>,
}

#[allow(clippy::too_many_arguments)]
fn make_plan(
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
    Ok(Plan { max_len, batch, padding, pad_multiple, seed, untimed, batches: pool })
}

#[derive(Args)]
struct ThroughputArgs {
    /// Models, comma-separated: distilbert (DistilBERT-base), bert (BERT-base), or paths of
    /// config.json files.
    #[arg(long, value_delimiter = ',', default_value = "distilbert")]
    arch: Vec<ModelChoice>,
    /// Tokens per row, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128")]
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
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first (plus one per new padded length, see `untimed` in the plan).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// The tokenized IMDB sample (`bertlab bench make-ids`).
    #[arg(long)]
    ids_file: PathBuf,
    /// Bucketed lengths are rounded up to a multiple of this (the trainer's default is 8).
    #[arg(long, default_value_t = 8)]
    pad_multiple: usize,
    /// Seed of the batch plans and of the initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Also time each phase of a step (upload, forward, readback, backward, grad norm,
    /// optimizer) in a second pass that syncs the device between phases.
    #[arg(long)]
    profile: bool,
    /// Read each step's logits back right after its backward, before the optimizer step,
    /// instead of in groups as the trainer does (bertlab_train::PendingLogits::for_training):
    /// measures what a per-step device→host sync costs.
    #[arg(long)]
    eager_readback: bool,
    /// Write the batch plans here (JSON lines), for scripts/torch_bench.py.
    #[arg(long)]
    plan_out: Option<PathBuf>,
    /// Only write the plans: no model, no device.
    #[arg(long, requires = "plan_out")]
    plan_only: bool,
    /// cpu, or cuda / cuda:N in a CUDA build.
    #[arg(long, default_value = "default")]
    device: String,
}

/// What one pass over a plan measured.
#[derive(Default)]
struct PassResult {
    seconds: f64,
    untimed_seconds: f64,
    skipped: usize,
    last_loss: f64,
    phases: Phases,
}

/// How a pass over a plan trains.
#[derive(Debug, Clone, Copy)]
struct PassOptions {
    precision: Precision,
    lr: f64,
    seed: u64,
    /// Sync and time each phase.
    profile: bool,
    /// Read each step's logits back right after its backward instead of in groups.
    eager_readback: bool,
}

fn run_plan(config: &ModelConfig, plan: &Plan, ids: &IdsFile, o: PassOptions, device: &Device) -> PassResult {
    let mut model = random_classifier(config, o.seed, device);
    let mut adam = Adam::<TrainBackend>::new(AdamSettings::hf_adamw(0.01), &model);
    let mut scaler = loss_scaler(o.precision);
    let mut result = PassResult::default();
    let mut phases = Phases::default();
    let k = config.num_labels();
    let mean_loss = |logits: &[f32], labels: &[u32]| {
        cross_entropy_rows(logits, labels, k).iter().sum::<f64>() / labels.len() as f64
    };
    // Logits (with their labels) read back in groups, as the trainer reads them.
    let mut pending = PendingLogits::<Backend, Vec<u32>>::for_training();
    sync(device);
    let mut started = Instant::now();
    for (i, b) in plan.batches.iter().enumerate() {
        if i == plan.untimed {
            sync(device);
            result.untimed_seconds = started.elapsed().as_secs_f64();
            phases = Phases::default();
            started = Instant::now();
        }
        let t = Instant::now();
        let (arrays, labels) = ids.pack(b, plan.max_len);
        let weight = scaler.scale() / labels.len() as f64;
        let (grads, logits) = if o.profile {
            phases.upload += t.elapsed().as_secs_f64();
            let (g, l) =
                profiled_forward_backward(&model, &arrays, &labels, weight, o.precision, device, &mut phases);
            (g, Some(l))
        } else {
            let (g, l) = forward_backward(&model, &arrays, &labels, weight, o.precision, device);
            if o.eager_readback {
                (g, Some(logits_to_vec(l)))
            } else {
                pending.push(l, labels.clone());
                if pending.due() {
                    if let Some((labels, host)) = pending.take().pop() {
                        result.last_loss = mean_loss(&host, &labels);
                    }
                }
                (g, None)
            }
        };
        let skipped;
        (model, skipped) = optimizer_step(
            &mut adam,
            &mut scaler,
            model,
            grads,
            o.lr,
            o.profile.then_some(&mut phases),
            device,
        );
        if i >= plan.untimed {
            result.skipped += usize::from(skipped);
            if let Some(logits) = logits {
                result.last_loss = mean_loss(&logits, &labels);
            }
        }
    }
    if let Some((labels, host)) = pending.take().pop() {
        result.last_loss = mean_loss(&host, &labels);
    }
    sync(device);
    result.seconds = started.elapsed().as_secs_f64();
    result.phases = phases;
    result
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn run_throughput(args: ThroughputArgs) -> anyhow::Result<()> {
    let ids = IdsFile::read(&args.ids_file)?;
    let mut plans = Vec::new();
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
    let device = device(&args.device)?;
    // A failed measurement (out of memory, a backend panic) is reported as a JSON line and
    // the next one runs: print panics as one line, not with a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let text = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("bench: panic: {}", text.lines().next().unwrap_or(""));
    }));
    for choice in &args.arch {
        for &precision in &args.precision {
            if let Err(e) = check_precision::<Backend>(&device, precision) {
                emit(
                    json!({"bench": "train-throughput", "model": choice.name, "precision": precision.as_str(),
                    "backend": BACKEND_NAME, "build": build_label(), "unsupported": true, "error": e.to_string()}),
                );
                continue;
            }
            for plan in &plans {
                let record = throughput_one(choice, plan, &ids, precision, &args, &device);
                emit(record);
                Backend::memory_cleanup(&device);
            }
        }
    }
    Ok(())
}

fn throughput_one(
    choice: &ModelChoice,
    plan: &Plan,
    ids: &IdsFile,
    precision: Precision,
    args: &ThroughputArgs,
    device: &Device,
) -> Value {
    let c = &choice.config;
    let mut record = json!({
        "bench": "train-throughput", "backend": BACKEND_NAME, "build": build_label(), "model": choice.name,
        "arch": c.architecture.model_type(), "max_len": plan.max_len, "batch": plan.batch,
        "padding": plan.padding.to_string(), "precision": precision.as_str(),
        "readback": if args.eager_readback { "eager" } else { "deferred" },
    });
    if plan.max_len > c.max_position_embeddings {
        record["error"] = json!(format!(
            "max_len {} > max_position_embeddings {}",
            plan.max_len, c.max_position_embeddings
        ));
        return record;
    }
    let timed = &plan.batches[plan.untimed..];
    let lengths = ids.lengths(plan.max_len);
    let real_tokens: u64 = timed.iter().flat_map(|b| &b.rows).map(|&r| lengths[r] as u64).sum();
    let padded_tokens: u64 = timed.iter().map(|b| (b.rows.len() * b.len) as u64).sum();
    let attn_sq_tokens: u64 = timed.iter().map(|b| (b.rows.len() * b.len * b.len) as u64).sum();
    let rows: usize = timed.iter().map(|b| b.rows.len()).sum();
    let distinct: BTreeSet<usize> = timed.iter().map(|b| b.len).collect();
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let o = PassOptions {
            precision,
            lr: args.lr,
            seed: args.seed,
            profile: false,
            eager_readback: args.eager_readback,
        };
        let pass = run_plan(c, plan, ids, o, device);
        let profile =
            args.profile.then(|| run_plan(c, plan, ids, PassOptions { profile: true, ..o }, device));
        (pass, profile)
    }));
    let (pass, profile) = match outcome {
        Ok(r) => r,
        Err(panic) => {
            let text = panic_text(&panic);
            record["error"] = json!(text.lines().next().unwrap_or("").chars().take(300).collect::<String>());
            record["out_of_memory"] = json!(is_out_of_memory(&text));
            return record;
        }
    };
    let s = pass.seconds;
    let tflops = train_flops(c, padded_tokens, attn_sq_tokens) / s / 1e12;
    let fields = json!({
        "steps": timed.len(), "untimed_steps": plan.untimed, "distinct_lengths": distinct.len(),
        "seconds": round(s, 4), "untimed_seconds": round(pass.untimed_seconds, 3),
        "total_seconds": round(started.elapsed().as_secs_f64(), 3),
        "step_ms": round(1e3 * s / timed.len() as f64, 3), "seq_per_s": round(rows as f64 / s, 3),
        "tokens_per_s": round(real_tokens as f64 / s, 1), "padded_tokens_per_s": round(padded_tokens as f64 / s, 1),
        "real_tokens": real_tokens, "padded_tokens": padded_tokens, "attn_sq_tokens": attn_sq_tokens,
        "layers": c.num_hidden_layers, "hidden": c.hidden_size, "matmul_params": matmul_params(c),
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

// ---------------------------------------------------------------------------------------------
// table

#[derive(Args)]
struct TableArgs {
    /// bertlab results: JSON lines of `bench train-throughput` (other lines are ignored).
    #[arg(long)]
    bertlab: PathBuf,
    /// PyTorch results: JSON lines of scripts/torch_bench.py (rows without one show n/a).
    #[arg(long)]
    torch: Option<PathBuf>,
    /// GPU name as nvidia-smi prints it, to look up its dense f16/bf16 peak for MFU.
    #[arg(long)]
    gpu: Option<String>,
    /// Dense f16/bf16 peak in TFLOP/s (overrides --gpu).
    #[arg(long)]
    peak_tflops: Option<f64>,
}

/// Dense (no sparsity) f16/bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets.
fn peak_tflops(gpu: &str) -> Option<f64> {
    let g = gpu.to_ascii_uppercase();
    let peak = if g.contains("H200") || g.contains("GH200") {
        989.0
    } else if g.contains("H100") || g.contains("H800") {
        if g.contains("PCIE") {
            756.0
        } else if g.contains("NVL") {
            835.0
        } else {
            989.0 // SXM
        }
    } else if g.contains("B200") {
        2250.0
    } else if g.contains("A100") || g.contains("A800") {
        312.0
    } else if g.contains("L40S") {
        362.0
    } else if g.contains("L4") {
        121.0
    } else {
        return None;
    };
    Some(peak)
}

fn read_records(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v["bench"] == "train-throughput")
        .collect())
}

type Key = (String, u64, u64, String, String);

fn key_of(v: &Value) -> Key {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    (s("model"), n("max_len"), n("batch"), s("padding"), s("precision"))
}

/// Achieved TFLOP/s of a record, from its token counts (the same formula for both sides).
fn record_tflops(v: &Value) -> Option<f64> {
    let n = |k: &str| v[k].as_f64();
    let flops = 6.0 * n("matmul_params")? * n("padded_tokens")?
        + 12.0 * n("layers")? * n("hidden")? * n("attn_sq_tokens")?;
    Some(flops / n("seconds")? / 1e12)
}

fn run_table(args: TableArgs) -> anyhow::Result<()> {
    let ours = read_records(&args.bertlab)?;
    let theirs: BTreeMap<Key, Value> = match &args.torch {
        Some(p) if p.is_file() => read_records(p)?.into_iter().map(|v| (key_of(&v), v)).collect(),
        _ => BTreeMap::new(),
    };
    let peak = args.peak_tflops.or_else(|| args.gpu.as_deref().and_then(peak_tflops));
    let mfu = |v: &Value, precision: &str| -> String {
        match (peak, record_tflops(v)) {
            (Some(peak), Some(t)) if precision != "f32" => format!("{:.1}%", 100.0 * t / peak),
            _ => "n/a".into(),
        }
    };
    let seq = |v: &Value| -> Option<f64> { v["seq_per_s"].as_f64().filter(|_| v.get("error").is_none()) };
    let cell = |v: Option<&Value>| -> String {
        match v {
            None => "n/a".into(),
            Some(v) => match seq(v) {
                Some(s) => format!("{s:.1}"),
                None if v["out_of_memory"] == true => "OOM".into(),
                None => "error".into(),
            },
        }
    };
    println!(
        "| model | max_len | batch | padding | precision | bertlab build | bertlab seq/s | torch seq/s | bertlab/torch | bertlab MFU | torch MFU |"
    );
    println!("|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|");
    // Ratios per bertlab build (a results file may hold several builds' rows).
    let mut ratios: BTreeMap<String, Vec<(Key, f64)>> = BTreeMap::new();
    // A precision the backend cannot compute in is one line under the table, not a row per shape.
    // (Older files lack the flag: such a record has an error and no shape.)
    let (unsupported, ours): (Vec<&Value>, Vec<&Value>) = ours
        .iter()
        .partition(|v| v["unsupported"] == true || (v.get("max_len").is_none() && v.get("error").is_some()));
    for v in ours {
        let key = key_of(v);
        let build = v["build"].as_str().or(v["backend"].as_str()).unwrap_or("?").to_string();
        let t = theirs.get(&key);
        let ratio = match (seq(v), t.and_then(seq)) {
            (Some(a), Some(b)) if b > 0.0 => {
                ratios.entry(build.clone()).or_default().push((key.clone(), a / b));
                format!("{:.2}×", a / b)
            }
            _ => "n/a".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            key.0,
            key.1,
            key.2,
            key.3,
            key.4,
            build,
            cell(Some(v)),
            cell(t),
            ratio,
            if seq(v).is_some() { mfu(v, &key.4) } else { "n/a".into() },
            t.filter(|t| seq(t).is_some()).map_or("n/a".into(), |t| mfu(t, &key.4)),
        );
        if let Some(e) = v["error"].as_str() {
            eprintln!("bertlab {build} {key:?}: {e}");
        }
        if let Some(e) = t.and_then(|t| t["error"].as_str()) {
            eprintln!("torch {key:?}: {e}");
        }
    }
    for v in unsupported {
        println!(
            "\n{} {}: not measured: {}",
            v["model"].as_str().unwrap_or("?"),
            v["precision"].as_str().unwrap_or("?"),
            v["error"].as_str().unwrap_or("unsupported")
        );
    }
    match peak {
        Some(p) => println!(
            "\nMFU: training FLOPs (6N + 12·L·d·s per padded token) / time / {p} TFLOP/s dense f16/bf16 peak."
        ),
        None => println!("\nMFU: n/a (no known GPU peak; pass --gpu NAME or --peak-tflops)."),
    }
    for (build, ratios) in &ratios {
        let geo = (ratios.iter().map(|(_, r)| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        let (worst, r) = ratios.iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("not empty");
        println!(
            "bertlab ({build}) / torch: geometric mean {geo:.2}× over {} rows; lowest {r:.2}× ({} {} {} {}).",
            ratios.len(),
            worst.0,
            worst.1,
            worst.3,
            worst.4
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bertlab_models::Architecture;

    #[test]
    fn base_configs_have_the_published_sizes() {
        let d: ModelChoice = "distilbert".parse().unwrap();
        let b: ModelChoice = "bert".parse().unwrap();
        assert_eq!(d.config.architecture, Architecture::DistilBert);
        assert_eq!(
            (d.config.hidden_size, d.config.num_hidden_layers, d.config.intermediate_size),
            (768, 6, 3072)
        );
        assert_eq!(
            (b.config.num_hidden_layers, b.config.type_vocab_size, b.config.vocab_size),
            (12, 2, 30522)
        );
        // 6 layers × (4·768² + 2·768·3072) + pre_classifier 768² + classifier 768·2.
        assert_eq!(matmul_params(&d.config), 6 * (4 * 589_824 + 2 * 2_359_296) + 589_824 + 1536);
        assert_eq!(matmul_params(&b.config), 12 * (4 * 589_824 + 2 * 2_359_296) + 589_824 + 1536);
        assert!("gpt2".parse::<ModelChoice>().unwrap_err().contains("config.json"));
    }

    #[test]
    fn flops_formula() {
        let d: ModelChoice = "distilbert".parse().unwrap();
        // One row of 128 tokens: 6N·128 + 12·6·768·128².
        let want = 6.0 * matmul_params(&d.config) as f64 * 128.0 + 12.0 * 6.0 * 768.0 * 128.0 * 128.0;
        assert_eq!(train_flops(&d.config, 128, 128 * 128), want);
    }

    fn ids_file(lengths: &[usize]) -> IdsFile {
        IdsFile {
            format: IDS_FORMAT.into(),
            source: "mem".into(),
            tokenizer: "mem".into(),
            split: "train".into(),
            seed: 0,
            max_len: 512,
            sep_id: 102,
            pad_id: 0,
            labels: (0..lengths.len()).map(|i| (i % 2) as u32).collect(),
            ids: lengths
                .iter()
                .map(|&n| {
                    let mut row = vec![101];
                    row.extend((0..n - 2).map(|i| 1000 + i as u32));
                    row.push(102);
                    row
                })
                .collect(),
        }
    }

    #[test]
    fn rows_are_head_truncated_with_sep() {
        let ids = ids_file(&[6, 3]);
        let mut out = Vec::new();
        ids.row_into(0, 4, &mut out);
        assert_eq!(out, vec![101, 1000, 1001, 102]);
        out.clear();
        ids.row_into(1, 4, &mut out);
        assert_eq!(out, vec![101, 1000, 102]);
        let (arrays, labels) = ids.pack(&PlanBatch { len: 4, rows: vec![1, 0] }, 4);
        assert_eq!(arrays.input_ids, vec![101, 1000, 102, 0, 101, 1000, 1001, 102]);
        assert_eq!(arrays.attention_mask, vec![1, 1, 1, 0, 1, 1, 1, 1]);
        assert_eq!(labels, vec![1, 0]);
    }

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

    #[test]
    fn errors_and_smoothing() {
        let e = errors(&[1.0, 2.0, 3.5], &[1.0, 2.0, 3.0]);
        assert_eq!(e.max_abs, 0.5);
        assert!((e.rel_l2 - 0.5 / 14f64.sqrt()).abs() < 1e-12);
        assert!(!errors(&[f32::NAN], &[1.0]).finite);
        assert_eq!(smooth(&[1.0, 3.0, 5.0], 2), vec![1.0, 2.0, 4.0]);
    }

    #[test]
    fn peaks() {
        assert_eq!(peak_tflops("NVIDIA H100 80GB HBM3"), Some(989.0));
        assert_eq!(peak_tflops("NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(peak_tflops("NVIDIA H200"), Some(989.0));
        assert_eq!(peak_tflops("Tesla T4"), None);
    }
}
