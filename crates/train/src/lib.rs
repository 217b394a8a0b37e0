#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod batching;
pub mod checkpoint;
pub mod device_fault;
pub mod early_stopping;
mod error;
mod finish;
pub mod loss_scale;
pub use bertlab_run::metrics;
mod fit;
mod load;
pub mod optim;
pub mod predict;
mod prepare;
mod progress;
pub mod readback;
pub mod schedule;
pub mod step;
pub mod step_state;
mod trainer;
mod warmup;

pub use batching::{padding_stats, Batch, BatchArrays, LengthBuckets, Padding, PaddingStats};
pub use bertlab_run::{
    record, ClassificationMetrics, ConfusionMatrix, InvalidSetting, Precision, RunOverrides, RunRecord,
    RunSpec, RunStatus, SpecError, SCHEMA_VERSION,
};
pub use device_fault::{is_out_of_memory, DeviceFault, Failure, FaultWatch};
pub use early_stopping::{val_acc_at_min_val_loss, EarlyStopping, RestoreBest};
pub use error::TrainError;
pub use loss_scale::{DynamicLossScaler, ScaleDecision};
pub use optim::{Adam, AdamSettings, OptimizerKind};
pub use predict::{evaluate, predict_logits, EvalSettings};
pub use prepare::{check_local_inputs, check_precision, LocalInputs};
pub use progress::ProgressMode;
pub use readback::PendingLogits;
pub use schedule::{LrSchedule, Schedule};
pub use step::{forward_backward, weighted_cross_entropy, PhaseTimes, StepOutcome, TrainStep};
pub use step_state::StepCounts;
pub use trainer::{train, TrainOptions};
