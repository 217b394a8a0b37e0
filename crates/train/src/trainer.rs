//! The fine-tuning loop: data → tokens → model → epochs (train, validate, early stopping) →
//! restore best → test → `record.json` and `best/`.

use crate::batching::{padding_stats, BatchArrays, LengthBuckets};
use crate::early_stopping::EarlyStopping;
use crate::metrics::{argmax_rows, cross_entropy_rows};
use crate::optim::AdamSettings;
use crate::predict::{evaluate, metrics_from_logits, predict_logits, EvalSettings};
use crate::progress::{EpochProgress, ProgressMode};
use crate::readback::{logits_to_vec, PendingLogits};
use crate::schedule::LrSchedule;
use crate::step::TrainStep;
use bertlab_data::rng::Pcg64;
use bertlab_data::{DataError, DatasetSource, NotebookSplit};
use bertlab_hub::{HubOptions, RepoKind, RepoRef};
use bertlab_models::{export_classifier, load_classifier, ModelError, Precision, TextClassifier};
use bertlab_run::format::hms;
use bertlab_run::record::peak_rss_bytes;
use bertlab_run::{
    val_acc_at_min_val_loss, DataSummary, Environment, EpochRecord, InvalidSetting, RunRecord, RunSpec,
    RunStatus, Timings, FAILED_RECORD_FILE, RECORD_FILE, SCHEMA_VERSION,
};
use bertlab_tokenize::{EncodedTexts, TokenCache, TokenizeError, WordPieceTokenizer};
use burn::module::AutodiffModule;
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
}

/// Fail early, with a clear error, when `precision` is half and the backend cannot compute in
/// it: it reports no support, or a tiny cast round trip panics or returns wrong values.
pub fn check_precision<B: Backend>(device: &B::Device, precision: Precision) -> Result<(), TrainError> {
    let (dtype, float_dtype, spec) = match precision {
        Precision::F32 => return Ok(()),
        Precision::F16 => (DType::F16, FloatDType::F16, precision),
        Precision::BF16 => (DType::BF16, FloatDType::BF16, precision),
    };
    let unsupported = |detail: String| TrainError::UnsupportedPrecision {
        precision: spec,
        backend: B::name(device),
        detail,
    };
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
        Err(p) => Err(unsupported(format!("a {dtype:?} matmul probe panicked: {}", panic_message(&p)))),
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// True for the messages CUDA/CubeCL and allocators give when memory runs out.
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out of memory")
        || m.contains("out-of-memory")
        || m.contains("outofmemory")
        || m.contains("memory allocation of")
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
    let mut record = RunRecord {
        schema_version: SCHEMA_VERSION,
        status: RunStatus::Failed,
        error: None,
        spec: spec.clone(),
        environment: Environment::capture(
            &options.backend_name,
            &format!("{device:?}"),
            &spec.precision.to_string(),
            spec.seed,
        ),
        data: DataSummary::default(),
        epochs: Vec::new(),
        best_epoch: None,
        stopped_early: false,
        restored_epoch: None,
        val_acc_at_min_val_loss: None,
        test: None,
        timings: Timings::default(),
        peak_rss_bytes: None,
        best_dir: None,
    };
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_inner::<B>(spec, device, options, &mut record)
    }));
    let outcome = match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = panic_message(&panic);
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
    record.timings.total_seconds = started.elapsed().as_secs_f64();
    record.peak_rss_bytes = peak_rss_bytes();
    match outcome {
        Ok(()) => {
            record.status = RunStatus::Completed;
            let path = spec.out.join(RECORD_FILE);
            record.write_atomic(&path).map_err(|source| TrainError::Io { path, source })?;
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
struct Encoded {
    train: EncodedTexts,
    val: EncodedTexts,
    test: EncodedTexts,
    train_labels: Vec<u32>,
    val_labels: Vec<u32>,
    test_labels: Vec<u32>,
}

fn run_inner<B: AutodiffBackend>(
    spec: &RunSpec,
    device: &B::Device,
    options: &TrainOptions,
    record: &mut RunRecord,
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

    // Data: the notebook's joined train+test table and its stratified splits.
    let t = Instant::now();
    let source = DatasetSource::parse(&spec.source)?;
    let data = source.load(&hub)?;
    let split = NotebookSplit::new(&data.labels, spec.subset, spec.seed)?;
    for (name, rows) in [("train", &split.train), ("val", &split.val), ("test", &split.test)] {
        if rows.is_empty() {
            return Err(TrainError::EmptySplit { split: name, subset: spec.subset });
        }
    }
    record.data = DataSummary {
        source: source.to_string(),
        total_rows: data.len(),
        pool: split.pool.len(),
        train: split.train.len(),
        val: split.val.len(),
        test: split.test.len(),
        class_names: data.class_names.clone(),
        ..DataSummary::default()
    };
    record.timings.data_seconds = t.elapsed().as_secs_f64();
    say(format!(
        "Train: {}  Val: {}  Test: {}  (pool {} of {})",
        split.train.len(),
        split.val.len(),
        split.test.len(),
        split.pool.len(),
        data.len()
    ));

    // Tokens.
    let t = Instant::now();
    let repo = RepoRef::parse(&spec.model, RepoKind::Model);
    let tokenizer = WordPieceTokenizer::from_repo(&repo, &hub)?;
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
    let (model, config, report) = load_classifier::<B>(&repo, &hub, &data.class_names, spec.seed, device)?;
    if spec.max_len > config.max_position_embeddings {
        return Err(TrainError::MaxLenTooLong {
            max_len: spec.max_len,
            limit: config.max_position_embeddings,
            model: repo.display_name(),
        });
    }
    if !report.initialised.is_empty() {
        say(format!("Initialised from seed {}: {}", spec.seed, report.initialised.join(", ")));
    }
    record.timings.model_load_seconds = t.elapsed().as_secs_f64();

    // Fit.
    let t = Instant::now();
    let eval = EvalSettings {
        batch: spec.eval_batch,
        padding: spec.padding,
        pad_multiple: spec.pad_multiple,
        precision,
        pad_id: tokenizer.pad_id(),
    };
    let fitted = fit::<B>(spec, model, &enc, &eval, device, options.progress, record)?;
    record.timings.fit_seconds = t.elapsed().as_secs_f64();

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

/// All epochs; returns the inference module the run ends with (restored per policy) and fills
/// the record's epochs, best/restored epoch, early-stopping flag and headline.
fn fit<B: AutodiffBackend>(
    spec: &RunSpec,
    model: TextClassifier<B>,
    enc: &Encoded,
    eval: &EvalSettings,
    device: &B::Device,
    progress: ProgressMode,
    record: &mut RunRecord,
) -> Result<TextClassifier<B::InnerBackend>, TrainError> {
    let precision = eval.precision;
    let num_classes = model.config().num_labels();
    let lengths: Vec<usize> = enc.train.seq_lens().collect();
    let buckets = LengthBuckets::new(spec.batch, spec.padding, spec.pad_multiple, spec.max_len);
    let batches_per_epoch = lengths.len().div_ceil(spec.batch);
    let steps_per_epoch = batches_per_epoch.div_ceil(spec.accum) as u64;
    let schedule =
        LrSchedule::new(spec.schedule, spec.lr, steps_per_epoch * spec.epochs as u64, spec.warmup_ratio);
    let optimizer = AdamSettings::for_kind(spec.optimizer, spec.weight_decay);
    let mut trainer = TrainStep::new(model, optimizer, schedule, spec.grad_clip, precision);
    let dynamic_scale = trainer.scaler().is_dynamic();
    let mut early = EarlyStopping::new(spec.patience);
    let mut rng = Pcg64::new(spec.seed);
    let mut best: Option<TextClassifier<B::InnerBackend>> = None;
    let mut last_epoch = 0;

    for epoch in 0..spec.epochs {
        last_epoch = epoch;
        let batches = buckets.epoch(&lengths, &mut rng);
        let padding = padding_stats(&batches, &lengths);
        if epoch == 0 {
            record.data.train_padding = padding;
        }
        let mut bar = EpochProgress::new(progress, epoch + 1, spec.epochs, batches.len() as u64);
        let started = Instant::now();
        let mut tally = TrainTally::default();
        let mut pending = PendingLogits::<B::InnerBackend, BatchTag>::for_training();
        let (mut steps, mut skipped, mut lr) = (0u64, 0u64, trainer.next_lr());
        let mut step_in_epoch = 0usize;
        for group in batches.chunks(spec.accum) {
            let packed: Vec<(BatchArrays, Vec<u32>)> = group
                .iter()
                .map(|batch| {
                    let arrays =
                        BatchArrays::pack(batch, eval.pad_id, |r, out| enc.train.extend_row_into(r, out));
                    let labels: Vec<u32> = batch.rows.iter().map(|&r| enc.train_labels[r]).collect();
                    (arrays, labels)
                })
                .collect();
            let micro: Vec<(&BatchArrays, &[u32])> = packed.iter().map(|(a, l)| (a, l.as_slice())).collect();
            let outcome = trainer.step(&micro, device, None);
            lr = outcome.lr;
            for (logits, (_, labels)) in outcome.logits.into_iter().zip(packed) {
                step_in_epoch += 1;
                pending.push(logits, BatchTag { labels, step: step_in_epoch, lr });
            }
            if outcome.skipped {
                skipped += 1;
            } else {
                steps += 1;
            }
            if pending.due() {
                tally.read(&mut pending, &mut bar, num_classes, dynamic_scale, epoch)?;
            }
        }
        tally.read(&mut pending, &mut bar, num_classes, dynamic_scale, epoch)?;
        B::sync(device).ok();
        let train_seconds = started.elapsed().as_secs_f64();
        let TrainTally { loss_sum, correct, seen } = tally;

        let started = Instant::now();
        let inner = trainer.model().valid();
        let val_logits = predict_logits(&inner, &enc.val, eval, device);
        let val = metrics_from_logits(&val_logits, &enc.val_labels, num_classes);
        let val_seconds = started.elapsed().as_secs_f64();
        let val_loss = val.loss.unwrap_or(f64::NAN);
        let epoch_record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_acc: val.accuracy,
            lr,
            steps,
            skipped_steps: skipped,
            loss_scale: trainer.scaler().scale(),
            train_seconds,
            val_seconds,
            train_seq_per_s: seen as f64 / train_seconds,
            train_tokens_per_s: padding.real_tokens as f64 / train_seconds,
            train_padded_tokens_per_s: padding.padded_tokens as f64 / train_seconds,
        };
        bar.finish(&format!(
            "- {} - acc: {:.4} - loss: {:.4} - val_acc: {:.4} - val_loss: {:.4} - {:.1} seq/s",
            hms(train_seconds + val_seconds),
            epoch_record.train_acc,
            epoch_record.train_loss,
            epoch_record.val_acc,
            epoch_record.val_loss,
            epoch_record.train_seq_per_s
        ));
        record.epochs.push(epoch_record);
        let verdict = early.observe(val_loss);
        if verdict.improved {
            // Shares the parameter buffers: the next optimizer step writes new ones.
            best = Some(inner);
        }
        if verdict.stop {
            record.stopped_early = epoch + 1 < spec.epochs;
            break;
        }
    }

    let val_loss: Vec<f64> = record.epochs.iter().map(|e| e.val_loss).collect();
    let val_acc: Vec<f64> = record.epochs.iter().map(|e| e.val_acc).collect();
    record.val_acc_at_min_val_loss = val_acc_at_min_val_loss(&val_loss, &val_acc);
    record.best_epoch = early.best_epoch().map(|e| e + 1);
    let restore = early.restore_epoch(spec.restore_best).filter(|&e| e != last_epoch);
    let final_model = match (restore, best) {
        (Some(e), Some(best)) => {
            record.restored_epoch = Some(e + 1);
            best
        }
        _ => {
            record.restored_epoch = Some(last_epoch + 1);
            trainer.into_model().valid()
        }
    };
    Ok(final_model)
}

/// What the trainer keeps of a micro-batch until its logits are read back.
struct BatchTag {
    labels: Vec<u32>,
    /// 1-based batch number in the epoch.
    step: usize,
    lr: f64,
}

/// The epoch's running training loss and accuracy, from logits read back in groups.
#[derive(Default)]
struct TrainTally {
    loss_sum: f64,
    correct: u64,
    seen: u64,
}

impl TrainTally {
    /// Read the waiting logits, add them to the tally in batch order and advance the progress
    /// bar. A non-finite loss ends the run unless a dynamic loss scale handles overflow (then
    /// the step is skipped and the loss is only reported).
    fn read<B: Backend>(
        &mut self,
        pending: &mut PendingLogits<B, BatchTag>,
        bar: &mut EpochProgress,
        num_classes: usize,
        dynamic_scale: bool,
        epoch: usize,
    ) -> Result<(), TrainError> {
        for (tag, logits) in pending.take() {
            let losses = cross_entropy_rows(&logits, &tag.labels, num_classes);
            let batch_loss: f64 = losses.iter().sum();
            if !batch_loss.is_finite() && !dynamic_scale {
                return Err(TrainError::NonFiniteLoss {
                    epoch: epoch + 1,
                    step: tag.step,
                    value: batch_loss,
                    lr: tag.lr,
                });
            }
            let predicted = argmax_rows(&logits, num_classes);
            self.correct += predicted.iter().zip(&tag.labels).filter(|(p, l)| p == l).count() as u64;
            self.loss_sum += batch_loss;
            self.seen += tag.labels.len() as u64;
            bar.batch(self.loss_sum / self.seen as f64, self.correct as f64 / self.seen as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_messages() {
        assert!(is_out_of_memory("An out-of-memory error happened during launch\nCaused by: ..."));
        assert!(is_out_of_memory("CUDA_ERROR_OUT_OF_MEMORY: out of memory"));
        assert!(!is_out_of_memory("shape mismatch"));
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
