#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod error;
pub mod estimate;
pub mod library;
pub mod options;
pub mod plan;
pub mod report;
pub mod resolve;
pub mod run_id;
pub mod slurm;
pub mod spec;
pub mod store;
#[cfg(test)]
mod testing;

pub use bertlab_run::{RunOverrides, RunRecord};
pub use error::PipelineError;
pub use library::{PipelineLibrary, Stage, StageKey};
pub use options::PlanOptions;
pub use plan::{
    oom_retry_batch, select_best, InputIdentity, PlannedRun, Planner, RecordSource, ReferenceText,
    SpecTarget, StagePlan,
};
pub use report::{answer_line, RenderOptions, Report};
pub use resolve::Resolver;
pub use run_id::run_id;
pub use spec::{PipelineSpec, ProblemSpec};
pub use store::{ProblemManifest, ResultsStore};
