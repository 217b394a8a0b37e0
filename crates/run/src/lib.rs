#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod atomic;
pub mod choices;
pub mod classes;
pub mod cost;
pub mod format;
pub mod identity;
pub mod inference;
pub mod lock;
pub mod metrics;
pub mod record;
pub mod source_ref;
pub mod spec;

pub use atomic::{write_atomic, write_atomic_with};
pub use choices::{
    OptimizerKind, Padding, Precision, RestoreBest, Schedule, SplitMode, Truncation, UnknownChoice,
};
pub use classes::{align_labels, LabelAlignment};
pub use cost::ModelShape;
pub use inference::{
    ComputeSettings, DataSelection, DeviceSetting, Inference, InferenceSettings, TokenSettings,
};
pub use metrics::{ClassificationMetrics, ConfusionMatrix, MAX_CLASSES};
pub use record::{
    val_acc_at_min_val_loss, ClassCounts, DataSummary, Environment, EpochRecord, PaddingStats, RecordError,
    RunRecord, RunStatus, Timings, FAILED_RECORD_FILE, RECORD_FILE, SCHEMA_VERSION,
};
pub use source_ref::{BadSource, SourceRef, IMDB_DATASET_ID};
pub use spec::{
    setting_keys, InvalidSetting, RunOverrides, RunSpec, SettingText, SpecError, TableError, ALL_KEYS,
    PLACEMENT_KEYS,
};
