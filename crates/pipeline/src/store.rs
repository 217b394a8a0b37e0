//! The results directory: `<out>/<pipeline>/<problem>/<run-id>/` per run, holding the run spec
//! (`run.toml`), the planned run (`planned.json`), the log (`train.log`), the record
//! (`record.json`, written by `bertlab train`) and the model (`best/`). Each problem directory
//! also holds `problem.json`, the problem's latest plan (title, answer, run ids, options).
//!
//! Records are the only state: a run is done when its `record.json` says `completed`.

use crate::error::PipelineError;
use crate::library::StageKey;
use crate::options::PlanOptions;
use crate::plan::{PlannedRun, RecordSource, StagePlan};
use bertlab_run::{RecordError, RunRecord};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use bertlab_run::{FAILED_RECORD_FILE, RECORD_FILE};
/// File name of a run's spec.
pub const SPEC_FILE: &str = "run.toml";
/// File name of a run's planned configuration.
pub const PLANNED_FILE: &str = "planned.json";
/// File name of a problem's latest plan.
pub const PROBLEM_FILE: &str = "problem.json";
/// File name of a run's log.
pub const LOG_FILE: &str = "train.log";

/// A problem's latest plan, as written next to its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemManifest {
    /// `pipeline/problem`.
    pub stage: StageKey,
    /// The pipeline's title.
    #[serde(default)]
    pub pipeline_title: String,
    /// The problem's title.
    #[serde(default)]
    pub title: String,
    /// The graded answer's name (`a1a`).
    #[serde(default)]
    pub answer: Option<String>,
    /// The problem it inherits from, and which keys.
    #[serde(default)]
    pub from_best: Option<StageKey>,
    /// Inherited keys.
    #[serde(default)]
    pub inherit: Vec<String>,
    /// The run whose settings were inherited (`pipeline/problem/run-id`).
    #[serde(default)]
    pub inherited_from: Option<String>,
    /// The options of the plan (`--subset`, `--model`, …).
    #[serde(default)]
    pub options: PlanOptions,
    /// The planned runs, in order.
    pub runs: Vec<PlannedRun>,
}

impl ProblemManifest {
    /// The manifest of a ready plan.
    pub fn of(plan: &StagePlan, options: &PlanOptions) -> ProblemManifest {
        ProblemManifest {
            stage: plan.stage.key.clone(),
            pipeline_title: plan.stage.pipeline_title.clone(),
            title: plan.stage.problem.title.clone(),
            answer: plan.stage.problem.answer.clone(),
            from_best: plan.stage.dependency(),
            inherit: plan.stage.problem.inherited_keys(),
            inherited_from: plan.inherited.as_ref().map(|i| i.run_path()),
            options: options.clone(),
            runs: plan.runs.clone(),
        }
    }
}

/// One run directory found on disk.
#[derive(Debug, Clone)]
pub struct StoredRun {
    /// Run id (the directory name).
    pub run_id: String,
    /// The directory.
    pub dir: PathBuf,
    /// `planned.json`, when present.
    pub planned: Option<PlannedRun>,
    /// `record.json`, when present and readable.
    pub record: Option<RunRecord>,
}

/// One problem directory found on disk.
#[derive(Debug, Clone)]
pub struct StoredStage {
    /// `pipeline/problem`.
    pub key: StageKey,
    /// `problem.json`, when present.
    pub manifest: Option<ProblemManifest>,
    /// Its run directories, in plan order (then by name).
    pub runs: Vec<StoredRun>,
}

/// The results directory.
#[derive(Debug, Clone)]
pub struct ResultsStore {
    root: PathBuf,
}

impl ResultsStore {
    /// The store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> ResultsStore {
        ResultsStore { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<pipeline>/<problem>`.
    pub fn stage_dir(&self, key: &StageKey) -> PathBuf {
        self.root.join(&key.pipeline).join(&key.problem)
    }

    /// `<root>/<pipeline>/<problem>/<run-id>`.
    pub fn run_dir(&self, run: &PlannedRun) -> PathBuf {
        self.stage_dir(&run.stage).join(&run.run_id)
    }

    /// The record of `run` (`record.json`, else `failed-record.json`): `None` when neither
    /// exists, an error when unreadable.
    pub fn record(&self, run: &PlannedRun) -> Result<Option<RunRecord>, PipelineError> {
        read_record(&self.run_dir(run))
    }

    /// The completed record of `run`, if any (an unreadable or failed record counts as none).
    pub fn completed(&self, run: &PlannedRun) -> Option<RunRecord> {
        self.record(run).ok().flatten().filter(RunRecord::is_completed)
    }

    /// Write `run`'s spec and plan into its directory, keeping what an interrupted attempt left
    /// there (`bertlab train` resumes from its checkpoint). Nothing a user may want is deleted on
    /// a guess: a `record.json` that cannot be read is moved aside (to
    /// `record.json.unreadable-N`) and named in the returned warnings.
    pub fn prepare_run(
        &self,
        run: &PlannedRun,
        spec_toml: &str,
    ) -> Result<(PathBuf, Vec<String>), PipelineError> {
        let dir = self.run_dir(run);
        let mut warnings = Vec::new();
        let record = dir.join(RECORD_FILE);
        if record.exists() {
            if let Err(e) = RunRecord::read(&record) {
                let aside = (1..)
                    .map(|n| dir.join(bertlab_run::record::unreadable_record_name(n)))
                    .find(|p| !p.exists())
                    .expect("a free name");
                std::fs::rename(&record, &aside)
                    .map_err(|source| PipelineError::Io { path: record.clone(), source })?;
                warnings
                    .push(format!("{e}; moved aside to {} and the run is trained again", aside.display()));
            }
        }
        Ok((self.write_run_files(run, spec_toml)?, warnings))
    }

    /// Write `run.toml` and `planned.json` (without clearing anything else).
    pub fn write_run_files(&self, run: &PlannedRun, spec_toml: &str) -> Result<PathBuf, PipelineError> {
        let dir = self.run_dir(run);
        write_atomic(&dir.join(SPEC_FILE), spec_toml.as_bytes())?;
        let planned = serde_json::to_vec_pretty(run).expect("a planned run serialises");
        write_atomic(&dir.join(PLANNED_FILE), &planned)?;
        Ok(dir)
    }

    /// Write the problem's manifest.
    pub fn write_manifest(&self, manifest: &ProblemManifest) -> Result<(), PipelineError> {
        let json = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
        write_atomic(&self.stage_dir(&manifest.stage).join(PROBLEM_FILE), &json)
    }

    /// Remove the results of `key` (for `--fresh`).
    pub fn remove_stage(&self, key: &StageKey) -> Result<(), PipelineError> {
        let dir = self.stage_dir(key);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| PipelineError::Io { path: dir, source })?;
        }
        Ok(())
    }

    /// Every problem directory under the root that holds a manifest or a run, sorted by
    /// pipeline then problem. Unreadable records are reported in `warnings`.
    pub fn scan(&self, warnings: &mut Vec<String>) -> Vec<StoredStage> {
        let mut stages = Vec::new();
        for pipeline_dir in sorted_dirs(&self.root) {
            let Some(pipeline) = dir_name(&pipeline_dir) else { continue };
            for problem_dir in sorted_dirs(&pipeline_dir) {
                let Some(problem) = dir_name(&problem_dir) else { continue };
                let key = StageKey { pipeline: pipeline.clone(), problem };
                if let Some(stage) = scan_stage(key, &problem_dir, warnings) {
                    stages.push(stage);
                }
            }
        }
        stages
    }
}

fn scan_stage(key: StageKey, dir: &Path, warnings: &mut Vec<String>) -> Option<StoredStage> {
    let manifest_path = dir.join(PROBLEM_FILE);
    let manifest: Option<ProblemManifest> = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(m) => Some(m),
            Err(e) => {
                warnings.push(format!("{}: ignored: {e}", manifest_path.display()));
                None
            }
        },
        Err(_) => None,
    };
    let mut runs = Vec::new();
    for run_dir in sorted_dirs(dir) {
        let Some(run_id) = dir_name(&run_dir) else { continue };
        let record = match read_record(&run_dir) {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!("ignored: {e}"));
                None
            }
        };
        let planned = std::fs::read_to_string(run_dir.join(PLANNED_FILE))
            .ok()
            .and_then(|t| serde_json::from_str::<PlannedRun>(&t).ok());
        if record.is_none() && planned.is_none() {
            continue;
        }
        runs.push(StoredRun { run_id, dir: run_dir, planned, record });
    }
    if manifest.is_none() && runs.is_empty() {
        return None;
    }
    // Plan order first (the manifest's, then each run's index), then names.
    let position = |r: &StoredRun| -> (usize, usize, String) {
        let in_manifest = manifest
            .as_ref()
            .and_then(|m| m.runs.iter().position(|p| p.run_id == r.run_id))
            .unwrap_or(usize::MAX);
        (in_manifest, r.planned.as_ref().map_or(usize::MAX, |p| p.index), r.run_id.clone())
    };
    runs.sort_by_key(position);
    Some(StoredStage { key, manifest, runs })
}

/// The record in a run directory: `record.json`, else `failed-record.json`.
pub fn read_record(dir: &Path) -> Result<Option<RunRecord>, PipelineError> {
    for name in [RECORD_FILE, FAILED_RECORD_FILE] {
        let path = dir.join(name);
        if path.is_file() {
            return RunRecord::read(&path).map(Some).map_err(|e| match e {
                RecordError::Io { path, source } => PipelineError::Io { path, source },
                RecordError::Invalid { path, message } => PipelineError::Record { path, message },
            });
        }
    }
    Ok(None)
}

impl RecordSource for ResultsStore {
    fn record(&self, run: &PlannedRun) -> Result<Option<RunRecord>, PipelineError> {
        ResultsStore::record(self, run)
    }

    fn stage_location(&self, stage: &StageKey) -> PathBuf {
        self.stage_dir(stage)
    }
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && dir_name(p).is_some_and(|n| !n.starts_with('.')))
        .collect();
    dirs.sort();
    dirs
}

fn dir_name(p: &Path) -> Option<String> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_string)
}

/// [`bertlab_run::write_atomic`] with the path in the error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PipelineError> {
    bertlab_run::write_atomic(path, bytes)
        .map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })
}
