#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod estimate;
pub mod plan;
pub mod record;
pub mod report;
pub mod slurm;
pub mod spec;
pub mod store;

pub use plan::{
    oom_retry_batch, run_id, select_best, PlanOptions, PlannedRun, Planner, Resolver, SpecTarget, StagePlan,
};
pub use record::RunRecord;
pub use report::{answer_line, RenderOptions, Report};
pub use spec::{PipelineError, PipelineLibrary, PipelineSpec, ProblemSpec, RunSettings, Stage, StageKey};
pub use store::{ProblemManifest, ResultsStore};
