#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod choices;
pub mod classes;
pub mod cost;
pub mod identity;
pub mod inference;
pub mod metrics;
pub mod naming;
pub mod record;
pub mod shape;
pub mod source_ref;
pub mod spec;

// Not the run schema, but every crate that speaks of runs writes files and numbers: the one
// implementation lives in bertlab-base (which the Hub client uses without the run schema) and is
// re-exported here under the names it had, so such crates need only this one.
pub use bertlab_base::{
    files_in, format, lock, not_regular_kind, replaces_input, temporary_for, write_atomic, write_atomic_with,
};
pub use choices::{
    OptimizerKind, Padding, Precision, RestoreBest, Schedule, SplitMode, Truncation, UnknownChoice,
};
pub use classes::{align_labels, LabelAlignment};
pub use cost::ModelShape;
pub use inference::{
    ComputeSettings, DataSelection, DeviceSetting, Inference, InferenceSettings, TokenSettings,
};
pub use metrics::{ClassificationMetrics, ConfusionMatrix, MAX_CLASSES};
pub use naming::{NamesSettings, Setting, SettingStyle, UsageError, SWITCHES};
pub use record::{
    val_acc_at_min_val_loss, ClassCounts, DataSummary, Environment, EpochRecord, PaddingStats, RecordError,
    RunRecord, RunStatus, Timings, FAILED_RECORD_FILE, RECORD_FILE, SCHEMA_VERSION,
};
pub use source_ref::{BadSource, SourceRef, IMDB_DATASET_ID};
pub use spec::{
    column_arg, count_arg, max_len_arg, model_arg, setting_keys, InvalidSetting, RunOverrides, RunSpec,
    SettingText, SpecError, TableError, ALL_KEYS, MAX_MAX_LEN, MIN_MAX_LEN, PLACEMENT_KEYS,
};
