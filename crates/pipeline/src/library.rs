//! The pipelines of a directory, and the problems (stages) they expand to.

use crate::error::PipelineError;
use crate::spec::{PipelineSpec, ProblemSpec};
use bertlab_run::RunOverrides;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The pipelines of a directory (`pipelines/`), loaded by name.
#[derive(Debug, Clone)]
pub struct PipelineLibrary {
    dir: PathBuf,
}

impl PipelineLibrary {
    /// The library of `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> PipelineLibrary {
        PipelineLibrary { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names (file stems) of the `.toml` files, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension().is_some_and(|x| x == "toml"))
                    .then(|| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
                    .flatten()
            })
            .collect();
        names.sort();
        names
    }

    /// Load pipeline `name` (a file stem of the directory, or a path to a `.toml` file).
    pub fn load(&self, name: &str) -> Result<PipelineSpec, PipelineError> {
        let as_path = Path::new(name);
        if name.ends_with(".toml") && as_path.is_file() {
            return PipelineSpec::from_file(as_path);
        }
        // A path (not a name of the pipelines folder) that is not there: say so.
        if name.ends_with(".toml") || name.contains(std::path::MAIN_SEPARATOR) {
            return Err(PipelineError::Io {
                path: as_path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such pipeline file"),
            });
        }
        let path = self.dir.join(format!("{name}.toml"));
        if !path.is_file() {
            return Err(PipelineError::UnknownPipeline {
                name: name.into(),
                dir: self.dir.clone(),
                available: self.names().join(", "),
            });
        }
        PipelineSpec::from_file(&path)
    }

    /// The stages of `pipeline`: its chain's stages (recursively), then its own problems.
    pub fn stages(&self, pipeline: &PipelineSpec) -> Result<Vec<Stage>, PipelineError> {
        let mut stages = Vec::new();
        self.collect_stages(pipeline, &mut vec![pipeline.name.clone()], &mut stages)?;
        Ok(stages)
    }

    fn collect_stages(
        &self,
        pipeline: &PipelineSpec,
        visiting: &mut Vec<String>,
        stages: &mut Vec<Stage>,
    ) -> Result<(), PipelineError> {
        for (i, name) in pipeline.chain.iter().enumerate() {
            if visiting.contains(name) {
                return Err(PipelineError::Invalid {
                    path: pipeline.path.clone(),
                    key: format!("chain[{i}]"),
                    message: format!("cycle: {} → {name}", visiting.join(" → ")),
                });
            }
            let inner = self.load(name)?;
            visiting.push(name.clone());
            self.collect_stages(&inner, visiting, stages)?;
            visiting.pop();
        }
        for problem in &pipeline.problems {
            let stage = Stage::new(pipeline, problem);
            if !stages.iter().any(|s| s.key == stage.key) {
                stages.push(stage);
            }
        }
        Ok(())
    }
}

/// `pipeline/problem`: where a problem's runs live under the results directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StageKey {
    /// Pipeline name.
    pub pipeline: String,
    /// Problem id.
    pub problem: String,
}

impl StageKey {
    /// Parse `problem` (relative to `pipeline`) or `pipeline/problem`.
    pub fn parse(reference: &str, pipeline: &str) -> StageKey {
        match reference.split_once('/') {
            Some((p, q)) => StageKey { pipeline: p.into(), problem: q.into() },
            None => StageKey { pipeline: pipeline.into(), problem: reference.into() },
        }
    }

    /// A short label: `problem1` when pipeline and problem share the name, else
    /// `pipeline-problem` (used in file names).
    pub fn label(&self) -> String {
        if self.pipeline == self.problem {
            self.problem.clone()
        } else {
            format!("{}-{}", self.pipeline, self.problem)
        }
    }
}

impl fmt::Display for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.pipeline, self.problem)
    }
}

/// One problem together with the pipeline context it is defined in.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Where its runs live.
    pub key: StageKey,
    /// The pipeline's title.
    pub pipeline_title: String,
    /// The pipeline file.
    pub path: PathBuf,
    /// The pipeline's roles.
    pub models: BTreeMap<String, String>,
    /// The pipeline's defaults.
    pub defaults: RunOverrides,
    /// The problem.
    pub problem: ProblemSpec,
}

impl Stage {
    /// The stage of `problem` in `pipeline`.
    pub fn new(pipeline: &PipelineSpec, problem: &ProblemSpec) -> Stage {
        Stage {
            key: StageKey { pipeline: pipeline.name.clone(), problem: problem.id.clone() },
            pipeline_title: pipeline.title.clone(),
            path: pipeline.path.clone(),
            models: pipeline.models.clone(),
            defaults: pipeline.defaults.clone(),
            problem: problem.clone(),
        }
    }

    /// The stage whose best run this one inherits from.
    pub fn dependency(&self) -> Option<StageKey> {
        self.problem.from_best.as_deref().map(|d| StageKey::parse(d, &self.key.pipeline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[models]
distilbert = "distilbert/distilbert-base-uncased"
[defaults]
model = "distilbert"
[[problem]]
id = "p1"
runs = [ { max_len = 128 } ]
[[problem]]
id = "p2"
from_best = "p1"
runs = [ { subset = 0.5 } ]
"#;

    #[test]
    fn chains_expand_to_stages_and_cycles_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("one.toml"), GOOD).unwrap();
        std::fs::write(dir.path().join("all.toml"), "chain = [\"one\"]\n").unwrap();
        std::fs::write(dir.path().join("loop.toml"), "chain = [\"loop2\"]\n").unwrap();
        std::fs::write(dir.path().join("loop2.toml"), "chain = [\"loop\"]\n").unwrap();
        let lib = PipelineLibrary::new(dir.path());
        assert_eq!(lib.names(), vec!["all", "loop", "loop2", "one"]);
        let all = lib.load("all").unwrap();
        let stages = lib.stages(&all).unwrap();
        let keys: Vec<String> = stages.iter().map(|s| s.key.to_string()).collect();
        assert_eq!(keys, vec!["one/p1", "one/p2"]);
        assert_eq!(stages[1].dependency(), Some(StageKey { pipeline: "one".into(), problem: "p1".into() }));
        let e = lib.stages(&lib.load("loop").unwrap()).unwrap_err().to_string();
        assert!(e.contains("cycle: loop → loop2 → loop"), "{e}");
        let e = lib.load("nope").unwrap_err().to_string();
        assert!(e.contains("no pipeline `nope`") && e.contains("all, loop, loop2, one"), "{e}");
    }
}
