#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod batching;
pub mod early_stopping;
pub mod loss_scale;
pub mod metrics;
pub mod optim;
pub mod predict;
mod progress;
pub mod readback;
pub mod record;
pub mod schedule;
pub mod spec;
mod trainer;

pub use batching::{Batch, BatchArrays, LengthBuckets, Padding, PaddingStats};
pub use early_stopping::{val_acc_at_min_val_loss, EarlyStopping, RestoreBest};
pub use loss_scale::{DynamicLossScaler, ScaleDecision};
pub use metrics::{ClassificationMetrics, ConfusionMatrix};
pub use optim::{Adam, AdamSettings, OptimizerKind};
pub use predict::{evaluate, predict_logits, EvalSettings};
pub use progress::{hms, ProgressMode};
pub use readback::PendingLogits;
pub use record::{RunRecord, RunStatus, SCHEMA_VERSION};
pub use schedule::{LrSchedule, Schedule};
pub use spec::{PrecisionSpec, RunSpec, SpecError};
pub use trainer::{
    check_precision, forward_backward, is_out_of_memory, train, weighted_cross_entropy, TrainError,
    TrainOptions,
};
