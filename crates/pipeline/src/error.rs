//! [`PipelineError`]: everything that can be wrong with a pipeline file, a flag or a plan.

use std::path::PathBuf;

/// A pipeline file that cannot be used, or a plan that cannot be made. Every variant names the
/// file, the key, the flag or the run at fault.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A file cannot be read or written.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse, has an unknown key or a value of the wrong type (the message
    /// names the key and the line).
    #[error("{path}: {message}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A key holds a value out of range, or keys contradict each other.
    #[error("{path}: `{key}`: {message}", path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, as a path (`problem[1].runs[0].lr`).
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// No pipeline of that name in the pipelines directory.
    #[error("no pipeline `{name}` in {dir} (available: {available})", dir = dir.display())]
    UnknownPipeline {
        /// The name asked for.
        name: String,
        /// The directory searched.
        dir: PathBuf,
        /// The pipelines found there.
        available: String,
    },
    /// A command-line option that cannot apply (`--model`, `--subset`, …).
    #[error("{flag}: {message}")]
    BadOption {
        /// The flag, e.g. `--model bret=DIR`.
        flag: String,
        /// What is wrong.
        message: String,
    },
    /// A model or data reference that cannot be resolved (`shared:…`, `${VAR}`).
    #[error("{what} = {value:?}: {message}")]
    Reference {
        /// Which setting (`model role distilbert`, `source`).
        what: String,
        /// The reference as written.
        value: String,
        /// Why it cannot be resolved and what to do.
        message: String,
    },
    /// A problem needs the best run of another problem, which has no usable records yet.
    #[error("{problem} needs the best run of {depends_on}: {message}")]
    Dependency {
        /// The dependent problem (`pipeline/problem`).
        problem: String,
        /// The problem it depends on.
        depends_on: String,
        /// What is missing and how to get it.
        message: String,
    },
    /// A record file that is not a run record of this schema.
    #[error("{path}: not a run record: {message}", path = path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        message: String,
    },
    /// `results.csv` could not be written.
    #[error("writing results.csv: {0}")]
    Csv(String),
}
