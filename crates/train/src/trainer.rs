//! The fine-tuning loop: data → tokens → model → epochs (train, validate, early stopping) →
//! restore best → test → `record.json` and `best/`.

use crate::checkpoint::{self, CheckpointError, CheckpointState};
use crate::device_fault::{panic_text, DeviceFault, FaultWatch};
use crate::fit::{fit, Resume};
use crate::predict::{evaluate, EvalSettings};
use crate::progress::ProgressMode;
use crate::readback::logits_to_vec;
use bertlab_data::{DataError, DataOptions, DatasetSource, RunSplits};
use bertlab_hub::{HubOptions, RepoKind, RepoRef};
use bertlab_models::{
    export_classifier, has_classifier_head, load_classifier, ModelConfig, ModelError, Precision,
};
use bertlab_run::format::hms;
use bertlab_run::record::peak_rss_bytes;
use bertlab_run::{
    align_labels, ClassCounts, DataSummary, Environment, InvalidSetting, LabelAlignment, RunRecord, RunSpec,
    RunStatus, FAILED_RECORD_FILE, RECORD_FILE,
};
use bertlab_tokenize::{EncodedTexts, TokenCache, TokenizeError, WordPieceTokenizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that can end a run; each names the flag, file, epoch or step at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] InvalidSetting),
    /// Loading or splitting the dataset failed.
    #[error(transparent)]
    Data(Box<DataError>),
    /// Tokenizing failed.
    #[error(transparent)]
    Tokenize(Box<TokenizeError>),
    /// Loading or exporting the model failed.
    #[error(transparent)]
    Model(Box<ModelError>),
    /// Half precision asked of a backend that cannot compute in it.
    #[error(
        "--precision {precision}: the {backend} backend cannot compute in {precision} ({detail}); \
         use --precision f32, or a build whose backend supports it (the default cpu build's burn-flex, or --features cuda)"
    )]
    UnsupportedPrecision {
        /// The precision asked for.
        precision: Precision,
        /// `B::name()`.
        backend: String,
        /// What the probe found.
        detail: String,
    },
    /// The training loss became NaN or infinite.
    #[error(
        "training loss is {value} at epoch {epoch}, step {step} (lr {lr:e}): the run diverged; \
         lower --lr or set --grad-clip 1.0"
    )]
    NonFiniteLoss {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based batch within the epoch.
        step: usize,
        /// The loss value.
        value: f64,
        /// The learning rate of the step.
        lr: f64,
    },
    /// The device ran out of memory.
    #[error(
        "out of memory at --batch {batch} --max-len {max_len} ({detail}); retry with --batch {half} \
         (and --accum {accum2} to keep the effective batch)"
    )]
    OutOfMemory {
        /// Batch size of the run.
        batch: usize,
        /// max_len of the run.
        max_len: usize,
        /// Half the batch.
        half: usize,
        /// Accumulation that keeps batch × accum.
        accum2: usize,
        /// First line of the backend's message.
        detail: String,
    },
    /// max_len beyond what the model's position embeddings cover.
    #[error("--max-len {max_len} exceeds max_position_embeddings {limit} of {model}")]
    MaxLenTooLong {
        /// Asked.
        max_len: usize,
        /// The model's limit.
        limit: usize,
        /// The model.
        model: String,
    },
    /// The checkpoint's classification head was trained on other classes than the data's.
    #[error(
        "--model {model} already has a classification head, for other classes than the data's: {message}; \
         fine-tune from the pre-trained checkpoint it came from instead"
    )]
    HeadClasses {
        /// The model.
        model: String,
        /// How the classes differ.
        message: String,
    },
    /// A split has no rows.
    #[error("the {split} split is empty at --subset {subset}: raise --subset")]
    EmptySplit {
        /// `train`, `val` or `test`.
        split: &'static str,
        /// The subset.
        subset: f64,
    },
    /// Writing the record failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The backend panicked.
    #[error("the training crashed: {0}")]
    Panic(String),
    /// A thread of the backend (a GPU's device thread) panicked: what the run computed after
    /// that is not to be trusted.
    #[error(
        "the backend's thread {thread} failed ({count} panic(s)): {message}; the run's numbers after it are \
         not valid"
    )]
    DeviceFault {
        /// The thread's name.
        thread: String,
        /// The first line of its panic.
        message: String,
        /// Panics of backend threads during the run.
        count: u64,
    },
    /// A checkpoint to resume from cannot be used.
    #[error("{0}; to start the run over, pass --fresh")]
    Checkpoint(#[from] CheckpointError),
    /// The run diverged: its steps overflow or its losses are not finite.
    #[error("the run diverged at epoch {epoch}, step {step}: {detail}")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based batch within the epoch.
        step: usize,
        /// What was seen and what to do.
        detail: String,
    },
    /// The validation loss is NaN or infinite.
    #[error(
        "validation loss is {value} after epoch {epoch}: the run diverged; lower --lr or set --grad-clip 1.0"
    )]
    NonFiniteValidation {
        /// 1-based epoch.
        epoch: usize,
        /// The loss.
        value: f64,
    },
    /// A number the record would report is NaN or infinite.
    #[error("the run produced a non-finite {field} ({value}); it is not recorded as completed")]
    NonFiniteResult {
        /// The record's field.
        field: String,
        /// The value.
        value: f64,
    },
    /// `--out` already holds a completed run.
    #[error(
        "{path} exists: --out {out} already holds a completed run; choose another --out, or pass \
         --overwrite to replace it", path = path.display(), out = out.display()
    )]
    OutHoldsRun {
        /// Its record.
        path: PathBuf,
        /// The run directory.
        out: PathBuf,
    },
    /// Another training writes to the same `--out`.
    #[error(
        "another bertlab train{holder} is writing to --out {out}; wait for it or choose another --out",
        out = out.display()
    )]
    OutBusy {
        /// The run directory.
        out: PathBuf,
        /// ` (pid N)` when known.
        holder: String,
    },
}

impl From<DataError> for TrainError {
    fn from(e: DataError) -> Self {
        TrainError::Data(Box::new(e))
    }
}

impl From<TokenizeError> for TrainError {
    fn from(e: TokenizeError) -> Self {
        TrainError::Tokenize(Box::new(e))
    }
}

impl From<ModelError> for TrainError {
    fn from(e: ModelError) -> Self {
        TrainError::Model(Box::new(e))
    }
}

/// How [`train`] reports and where it looks for files; the spec holds everything else.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Backend name for the record, e.g. `cpu (burn-flex)`.
    pub backend_name: String,
    /// Progress display.
    pub progress: ProgressMode,
    /// Hub lookups (`offline` is also switched on by `spec.offline`).
    pub hub: HubOptions,
    /// Skip exporting `best/` (tests that only need the record).
    pub skip_export: bool,
    /// Discard a checkpoint of an interrupted run in `--out` and start over (default: resume).
    pub fresh: bool,
    /// Replace a completed run in `--out` (default: refuse).
    pub overwrite: bool,
}

/// Fail early, with a clear error, when `precision` is half and the backend cannot compute in
/// it: it reports no support, or a tiny cast round trip panics or returns wrong values.
pub fn check_precision<B: Backend>(device: &B::Device, precision: Precision) -> Result<(), TrainError> {
    if precision == Precision::F32 {
        return Ok(());
    }
    // The one mapping of a precision to Burn's dtypes.
    let float_dtype = bertlab_models::float_dtype(precision);
    let dtype = DType::from(float_dtype);
    let unsupported =
        |detail: String| TrainError::UnsupportedPrecision { precision, backend: B::name(device), detail };
    if !B::supports_dtype(device, dtype) {
        return Err(unsupported(format!("the backend reports no {dtype:?} support")));
    }
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let x = Tensor::<B, 2>::from_data(TensorData::new(vec![1.5f32, -2.0, 0.25, 3.0], [2, 2]), device);
        let h = x.cast(float_dtype);
        let y = h.clone().matmul(h).cast(FloatDType::F32);
        logits_to_vec(y)
    }));
    match probe {
        Ok(v) if v == [1.75, -9.0, 1.125, 8.5] => Ok(()),
        Ok(v) => Err(unsupported(format!("a {dtype:?} matmul probe returned {v:?}"))),
        Err(p) => Err(unsupported(format!("a {dtype:?} matmul probe panicked: {}", panic_text(&*p)))),
    }
}

/// True for the messages CUDA/CubeCL and allocators give when memory runs out.
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out of memory")
        || m.contains("out-of-memory")
        || m.contains("outofmemory")
        || m.contains("memory allocation of")
        // CubeCL's CUDA allocator (`can't allocate buffer of size: …`), on its device thread
        || m.contains("can't allocate buffer")
}

/// The error for a panic of a backend thread during the run `spec`: out of memory (exit code
/// 3, which the orchestrator retries with half the batch) or a device fault.
pub(crate) fn fault_error(spec: &RunSpec, fault: &DeviceFault) -> TrainError {
    if fault.is_out_of_memory() {
        TrainError::OutOfMemory {
            batch: spec.batch,
            max_len: spec.max_len,
            half: (spec.batch / 2).max(1),
            accum2: spec.accum * 2,
            detail: fault.first_line(),
        }
    } else {
        TrainError::DeviceFault {
            thread: fault.thread.clone(),
            message: fault.first_line(),
            count: fault.count,
        }
    }
}

/// Train, validate, test and export one run described by `spec` on `device`.
///
/// Writes `<spec.out>/record.json` and `<spec.out>/best/` on success; on failure writes
/// `<spec.out>/failed-record.json` (the same schema, `status: failed`, the epochs done so far)
/// and returns the error. Panics of the backend are caught and returned as errors (an
/// out-of-memory panic as [`TrainError::OutOfMemory`]).
pub fn train<B: AutodiffBackend>(
    spec: &RunSpec,
    device: &B::Device,
    options: &TrainOptions,
) -> Result<RunRecord, TrainError> {
    spec.validate()?;
    // One `bertlab train` per run directory at a time.
    let _lock = bertlab_run::lock::DirLock::acquire(&spec.out, ".lock").map_err(|e| match e {
        bertlab_run::lock::LockError::Busy { holder, .. } => TrainError::OutBusy {
            out: spec.out.clone(),
            holder: holder.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        },
        bertlab_run::lock::LockError::Io { path, source } => TrainError::Io { path, source },
    })?;
    let record_path = spec.out.join(RECORD_FILE);
    if record_path.exists() {
        if !options.overwrite {
            return Err(TrainError::OutHoldsRun { path: record_path, out: spec.out.clone() });
        }
        // Asked to replace the run: its record goes first, so that no moment shows the old
        // record beside new weights.
        std::fs::remove_file(&record_path)
            .map_err(|source| TrainError::Io { path: record_path.clone(), source })?;
    }
    let checkpoint_dir = checkpoint::checkpoint_dir(&spec.out);
    if options.fresh && checkpoint_dir.exists() {
        std::fs::remove_dir_all(&checkpoint_dir)
            .map_err(|source| TrainError::Io { path: checkpoint_dir.clone(), source })?;
    }
    let resume =
        CheckpointState::read(&checkpoint_dir)?.map(|state| Resume { state, dir: checkpoint_dir.clone() });
    let environment = Environment::capture(
        &options.backend_name,
        &format!("{device:?}"),
        &spec.precision.to_string(),
        spec.seed,
    );
    let mut record = RunRecord::new(spec.clone(), environment);
    let started = Instant::now();
    let faults = FaultWatch::start();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_inner::<B>(spec, device, options, &mut record, resume)
    }));
    let outcome = match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = panic_text(&*panic);
            if is_out_of_memory(&message) {
                let detail = message
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect();
                Err(TrainError::OutOfMemory {
                    batch: spec.batch,
                    max_len: spec.max_len,
                    half: (spec.batch / 2).max(1),
                    accum2: spec.accum * 2,
                    detail,
                })
            } else {
                Err(TrainError::Panic(message))
            }
        }
    };
    // A panic of a backend thread (CUDA out of memory on CubeCL's device thread) overrides
    // whatever the run went on to compute or report (NaN losses, "diverged").
    let outcome = match faults.fault() {
        Some(fault) => Err(fault_error(spec, &fault)),
        None => outcome,
    };
    record.timings.total_seconds = started.elapsed().as_secs_f64();
    record.peak_rss_bytes = peak_rss_bytes();
    // The data files must still be what the run read: a file replaced during the run would leave
    // a record that describes other data.
    let outcome = outcome.and_then(|()| {
        record
            .data
            .files
            .iter()
            .try_for_each(|f| f.check_unchanged())
            .map_err(|e| TrainError::Data(Box::new(e.into())))
    });
    // No number that was not measured is reported: a non-finite one fails the run.
    let outcome = outcome.and_then(|()| match record.first_non_finite() {
        Some((field, value)) => Err(TrainError::NonFiniteResult { field, value }),
        None => Ok(()),
    });
    match outcome {
        Ok(()) => {
            record.status = RunStatus::Completed;
            let path = spec.out.join(RECORD_FILE);
            record.write_atomic(&path).map_err(|source| TrainError::Io { path, source })?;
            // The run is complete: its checkpoint and an earlier failure's record are obsolete
            // (best/ stays: it is the run's model).
            let _ = std::fs::remove_dir_all(&checkpoint_dir);
            let _ = std::fs::remove_file(spec.out.join(FAILED_RECORD_FILE));
            Ok(record)
        }
        Err(err) => {
            record.error = Some(err.to_string());
            // Best effort: the error itself is what the caller needs.
            let _ = record.write_atomic(&spec.out.join(FAILED_RECORD_FILE));
            Err(err)
        }
    }
}

/// The three encoded splits and their labels.
pub(crate) struct Encoded {
    pub train: EncodedTexts,
    pub val: EncodedTexts,
    pub test: EncodedTexts,
    pub train_labels: Vec<u32>,
    pub val_labels: Vec<u32>,
    pub test_labels: Vec<u32>,
}

fn run_inner<B: AutodiffBackend>(
    spec: &RunSpec,
    device: &B::Device,
    options: &TrainOptions,
    record: &mut RunRecord,
    resume: Option<Resume>,
) -> Result<(), TrainError> {
    let precision = spec.precision;
    check_precision::<B>(device, precision)?;
    let hub = HubOptions { offline: options.hub.offline || spec.offline, ..options.hub.clone() };
    let quiet = options.progress == ProgressMode::Quiet;
    let say = |msg: String| {
        if !quiet {
            eprintln!("{msg}");
        }
    };

    // Data: the dataset's splits, then the run's rows (the notebook's recipe on all of them
    // joined, or the dataset's own splits), as positions in the joined table.
    let t = Instant::now();
    let source = DatasetSource::parse(&spec.source)?;
    let data_options = DataOptions {
        text_column: spec.text_column.clone(),
        label_column: spec.label_column.clone(),
        config: spec.dataset_config.clone(),
    };
    let splits = source.load_splits(&data_options, &hub)?;
    let split = RunSplits::new(&splits, spec.splits, spec.subset, spec.seed)?;
    let mut data = splits.into_joined();
    for (name, rows) in [("train", &split.train), ("val", &split.val), ("test", &split.test)] {
        if rows.is_empty() {
            return Err(TrainError::EmptySplit { split: name, subset: spec.subset });
        }
    }
    record.timings.data_seconds = t.elapsed().as_secs_f64();

    // Classes: a checkpoint that already has a classification head keeps its classes, matched
    // to the data's by name; one without gets a head sized from the data.
    let repo = RepoRef::parse(&spec.model, RepoKind::Model);
    let model_config = ModelConfig::from_file(&repo.file("config.json", &hub).map_err(ModelError::from)?)
        .map_err(ModelError::from)?;
    let head = head_classes(&repo, &hub, &model_config, &data.class_names)?;
    if let Some(note) = head.alignment.as_ref().and_then(|a| a.note(&head.names, &data.class_names)) {
        say(format!("note: {note}"));
    }
    if let Some(LabelAlignment::ByName(map)) = &head.alignment {
        for label in &mut data.labels {
            *label = map[*label as usize];
        }
        data.class_names = head.names;
    }
    record.data = DataSummary {
        source: source.to_string(),
        total_rows: data.len(),
        pool: split.pool.len(),
        train: split.train.len(),
        val: split.val.len(),
        test: split.test.len(),
        class_names: data.class_names.clone(),
        files: data.sources.clone(),
        class_counts: ClassCounts {
            train: data.class_counts_of(&split.train),
            val: data.class_counts_of(&split.val),
            test: data.class_counts_of(&split.test),
        },
        ..DataSummary::default()
    };
    say(format!(
        "Train: {}  Val: {}  Test: {}  (pool {} of {}; {} splits; {} classes)",
        split.train.len(),
        split.val.len(),
        split.test.len(),
        split.pool.len(),
        data.len(),
        spec.splits,
        data.class_names.len()
    ));
    if let Some(imbalance) = record.data.class_counts.train_imbalance().filter(|&r| r >= 1.5) {
        say(format!(
            "note: the classes are imbalanced ({imbalance:.1}:1 largest to smallest in train): \
             compare macro-F1 with accuracy"
        ));
    }

    // Tokens.
    let t = Instant::now();
    let tokenizer = WordPieceTokenizer::from_repo(&repo, &hub)?;
    // Before the whole dataset is tokenized: a tokenizer whose ids the model has no embedding for
    // would only fail (or, on a GPU, read garbage) at the first batch, and a max_len beyond the
    // model's positions or the tokenizer's limit only after every split is tokenized.
    bertlab_models::check_tokenizer_fits(&model_config, tokenizer.id_bound(), tokenizer.source())
        .map_err(ModelError::from)?;
    let positions = Some(model_config.max_position_embeddings);
    bertlab_tokenize::check_max_len(
        &repo.display_name(),
        spec.max_len,
        positions,
        tokenizer.model_max_length(),
    )
    .map_err(TokenizeError::from)?;
    let encode = |rows: &[usize]| -> Result<EncodedTexts, TokenizeError> {
        let texts: Vec<&str> = rows.iter().map(|&r| data.texts[r].as_str()).collect();
        match &spec.cache_dir {
            Some(dir) => {
                TokenCache::new(dir).encode_all(&tokenizer, &texts, spec.max_len, spec.truncation, !quiet)
            }
            None => tokenizer.encode_all(&texts, spec.max_len, spec.truncation, !quiet),
        }
    };
    let labels_of = |rows: &[usize]| rows.iter().map(|&r| data.labels[r]).collect::<Vec<u32>>();
    let enc = Encoded {
        train: encode(&split.train)?,
        val: encode(&split.val)?,
        test: encode(&split.test)?,
        train_labels: labels_of(&split.train),
        val_labels: labels_of(&split.val),
        test_labels: labels_of(&split.test),
    };
    record.data.train_truncated = enc.train.seq_lens().filter(|&l| l >= spec.max_len).count();
    record.timings.tokenize_seconds = t.elapsed().as_secs_f64();

    // Model: Burn's RNG (dropout) and the head initialisation both come from the seed.
    let t = Instant::now();
    B::seed(device, spec.seed);
    let (model, _, report) = load_classifier::<B>(&repo, &hub, &data.class_names, spec.seed, device)?;
    if !report.initialised.is_empty() {
        say(format!("Initialised from seed {}: {}", spec.seed, report.initialised.join(", ")));
    }
    record.timings.model_load_seconds = t.elapsed().as_secs_f64();

    // Fit (the fit times itself: a resumed run adds the time of the epochs done before).
    let eval = EvalSettings {
        batch: spec.eval_batch_size(),
        padding: spec.padding,
        pad_multiple: spec.pad_multiple,
        precision,
        pad_id: tokenizer.pad_id(),
    };
    if let Some(r) = &resume {
        check_resumable(spec, record, r)?;
        // Said even with --quiet: what the run's record will hold depends on it.
        eprintln!(
            "Resuming after epoch {} of {} from {}",
            r.state.epochs.len(),
            spec.epochs,
            r.dir.display()
        );
    }
    let fitted = fit::<B>(spec, model, &enc, &eval, device, options.progress, record, resume)?;

    // Test the final (restored) weights, as the notebook's `model.predict(X_te)`.
    let t = Instant::now();
    let test = evaluate(&fitted, &enc.test, &enc.test_labels, &eval, device);
    record.timings.test_seconds = t.elapsed().as_secs_f64();
    record.timings.elapsed_seconds = record.timings.fit_seconds + record.timings.test_seconds;
    say(format!(
        "Validation acc (best epoch): {}\nTest accuracy: {:.3}   Test F1: {:.3}\nConfusion matrix: {:?}\nElapsed time: {}",
        record.val_acc_at_min_val_loss.map_or("n/a".into(), |a| format!("{a:.3}")),
        test.accuracy,
        test.f1,
        test.confusion,
        hms(record.timings.elapsed_seconds)
    ));
    record.test = Some(test);

    if !options.skip_export {
        let t = Instant::now();
        let best_dir = spec.out.join("best");
        let tokenizer_dir = tokenizer.source().parent().map(Path::to_path_buf);
        export_classifier(&fitted, fitted.config(), &best_dir, tokenizer_dir.as_deref())?;
        record.timings.export_seconds = t.elapsed().as_secs_f64();
        record.best_dir = Some(best_dir);
    }
    Ok(())
}

/// The classes a run trains on.
struct HeadClasses {
    /// Class names in the order of the model's outputs.
    names: Vec<String>,
    /// How the data's labels map onto a head the checkpoint already has (`None`: it has none).
    alignment: Option<LabelAlignment>,
}

/// A checkpoint with its own classification head (a fine-tuned model) keeps its classes: the
/// data's must be the same, matched by name (or by position where one side has only generic
/// names). A checkpoint without one gets a head of the data's classes.
fn head_classes(
    repo: &RepoRef,
    hub: &HubOptions,
    config: &ModelConfig,
    data: &[String],
) -> Result<HeadClasses, TrainError> {
    if !has_classifier_head(repo, hub)? {
        return Ok(HeadClasses { names: data.to_vec(), alignment: None });
    }
    match align_labels(&config.labels, data) {
        Ok(LabelAlignment::ByName(map)) => {
            Ok(HeadClasses { names: config.labels.clone(), alignment: Some(LabelAlignment::ByName(map)) })
        }
        Ok(alignment) => Ok(HeadClasses { names: data.to_vec(), alignment: Some(alignment) }),
        Err(message) => Err(TrainError::HeadClasses { model: repo.display_name(), message }),
    }
}

/// The checkpoint in `resume` was written by this very run: the same settings and the same
/// data (split sizes and classes).
fn check_resumable(spec: &RunSpec, record: &RunRecord, resume: &Resume) -> Result<(), TrainError> {
    let path = resume.dir.join("state.json");
    let mismatch = |message: String| {
        TrainError::Checkpoint(CheckpointError {
            path: path.clone(),
            message: format!("was written by another run ({message})"),
        })
    };
    if let Some(difference) = checkpoint::spec_difference(spec, &resume.state.spec) {
        return Err(mismatch(difference));
    }
    let (d, c) = (&record.data, &resume.state.data);
    if (d.total_rows, d.train, d.val, d.test, &d.class_names)
        != (c.total_rows, c.train, c.val, c.test, &c.class_names)
    {
        return Err(mismatch(format!(
            "the data gives {} train / {} val / {} test rows of {} classes, the checkpoint's {} / {} / {} of {}",
            d.train,
            d.val,
            d.test,
            d.class_names.len(),
            c.train,
            c.val,
            c.test,
            c.class_names.len()
        )));
    }
    if resume.state.epochs.len() >= spec.epochs {
        return Err(mismatch(format!("it has {} epochs done of {}", resume.state.epochs.len(), spec.epochs)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_messages() {
        assert!(is_out_of_memory("An out-of-memory error happened during launch\nCaused by: ..."));
        assert!(is_out_of_memory("CUDA_ERROR_OUT_OF_MEMORY: out of memory"));
        assert!(!is_out_of_memory("shape mismatch"));
        // What CubeCL's CUDA device thread panicked with on the H200 (issue 13).
        let device_oom =
            "called `Result::unwrap()` on an `Err` value: can't allocate buffer of size: 37527470080";
        assert!(is_out_of_memory(device_oom));
        let spec = RunSpec { batch: 65536, max_len: 512, accum: 1, ..RunSpec::default() };
        let fault = DeviceFault { thread: "DSD-0-0".into(), message: device_oom.into(), count: 2733 };
        let e = fault_error(&spec, &fault);
        assert!(matches!(e, TrainError::OutOfMemory { batch: 65536, half: 32768, accum2: 2, .. }), "{e:?}");
        assert!(e.to_string().contains("out of memory at --batch 65536 --max-len 512"), "{e}");
        let other = DeviceFault { thread: "DSD-0-0".into(), message: "index out of bounds".into(), count: 1 };
        let e = fault_error(&spec, &other);
        assert!(
            matches!(e, TrainError::DeviceFault { .. }) && !e.to_string().contains("out of memory"),
            "{e}"
        );
        let e = TrainError::OutOfMemory { batch: 32, max_len: 512, half: 16, accum2: 2, detail: "x".into() };
        let msg = e.to_string();
        assert!(
            msg.contains("out of memory")
                && msg.contains("--batch 32")
                && msg.contains("--max-len 512")
                && !msg.contains('\n'),
            "{msg}"
        );
    }

    #[test]
    fn flex_computes_in_half_precision() {
        let device = Default::default();
        for p in [Precision::F32, Precision::F16, Precision::BF16] {
            check_precision::<burn::backend::Autodiff<burn::backend::Flex>>(&device, p).unwrap();
        }
    }

    #[test]
    fn ndarray_like_refusal_is_clear() {
        let e = TrainError::UnsupportedPrecision {
            precision: Precision::F16,
            backend: "ndarray".into(),
            detail: "d".into(),
        };
        assert!(e.to_string().starts_with("--precision f16: the ndarray backend cannot compute in f16"));
    }
}
