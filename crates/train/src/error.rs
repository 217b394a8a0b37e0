//! [`TrainError`]: everything that can end a run, each naming the setting, file, epoch or step
//! at fault (a setting as its run-spec key, or as its flag through [`NamesSettings::render`]);
//! and how a device's failure (out of memory, a backend thread's panic) becomes one.

use crate::checkpoint::CheckpointError;
use crate::device_fault::{DeviceFault, Failure};
use bertlab_data::DataError;
use bertlab_models::{ModelError, Precision};
use bertlab_run::{InvalidSetting, NamesSettings, RunSpec, Setting, SettingStyle};
use bertlab_tokenize::TokenizeError;
use std::path::PathBuf;

/// Everything that can end a run; each names the setting, file, epoch or step at fault. Its
/// `Display` names settings as run-spec keys (`batch = 32`: what `failed-record.json` and a
/// pipeline show), [`NamesSettings::render`] as either keys or flags (`--batch 32`).
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
    #[error("{}", self.render(SettingStyle::Key))]
    UnsupportedPrecision {
        /// The precision asked for.
        precision: Precision,
        /// `B::name()`.
        backend: String,
        /// What the probe found.
        detail: String,
    },
    /// The training loss became NaN or infinite.
    #[error("{}", self.render(SettingStyle::Key))]
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
    #[error("{}", self.render(SettingStyle::Key))]
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
    /// The checkpoint's classification head was trained on other classes than the data's.
    #[error("{}", self.render(SettingStyle::Key))]
    HeadClasses {
        /// The model.
        model: String,
        /// How the classes differ.
        message: String,
    },
    /// A split has no rows.
    #[error("{}", self.render(SettingStyle::Key))]
    EmptySplit {
        /// `train`, `val` or `test`.
        split: &'static str,
        /// The subset.
        subset: f64,
    },
    /// The data has fewer than two classes.
    #[error("{data}: {} class{} ({}): a classifier needs at least 2", names.len(), if names.len() == 1 { "" } else { "es" }, names.join(", "))]
    TooFewClasses {
        /// The data source.
        data: String,
        /// Its classes.
        names: Vec<String>,
    },
    /// A class has no row in the training split.
    #[error("{}", self.render(SettingStyle::Key))]
    ClassWithoutRows {
        /// The class.
        class: String,
        /// The data source.
        data: String,
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
    #[error("{}", self.render(SettingStyle::Key))]
    Checkpoint(#[from] CheckpointError),
    /// The run diverged: its steps overflow or its losses are not finite.
    #[error("{}", self.render(SettingStyle::Key))]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based batch within the epoch.
        step: usize,
        /// What was seen (the message adds what to do).
        detail: String,
    },
    /// The validation loss is NaN or infinite.
    #[error("{}", self.render(SettingStyle::Key))]
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
    /// The run directory (`out`) already holds a completed run.
    #[error("{}", self.render(SettingStyle::Key))]
    OutHoldsRun {
        /// Its record.
        path: PathBuf,
        /// The run directory.
        out: PathBuf,
    },
    /// The run directory (`out`) holds what a run must not replace, or cannot be one.
    #[error("{}", self.render(SettingStyle::Key))]
    OutNotARunDir {
        /// The run directory.
        out: PathBuf,
        /// What is wrong.
        why: String,
        /// The switch that would go on anyway, and what it does (`to replace it`).
        remedy: Option<(Setting, &'static str)>,
    },
    /// Another training writes to the same run directory (`out`).
    #[error("{}", self.render(SettingStyle::Key))]
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

impl TrainError {
    /// The error a device's `failure` during the run `spec` stands for: out of memory names the
    /// run's batch and the half to retry with (exit code 3, which the orchestrator retries with
    /// half the batch); a panic or another thread's fault says what failed.
    pub fn of_failure(spec: &RunSpec, failure: Failure) -> TrainError {
        match failure {
            Failure::OutOfMemory { detail } => TrainError::OutOfMemory {
                batch: spec.batch,
                max_len: spec.max_len,
                half: (spec.batch / 2).max(1),
                accum2: spec.accum * 2,
                detail,
            },
            Failure::Panic(message) => TrainError::Panic(message),
            Failure::Fault(fault) => TrainError::DeviceFault {
                message: fault.first_line(),
                thread: fault.thread,
                count: fault.count,
            },
        }
    }

    /// The device ran out of memory: the same run with a smaller batch may succeed.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, TrainError::OutOfMemory { .. })
    }

    /// A setting's value cannot be used: out of its range, or beyond what the model takes (a
    /// `max_len` above its positions). The command line calls it a usage error (exit 2), as it
    /// does a value refused before the run starts.
    pub fn is_setting_out_of_range(&self) -> bool {
        match self {
            TrainError::Spec(_) => true,
            TrainError::Tokenize(e) => matches!(**e, TokenizeError::MaxLen(_)),
            _ => false,
        }
    }
}

impl NamesSettings for TrainError {
    fn render(&self, style: SettingStyle) -> String {
        let lower_lr = format!("lower {}", style.name(Setting::lr));
        match self {
            TrainError::Spec(e) => e.render(style),
            TrainError::Data(e) => e.render(style),
            TrainError::UnsupportedPrecision { precision, backend, detail } => format!(
                "{}: the {backend} backend cannot compute in {precision} ({detail}); use {}, or a build whose \
                 backend supports it (the default cpu build's burn-flex, or --features cuda)",
                style.with_value(Setting::precision, precision),
                style.with_value(Setting::precision, Precision::F32),
            ),
            TrainError::NonFiniteLoss { epoch, step, value, lr } => format!(
                "training loss is {value} at epoch {epoch}, step {step} (lr {lr:e}): the run diverged; {lower_lr} \
                 or set {}",
                style.with_value(Setting::grad_clip, "1.0")
            ),
            TrainError::OutOfMemory { batch, max_len, half, accum2, detail } => format!(
                "out of memory at {} ({detail}); retry with {} (and {} to keep the effective batch)",
                style.with_values(&[(Setting::batch, batch), (Setting::max_len, max_len)]),
                style.with_value(Setting::batch, half),
                style.with_value(Setting::accum, accum2),
            ),
            TrainError::HeadClasses { model, message } => format!(
                "{} already has a classification head, for other classes than the data's: {message}; \
                 fine-tune from the pre-trained checkpoint it came from instead",
                style.with_text(Setting::model, model)
            ),
            TrainError::EmptySplit { split, subset } => format!(
                "the {split} split is empty at {}: raise {}",
                style.with_value(Setting::subset, subset),
                style.name(Setting::subset)
            ),
            TrainError::ClassWithoutRows { class, data, subset } => format!(
                "{data}: class `{class}` has no row in the train split at {}: its part of the head would \
                 never learn and it would count in macro-F1; drop it from the data (or from its declared \
                 class names), or raise {}",
                style.with_value(Setting::subset, subset),
                style.name(Setting::subset)
            ),
            TrainError::Checkpoint(e) => {
                format!("{e}; to start the run over, {}", style.turn_on(Setting::fresh))
            }
            TrainError::Diverged { epoch, step, detail } => format!(
                "the run diverged at epoch {epoch}, step {step}: {detail}; {lower_lr} or use {}",
                style.with_value(Setting::precision, "bf16 or f32")
            ),
            TrainError::NonFiniteValidation { epoch, value } => format!(
                "validation loss is {value} after epoch {epoch}: the run diverged; {lower_lr} or set {}",
                style.with_value(Setting::grad_clip, "1.0")
            ),
            TrainError::OutHoldsRun { path, out } => format!(
                "{} exists: {} already holds a completed run; choose another {}, or {} to replace it",
                path.display(),
                style.with_text(Setting::out, &out.display().to_string()),
                style.name(Setting::out),
                style.turn_on(Setting::overwrite),
            ),
            TrainError::OutNotARunDir { out, why, remedy } => format!(
                "{}: {why}{}",
                style.with_text(Setting::out, &out.display().to_string()),
                remedy.map_or(String::new(), |(switch, does)| format!(
                    "; move it, or {} {does}",
                    style.turn_on(switch)
                ))
            ),
            TrainError::OutBusy { out, holder } => format!(
                "another bertlab train{holder} is writing to {}; wait for it or choose another {}",
                style.with_text(Setting::out, &out.display().to_string()),
                style.name(Setting::out),
            ),
            // The others name no setting.
            TrainError::Tokenize(_)
            | TrainError::Model(_)
            | TrainError::Io { .. }
            | TrainError::Panic(_)
            | TrainError::DeviceFault { .. }
            | TrainError::TooFewClasses { .. }
            | TrainError::NonFiniteResult { .. } => self.to_string(),
        }
    }
}

/// The error for a panic of a backend thread during the run `spec`: out of memory or a device
/// fault.
pub(crate) fn fault_error(spec: &RunSpec, fault: &DeviceFault) -> TrainError {
    TrainError::of_failure(spec, Failure::of_fault(fault.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_fault::is_out_of_memory;

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
        assert!(e.to_string().contains("out of memory at batch = 65536, max_len = 512"), "{e}");
        assert!(e.render(SettingStyle::Flag).contains("out of memory at --batch 65536 --max-len 512"), "{e}");
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
                && msg.contains("batch = 32")
                && msg.contains("max_len = 512")
                && !msg.contains("--")
                && !msg.contains('\n'),
            "{msg}"
        );
        let msg = e.render(SettingStyle::Flag);
        assert!(
            msg.contains("out of memory")
                && msg.contains("--batch 32")
                && msg.contains("--max-len 512")
                && !msg.contains('\n'),
            "{msg}"
        );
    }

    #[test]
    fn failures_become_errors_of_the_run() {
        let spec = RunSpec { batch: 7, max_len: 64, accum: 3, ..RunSpec::default() };
        let e =
            TrainError::of_failure(&spec, Failure::OutOfMemory { detail: "CUDA_ERROR_OUT_OF_MEMORY".into() });
        assert!(e.is_out_of_memory());
        assert_eq!(
            e.render(SettingStyle::Flag),
            "out of memory at --batch 7 --max-len 64 (CUDA_ERROR_OUT_OF_MEMORY); retry with --batch 3 (and --accum 6 \
             to keep the effective batch)"
        );
        assert_eq!(
            e.to_string(),
            "out of memory at batch = 7, max_len = 64 (CUDA_ERROR_OUT_OF_MEMORY); retry with batch = 3 (and \
             accum = 6 to keep the effective batch)"
        );
        assert_eq!(e.render(SettingStyle::Key), e.to_string());
        let e = TrainError::of_failure(&spec, Failure::Panic("index out of bounds".into()));
        assert!(!e.is_out_of_memory());
        assert_eq!(e.to_string(), "the training crashed: index out of bounds");
        let fault = DeviceFault { thread: "DSD-0-0".into(), message: "boom\nmore".into(), count: 2 };
        let e = TrainError::of_failure(&spec, Failure::Fault(fault));
        assert!(!e.is_out_of_memory());
        assert_eq!(
            e.to_string(),
            "the backend's thread DSD-0-0 failed (2 panic(s)): boom; the run's numbers after it are not valid"
        );
    }

    #[test]
    fn ndarray_like_refusal_is_clear() {
        let e = TrainError::UnsupportedPrecision {
            precision: Precision::F16,
            backend: "ndarray".into(),
            detail: "d".into(),
        };
        assert!(e
            .render(SettingStyle::Flag)
            .starts_with("--precision f16: the ndarray backend cannot compute in f16"));
        assert!(e.render(SettingStyle::Flag).contains("use --precision f32, or a build"), "{e}");
        assert!(
            e.to_string().starts_with("precision = f16: the ndarray backend cannot compute in f16"),
            "{e}"
        );
        assert!(e.to_string().contains("use precision = f32, or a build"), "{e}");
    }

    /// Every message that names a setting, in both styles: the key as a run spec spells it in
    /// `Display` (what failed-record.json holds), the flag in the binary's rendering.
    #[test]
    fn settings_are_named_as_keys_or_as_flags() {
        let both = |e: TrainError| (e.to_string(), e.render(SettingStyle::Flag));
        let (key, flag) = both(TrainError::EmptySplit { split: "val", subset: 0.001 });
        assert_eq!(key, "the val split is empty at subset = 0.001: raise `subset`");
        assert_eq!(flag, "the val split is empty at --subset 0.001: raise --subset");
        let (key, flag) = both(TrainError::NonFiniteLoss { epoch: 1, step: 3, value: f64::NAN, lr: 1e30 });
        assert!(key.ends_with("the run diverged; lower `lr` or set grad_clip = 1.0"), "{key}");
        assert!(flag.ends_with("the run diverged; lower --lr or set --grad-clip 1.0"), "{flag}");
        let (key, flag) = both(TrainError::NonFiniteValidation { epoch: 2, value: f64::INFINITY });
        assert_eq!(
            key,
            "validation loss is inf after epoch 2: the run diverged; lower `lr` or set grad_clip = 1.0"
        );
        assert_eq!(
            flag,
            "validation loss is inf after epoch 2: the run diverged; lower --lr or set --grad-clip 1.0"
        );
        let (key, flag) = both(TrainError::Diverged {
            epoch: 1,
            step: 9,
            detail: "8 f16 steps in a row overflowed".into(),
        });
        assert!(key.ends_with("overflowed; lower `lr` or use precision = bf16 or f32"), "{key}");
        assert!(flag.ends_with("overflowed; lower --lr or use --precision bf16 or f32"), "{flag}");
        let (key, flag) = both(TrainError::HeadClasses { model: "org/m".into(), message: "2 vs 3".into() });
        assert!(key.starts_with("model = \"org/m\" already has a classification head"), "{key}");
        assert!(flag.starts_with("--model org/m already has a classification head"), "{flag}");
        let checkpoint =
            || CheckpointError { path: "runs/a/checkpoint/state.json".into(), message: "damaged".into() };
        let (key, flag) = both(TrainError::Checkpoint(checkpoint()));
        assert_eq!(key, "runs/a/checkpoint/state.json: damaged; to start the run over, set fresh = true");
        assert_eq!(flag, "runs/a/checkpoint/state.json: damaged; to start the run over, pass --fresh");
        let (key, flag) =
            both(TrainError::OutHoldsRun { path: "runs/a/record.json".into(), out: "runs/a".into() });
        assert_eq!(
            key,
            "runs/a/record.json exists: out = \"runs/a\" already holds a completed run; choose another `out`, or \
             set overwrite = true to replace it"
        );
        assert_eq!(
            flag,
            "runs/a/record.json exists: --out runs/a already holds a completed run; choose another --out, or pass \
             --overwrite to replace it"
        );
        let (key, flag) = both(TrainError::OutBusy { out: "runs/a".into(), holder: " (pid 7)".into() });
        assert_eq!(key, "another bertlab train (pid 7) is writing to out = \"runs/a\"; wait for it or choose another `out`");
        assert_eq!(
            flag,
            "another bertlab train (pid 7) is writing to --out runs/a; wait for it or choose another --out"
        );
        // Wrapped errors render in the same style.
        let (key, flag) =
            both(InvalidSetting { key: "max_len", value: "2".into(), why: "too short".into() }.into());
        assert_eq!((key.as_str(), flag.as_str()), ("max_len = 2: too short", "--max-len 2: too short"));
        let (key, flag) = both(DataError::BadSource(bertlab_run::BadSource("hub:x".into())).into());
        assert!(
            key.starts_with("source = \"hub:x\": expected")
                && flag.starts_with("--source \"hub:x\": expected")
        );
        // An error that names no setting reads the same in both.
        let (key, flag) = both(TrainError::Panic("boom".into()));
        assert_eq!(key, flag);
    }
}
