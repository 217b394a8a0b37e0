//! Planning: from pipeline stages, command-line options and existing records to the concrete runs
//! (settings, stable run ids, run spec files), resolving `from_best` through the records of the
//! problem depended on.

use crate::error::PipelineError;
use crate::library::{PipelineLibrary, Stage, StageKey};
use crate::options::PlanOptions;
use crate::run_id::run_id;
use bertlab_run::format::{format_lr, format_number, round_sig};
use bertlab_run::{RunOverrides, RunRecord, RunSpec};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a run's model and data references stand for, in its run id: by default the references
/// as written; `cargo xtask` resolves them and hashes the files they point to, so that a
/// reference that now points to other content (`${VAR}`, `shared:`, a directory rewritten) gives
/// new run ids and never reuses a stale result.
pub trait InputIdentity {
    /// The identity of model reference `reference`.
    fn model(&self, reference: &str) -> String;
    /// The identity of data source `reference` (`None`: the run spec's default source).
    fn source(&self, reference: Option<&str>) -> String;
}

/// References as written, unresolved (planning without the files at hand: tests, dry runs of
/// other machines' pipelines).
pub struct ReferenceText;

impl InputIdentity for ReferenceText {
    fn model(&self, reference: &str) -> String {
        reference.to_string()
    }

    fn source(&self, reference: Option<&str>) -> String {
        reference.unwrap_or("hub").to_string()
    }
}

/// Where a planner finds the records of runs (the results directory, in practice): planning
/// needs the records of the problem a `from_best` depends on.
pub trait RecordSource {
    /// The record of `run` (`record.json`, else `failed-record.json`): `None` when neither exists,
    /// an error when unreadable.
    fn record(&self, run: &PlannedRun) -> Result<Option<RunRecord>, PipelineError>;

    /// Where the runs of `stage` are recorded (for messages).
    fn stage_location(&self, stage: &StageKey) -> PathBuf;
}

/// One run to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// The problem it belongs to.
    pub stage: StageKey,
    /// 0-based position in the problem.
    pub index: usize,
    /// Stable id derived from the configuration (the run's directory name).
    pub run_id: String,
    /// Model role.
    pub role: String,
    /// Model reference (after `--model`), unresolved (`shared:…` stays as written).
    pub model: String,
    /// Every setting of the run: `model` is the role, `subset` the effective fraction, `batch`
    /// the planned batch (an out-of-memory retry halves it in the run spec, not here).
    pub settings: RunOverrides,
    /// The subset as a fraction of the pool.
    pub subset_fraction: f64,
    /// The pool (`--subset`).
    pub pool: f64,
    /// The keys inherited from the best run of another problem.
    #[serde(default)]
    pub inherited: Vec<String>,
    /// That run (`pipeline/problem/run-id`).
    #[serde(default)]
    pub inherited_from: Option<String>,
}

impl PlannedRun {
    /// The planned training batch.
    pub fn batch(&self) -> Option<usize> {
        self.settings.batch
    }

    /// A short description of the settings that matter for sweeps.
    pub fn describe(&self) -> String {
        let s = &self.settings;
        let mut parts = vec![self.role.clone()];
        if let Some(m) = s.max_len {
            parts.push(format!("max_len {m}"));
        }
        if let Some(lr) = s.lr {
            parts.push(format!("lr {}", format_lr(lr)));
        }
        if let Some(b) = s.batch {
            parts.push(format!("batch {b}"));
        }
        parts.push(subset_text(self.subset_fraction, self.pool));
        if let Some(e) = s.epochs {
            parts.push(format!("epochs {e}"));
        }
        parts.join(", ")
    }

    /// The run spec `bertlab train --spec` reads: every setting of the run, the model and source
    /// resolved, and where/how it runs. `batch` overrides the planned batch (OOM retry).
    pub fn spec(&self, target: &SpecTarget<'_>, batch: Option<usize>) -> RunSpec {
        let mut spec = self.settings.to_spec();
        spec.model = target.model.to_string();
        if let Some(source) = target.source {
            spec.source = source.to_string();
        }
        if let Some(b) = batch {
            spec.batch = b;
        }
        spec.out = target.out.to_path_buf();
        spec.device = target.device.to_string();
        spec.cache_dir = target.cache_dir.map(Path::to_path_buf);
        spec
    }

    /// [`Self::spec`] as the TOML file `bertlab train --spec` reads, with a header saying where it
    /// comes from.
    pub fn spec_toml(&self, target: &SpecTarget<'_>, batch: Option<usize>) -> Result<String, PipelineError> {
        self.spec_file(&self.spec(target, batch))
    }

    /// `spec` (this run's, from [`Self::spec`]) as its TOML file, with the header.
    pub fn spec_file(&self, spec: &RunSpec) -> Result<String, PipelineError> {
        let header = format!(
            "# Written by cargo xtask for {}/{} (run {}). Edit the pipeline, not this file.\n",
            self.stage, self.run_id, self.index
        );
        let toml = spec.to_toml().map_err(|e| PipelineError::BadOption {
            flag: e.flag(),
            message: format!("{}: {}", e.value, e.why),
        })?;
        Ok(header + &toml)
    }
}

/// Where and how a planned run is trained (the parts of a run spec that are not configuration).
#[derive(Debug, Clone)]
pub struct SpecTarget<'a> {
    /// Resolved model reference (directory or Hub id).
    pub model: &'a str,
    /// Resolved data source (`None` = `RunSpec`'s default).
    pub source: Option<&'a str>,
    /// Run directory.
    pub out: &'a Path,
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: &'a str,
    /// Token cache shared by the runs.
    pub cache_dir: Option<&'a Path>,
}

/// The batch to retry with after an out-of-memory exit (half, as the notebook instructs: 16 → 8
/// at max_len 256, 8 → 4 at 512); `None` when the batch is already 1.
pub fn oom_retry_batch(batch: usize) -> Option<usize> {
    (batch > 1).then_some(batch / 2)
}

/// `subset 0.25` or, with a pool, `subset 0.5 of pool 0.02 = 0.01`.
pub fn subset_text(fraction: f64, pool: f64) -> String {
    if pool == 1.0 {
        format!("subset {}", format_number(fraction))
    } else {
        format!(
            "subset {} of pool {} = {}",
            format_number(fraction),
            format_number(pool),
            format_number(round_sig(fraction * pool, 12))
        )
    }
}

/// The settings taken from the best run of another problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Inherited {
    /// The problem.
    pub from: StageKey,
    /// Its best run.
    pub run: PlannedRun,
    /// The record of that run (`None` when planning assumes a best run that has not run yet).
    pub record: Option<RunRecord>,
    /// The inherited keys.
    pub keys: Vec<String>,
}

impl Inherited {
    /// `pipeline/problem/run-id`.
    pub fn run_path(&self) -> String {
        format!("{}/{}", self.from, self.run.run_id)
    }
}

/// The plan of one problem.
#[derive(Debug, Clone)]
pub struct StagePlan {
    /// The problem.
    pub stage: Stage,
    /// Its runs; when `blocked`, they lack the inherited keys and their ids are provisional.
    pub runs: Vec<PlannedRun>,
    /// What was inherited.
    pub inherited: Option<Inherited>,
    /// Why the runs cannot be planned yet (the problem depended on has no usable records).
    pub blocked: Option<String>,
}

/// Makes [`StagePlan`]s for the stages of a pipeline.
pub struct Planner<'a> {
    library: &'a PipelineLibrary,
    stages: Vec<Stage>,
    options: &'a PlanOptions,
    records: &'a dyn RecordSource,
    identity: &'a dyn InputIdentity,
    memo: RefCell<BTreeMap<StageKey, StagePlan>>,
    /// The stages being planned, outermost first: a `from_best` that leads back to one of
    /// them is a cycle (across pipeline files, which `chain`'s check does not see).
    planning: RefCell<Vec<StageKey>>,
}

impl<'a> Planner<'a> {
    /// A planner for `stages` (dependencies outside them are loaded from `library`), reading
    /// records from `records`.
    pub fn new(
        library: &'a PipelineLibrary,
        stages: Vec<Stage>,
        options: &'a PlanOptions,
        records: &'a dyn RecordSource,
    ) -> Result<Planner<'a>, PipelineError> {
        options.validate()?;
        for role in options.models.keys() {
            let known = stages.iter().any(|s| s.models.contains_key(role));
            if !known {
                let mut roles: Vec<&String> = stages.iter().flat_map(|s| s.models.keys()).collect();
                roles.sort();
                roles.dedup();
                let roles: Vec<&str> = roles.iter().map(|s| s.as_str()).collect();
                return Err(PipelineError::BadOption {
                    flag: format!("--model {role}={}", options.models[role]),
                    message: format!("no role {role:?} in this pipeline (roles: {})", roles.join(", ")),
                });
            }
        }
        Ok(Planner {
            library,
            stages,
            options,
            records,
            identity: &ReferenceText,
            memo: RefCell::new(BTreeMap::new()),
            planning: RefCell::new(Vec::new()),
        })
    }

    /// Identify models and data by `identity` in run ids (default: the references as written).
    pub fn with_identity(mut self, identity: &'a dyn InputIdentity) -> Planner<'a> {
        self.identity = identity;
        self.memo.borrow_mut().clear();
        self
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Forget memoised plans (after runs have completed).
    pub fn refresh(&self) {
        self.memo.borrow_mut().clear();
    }

    fn find_stage(&self, key: &StageKey) -> Result<Stage, PipelineError> {
        if let Some(s) = self.stages.iter().find(|s| s.key == *key) {
            return Ok(s.clone());
        }
        let pipeline = self.library.load(&key.pipeline)?;
        let problem =
            pipeline.problems.iter().find(|p| p.id == key.problem).ok_or_else(|| PipelineError::Invalid {
                path: pipeline.path.clone(),
                key: "problem".into(),
                message: format!("no problem {:?} (referenced as `from_best = \"{key}\"`)", key.problem),
            })?;
        Ok(Stage::new(&pipeline, problem))
    }

    /// The plan of the stage `key`, resolving its dependency from the records.
    pub fn plan(&self, key: &StageKey) -> Result<StagePlan, PipelineError> {
        if let Some(p) = self.memo.borrow().get(key) {
            return Ok(p.clone());
        }
        let stage = self.find_stage(key)?;
        let mut inherited = None;
        let mut blocked = None;
        if let Some(dep) = stage.dependency() {
            if dep == *key {
                return Err(PipelineError::Invalid {
                    path: stage.path.clone(),
                    key: "from_best".into(),
                    message: "a problem cannot depend on itself".into(),
                });
            }
            if self.planning.borrow().contains(&dep) {
                let chain: Vec<String> = self.planning.borrow().iter().map(ToString::to_string).collect();
                return Err(PipelineError::Invalid {
                    path: stage.path.clone(),
                    key: "from_best".into(),
                    message: format!("cycle: {} → {key} → {dep}", chain.join(" → ")),
                });
            }
            self.planning.borrow_mut().push(key.clone());
            let best = self.best_of(&dep);
            self.planning.borrow_mut().pop();
            match best? {
                Ok((run, record)) => {
                    inherited = Some(Inherited {
                        from: dep,
                        run,
                        record: Some(record),
                        keys: stage.problem.inherited_keys(),
                    })
                }
                Err(reason) => blocked = Some(reason),
            }
        }
        let runs = self.plan_runs(&stage, inherited.as_ref())?;
        let plan = StagePlan { stage, runs, inherited, blocked };
        self.memo.borrow_mut().insert(key.clone(), plan.clone());
        Ok(plan)
    }

    /// The plan of `key` as if `best` were the best run of the problem it depends on: for time
    /// estimates and dry runs before that problem has records. Ids of such runs are provisional.
    pub fn plan_assuming(&self, key: &StageKey, best: &PlannedRun) -> Result<StagePlan, PipelineError> {
        let stage = self.find_stage(key)?;
        let inherited = stage.dependency().map(|from| Inherited {
            from,
            run: best.clone(),
            record: None,
            keys: stage.problem.inherited_keys(),
        });
        let runs = self.plan_runs(&stage, inherited.as_ref())?;
        Ok(StagePlan { stage, runs, inherited, blocked: None })
    }

    /// The best run of `key` from its records, or why there is none yet.
    #[allow(clippy::type_complexity)]
    pub fn best_of(&self, key: &StageKey) -> Result<Result<(PlannedRun, RunRecord), String>, PipelineError> {
        let plan = self.plan(key)?;
        if let Some(reason) = &plan.blocked {
            return Ok(Err(format!("{key} is itself waiting: {reason}")));
        }
        let mut done = Vec::new();
        let mut missing = Vec::new();
        let mut failed = Vec::new();
        for run in &plan.runs {
            match self.records.record(run) {
                Ok(Some(r)) if r.is_completed() => done.push((run.clone(), r)),
                Ok(Some(r)) => {
                    failed.push(format!("{} ({})", run.run_id, r.error.as_deref().unwrap_or("failed")))
                }
                Ok(None) => missing.push(run.run_id.clone()),
                Err(e) => failed.push(e.to_string()),
            }
        }
        if !failed.is_empty() {
            return Ok(Err(format!("{} of its runs failed: {}", failed.len(), failed.join("; "))));
        }
        if !missing.is_empty() {
            return Ok(Err(format!(
                "{} of its {} runs have no record yet under {}",
                missing.len(),
                plan.runs.len(),
                self.records.stage_location(key).display()
            )));
        }
        let records: Vec<&RunRecord> = done.iter().map(|(_, r)| r).collect();
        match select_best(&records) {
            Some(i) => Ok(Ok(done.swap_remove(i))),
            None => Ok(Err("no run recorded a validation accuracy".into())),
        }
    }

    fn plan_runs(
        &self,
        stage: &Stage,
        inherited: Option<&Inherited>,
    ) -> Result<Vec<PlannedRun>, PipelineError> {
        let o = self.options;
        let problem = &stage.problem;
        let mut runs = Vec::new();
        for (index, point) in problem.runs.iter().enumerate() {
            // Layers, later wins: defaults < problem `set` < inherited < run < flags. Subsets
            // written in the pipeline are fractions of the pool; an inherited subset is already
            // effective (it comes from a record).
            let pipeline_layers = stage.defaults.overlay(&problem.set);
            let mut settings = pipeline_layers.clone();
            let mut fraction = pipeline_layers.subset.unwrap_or(1.0);
            let mut subset = round_sig(fraction * o.pool, 12);
            let mut role = settings.model.clone();
            if let Some(inh) = inherited {
                let from = record_settings(inh.record.as_ref(), &inh.run);
                for key in &inh.keys {
                    if point.value_text(key).is_some() {
                        continue;
                    }
                    match key.as_str() {
                        "subset" => {
                            subset = from.subset.or(inh.run.settings.subset).unwrap_or(1.0);
                            fraction = inh.run.subset_fraction;
                        }
                        "model" => role = Some(inh.run.role.clone()),
                        _ => {
                            settings.copy_key(key, &from);
                        }
                    }
                }
            }
            settings = settings.overlay(point);
            if let Some(f) = point.subset {
                fraction = f;
                subset = round_sig(f * o.pool, 12);
            }
            if point.model.is_some() {
                role = point.model.clone();
            }
            if let Some(source) = &o.source {
                settings.source = Some(source.clone());
            }
            if let Some(e) = o.epochs {
                settings.epochs = Some(e);
            }
            if let Some(p) = &o.precision {
                settings.precision = Some(*p);
            }
            settings.subset = Some(subset);
            let role = role.unwrap_or_default();
            settings.model = Some(role.clone());
            let model = o
                .models
                .get(&role)
                .or_else(|| stage.models.get(&role))
                .cloned()
                .or_else(|| inherited.filter(|i| i.run.role == role).map(|i| i.run.model.clone()))
                .ok_or_else(|| PipelineError::Invalid {
                    path: stage.path.clone(),
                    key: format!("models.{role}"),
                    message: format!("role {role:?} of {} is not declared", stage.key),
                })?;
            let identity = format!(
                "{}\nsource_identity={}",
                self.identity.model(&model),
                self.identity.source(settings.source.as_deref())
            );
            let run_id = run_id(&role, &identity, &settings);
            // Two runs of one problem that compute the same thing would share a directory.
            if let Some(twin) = runs.iter().find(|r: &&PlannedRun| r.run_id == run_id) {
                return Err(PipelineError::Invalid {
                    path: stage.path.clone(),
                    key: format!("{}.runs[{index}]", stage.key),
                    message: format!(
                        "the same run as runs[{}] ({run_id}: same model, data and settings, after the \
                         problem's and the command line's settings); remove one or make them differ",
                        twin.index
                    ),
                });
            }
            let (inherited_keys, inherited_from) = match inherited {
                Some(i) => (i.keys.clone(), Some(i.run_path())),
                None => (stage.problem.inherited_keys(), None),
            };
            runs.push(PlannedRun {
                stage: stage.key.clone(),
                index,
                run_id,
                role,
                model,
                settings,
                subset_fraction: fraction,
                pool: o.pool,
                inherited: inherited_keys,
                inherited_from,
            });
        }
        Ok(runs)
    }
}

/// The settings a record ran with (for inheritance: "as recorded", e.g. the batch an
/// out-of-memory retry ended with), with the planned run's role and source reference; the
/// planned settings when there is no record yet.
fn record_settings(record: Option<&RunRecord>, run: &PlannedRun) -> RunOverrides {
    let Some(record) = record else { return run.settings.clone() };
    let mut settings = RunOverrides::of_spec(&record.spec);
    settings.model = Some(run.role.clone());
    settings.source = run.settings.source.clone();
    for key in bertlab_run::PLACEMENT_KEYS {
        settings.copy_key(key, &RunOverrides::default());
    }
    settings
}

/// Index of the best record: the highest validation accuracy at minimum validation loss (the
/// notebook's criterion); ties go to the lower minimum validation loss, then to the earlier run.
/// Records that are not completed or have no validation accuracy are never chosen.
pub fn select_best(records: &[&RunRecord]) -> Option<usize> {
    let mut best: Option<(usize, f64, f64)> = None;
    for (i, r) in records.iter().enumerate() {
        if !r.is_completed() {
            continue;
        }
        let Some(acc) = r.val_acc_at_min_val_loss() else { continue };
        let loss = r.min_val_loss().unwrap_or(f64::INFINITY);
        let better = match best {
            None => true,
            Some((_, a, l)) => acc > a || (acc == a && loss < l),
        };
        if better {
            best = Some((i, acc, loss));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PipelineSpec;
    use crate::store::ResultsStore;
    use bertlab_run::{Precision, RunStatus};

    pub(crate) const P1: &str = r#"
[models]
distilbert = "distilbert/distilbert-base-uncased"
bert = "google-bert/bert-base-uncased"
[defaults]
model = "distilbert"
seed = 42
epochs = 3
patience = 2
optimizer = "adam"
[[problem]]
id = "p1"
answer = "a1a"
set = { subset = 0.25 }
runs = [ { max_len = 128, lr = 2e-5, batch = 32 }, { max_len = 256, lr = 1e-5, batch = 16 }, { max_len = 512, lr = 5e-6, batch = 8 } ]
[[problem]]
id = "p2"
answer = "a2a"
from_best = "p1"
runs = [ { subset = 0.5 }, { subset = 1.0 } ]
[[problem]]
id = "p3"
answer = "a3a"
from_best = "p2"
inherit = ["max_len", "lr", "batch", "subset"]
runs = [ { model = "distilbert" }, { model = "bert" } ]
"#;

    pub(crate) fn record(acc_by_epoch: &[(f64, f64)], batch: usize, subset: f64) -> RunRecord {
        let spec = RunSpec { model: "m".into(), subset, max_len: 256, lr: 1e-5, batch, ..RunSpec::default() };
        crate::testing::record(spec, acc_by_epoch, 11.0)
    }

    fn setup(options: &PlanOptions) -> (tempfile::TempDir, PipelineLibrary, ResultsStore, Vec<Stage>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.toml"), P1).unwrap();
        let lib = PipelineLibrary::new(dir.path());
        let spec = lib.load("x").unwrap();
        let stages = lib.stages(&spec).unwrap();
        let store = ResultsStore::new(dir.path().join("runs"));
        options.validate().unwrap();
        (dir, lib, store, stages)
    }

    fn write_record(store: &ResultsStore, run: &PlannedRun, r: &RunRecord) {
        let path = store.run_dir(run).join("record.json");
        crate::store::write_atomic(&path, serde_json::to_string(r).unwrap().as_bytes()).unwrap();
    }

    #[test]
    fn two_runs_that_compute_the_same_thing_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let twice = P1.replace(
            "runs = [ { max_len = 128, lr = 2e-5, batch = 32 }, { max_len = 256",
            "runs = [ { max_len = 128, lr = 2e-5, batch = 32 }, { batch = 32, lr = 2e-5, max_len = 128 }, { max_len = 256",
        );
        assert_ne!(twice, P1);
        std::fs::write(dir.path().join("x.toml"), twice).unwrap();
        let lib = PipelineLibrary::new(dir.path());
        let stages = lib.stages(&lib.load("x").unwrap()).unwrap();
        let store = ResultsStore::new(dir.path().join("runs"));
        let options = PlanOptions::default();
        let planner = Planner::new(&lib, stages, &options, &store).unwrap();
        let err = planner.plan(&StageKey::parse("x/p1", "")).unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("x/p1.runs[1]") && err.contains("runs[0]"), "{err}");
    }

    #[test]
    fn plans_runs_with_layered_settings_and_stable_ids() {
        let options = PlanOptions::default();
        let (_d, lib, store, stages) = setup(&options);
        let planner = Planner::new(&lib, stages, &options, &store).unwrap();
        let p1 = planner.plan(&StageKey::parse("x/p1", "")).unwrap();
        assert!(p1.blocked.is_none());
        assert_eq!(p1.runs.len(), 3);
        let r = &p1.runs[1];
        assert_eq!((r.settings.max_len, r.settings.lr, r.settings.batch), (Some(256), Some(1e-5), Some(16)));
        assert_eq!((r.settings.seed, r.settings.epochs, r.settings.subset), (Some(42), Some(3), Some(0.25)));
        assert_eq!(r.model, "distilbert/distilbert-base-uncased");
        assert!(r.run_id.starts_with("distilbert-len256-lr1e-5-b16-sub0.25-"), "{}", r.run_id);
        // Stable: planning again gives the same ids; another epoch count gives other ids.
        let again = Planner::new(&lib, planner.stages().to_vec(), &options, &store).unwrap();
        assert_eq!(again.plan(&p1.stage.key).unwrap().runs[1].run_id, r.run_id);
        let o2 = PlanOptions { epochs: Some(1), ..PlanOptions::default() };
        let other = Planner::new(&lib, planner.stages().to_vec(), &o2, &store).unwrap();
        let r2 = &other.plan(&p1.stage.key).unwrap().runs[1];
        assert_ne!(r2.run_id, r.run_id);
        assert_eq!(r2.settings.epochs, Some(1));
    }

    #[test]
    fn subset_flag_scales_every_fraction() {
        let options = PlanOptions { pool: 0.02, ..PlanOptions::default() };
        let (_d, lib, store, stages) = setup(&options);
        let planner = Planner::new(&lib, stages, &options, &store).unwrap();
        let p1 = planner.plan(&StageKey::parse("x/p1", "")).unwrap();
        assert_eq!(p1.runs[0].settings.subset, Some(0.005));
        assert_eq!(p1.runs[0].subset_fraction, 0.25);
        assert_eq!(subset_text(0.25, 0.02), "subset 0.25 of pool 0.02 = 0.005");
        for (i, r) in p1.runs.iter().enumerate() {
            write_record(&store, r, &record(&[(0.4, 0.80 + i as f64 / 100.0)], r.batch().unwrap(), 0.005));
        }
        let p2 = planner.plan(&StageKey::parse("x/p2", "")).unwrap();
        assert!(p2.blocked.is_none(), "{:?}", p2.blocked);
        let subsets: Vec<_> = p2.runs.iter().map(|r| (r.subset_fraction, r.settings.subset)).collect();
        assert_eq!(subsets, vec![(0.5, Some(0.01)), (1.0, Some(0.02))]);
        let toml = p2.runs[1]
            .spec_toml(
                &SpecTarget {
                    model: "/m",
                    source: None,
                    out: Path::new("/o"),
                    device: "cpu",
                    cache_dir: None,
                },
                None,
            )
            .unwrap();
        assert!(toml.contains("subset = 0.02\n"), "{toml}");
    }

    #[test]
    fn dependencies_block_until_records_exist_then_inherit_from_them() {
        let options = PlanOptions::default();
        let (_d, lib, store, stages) = setup(&options);
        let planner = Planner::new(&lib, stages, &options, &store).unwrap();
        let p1 = planner.plan(&StageKey::parse("x/p1", "")).unwrap();
        let p2_key = StageKey::parse("x/p2", "");
        let blocked = planner.plan(&p2_key).unwrap();
        assert!(
            blocked.blocked.as_deref().unwrap().contains("3 of its 3 runs have no record yet"),
            "{:?}",
            blocked.blocked
        );
        let p3 = planner.plan(&StageKey::parse("x/p3", "")).unwrap();
        assert!(p3.blocked.as_deref().unwrap().contains("x/p2 is itself waiting"), "{:?}", p3.blocked);

        // The middle run is best (0.87 at min val loss); its run was retried at batch 8 after
        // an out-of-memory exit, and the record says so: problem 2 inherits batch 8.
        let accs = [[(0.40, 0.85), (0.35, 0.86)], [(0.30, 0.87), (0.33, 0.90)], [(0.31, 0.87), (0.32, 0.88)]];
        for (r, a) in p1.runs.iter().zip(accs) {
            let batch = if r.index == 1 { 8 } else { r.batch().unwrap() };
            write_record(&store, r, &record(&a, batch, 0.25));
        }
        planner.refresh();
        let p2 = planner.plan(&p2_key).unwrap();
        assert!(p2.blocked.is_none());
        let inh = p2.inherited.as_ref().unwrap();
        assert_eq!(inh.run.run_id, p1.runs[1].run_id);
        let r = &p2.runs[0];
        assert_eq!((r.settings.max_len, r.settings.lr, r.settings.batch), (Some(256), Some(1e-5), Some(8)));
        assert_eq!(r.inherited_from.as_deref(), Some(format!("x/p1/{}", p1.runs[1].run_id).as_str()));

        // Problem 3 inherits the subset of problem 2's best run, unscaled, and swaps models.
        for (r, acc) in p2.runs.iter().zip([0.88, 0.91]) {
            write_record(&store, r, &record(&[(0.3, acc)], 8, r.settings.subset.unwrap()));
        }
        planner.refresh();
        let p3 = planner.plan(&StageKey::parse("x/p3", "")).unwrap();
        let roles: Vec<_> =
            p3.runs.iter().map(|r| (r.role.as_str(), r.model.as_str(), r.settings.subset)).collect();
        assert_eq!(
            roles,
            vec![
                ("distilbert", "distilbert/distilbert-base-uncased", Some(1.0)),
                ("bert", "google-bert/bert-base-uncased", Some(1.0))
            ]
        );
        assert_eq!(p3.runs[1].settings.batch, Some(8));
    }

    #[test]
    fn a_failed_dependency_is_named() {
        let options = PlanOptions::default();
        let (_d, lib, store, stages) = setup(&options);
        let planner = Planner::new(&lib, stages, &options, &store).unwrap();
        let p1 = planner.plan(&StageKey::parse("x/p1", "")).unwrap();
        for r in &p1.runs {
            let mut rec = record(&[(0.3, 0.8)], 8, 0.25);
            if r.index == 2 {
                rec.status = RunStatus::Failed;
                rec.error = Some("tensor shape mismatch".into());
                let path = store.run_dir(r).join("failed-record.json");
                crate::store::write_atomic(&path, serde_json::to_string(&rec).unwrap().as_bytes()).unwrap();
                continue;
            }
            write_record(&store, r, &rec);
        }
        let p2 = planner.plan(&StageKey::parse("x/p2", "")).unwrap();
        let why = p2.blocked.unwrap();
        assert!(why.contains("1 of its runs failed") && why.contains("tensor shape mismatch"), "{why}");
    }

    #[test]
    fn model_overrides_and_bad_flags() {
        let options = PlanOptions {
            models: [("bert".to_string(), "/models/b".to_string())].into_iter().collect(),
            ..PlanOptions::default()
        };
        let (_d, lib, store, stages) = setup(&options);
        let planner = Planner::new(&lib, stages.clone(), &options, &store).unwrap();
        assert_eq!(
            planner.plan(&StageKey::parse("x/p1", "")).unwrap().runs[0].model,
            "distilbert/distilbert-base-uncased"
        );
        let bad = PlanOptions {
            models: [("bret".to_string(), "/m".to_string())].into_iter().collect(),
            ..PlanOptions::default()
        };
        let e = Planner::new(&lib, stages.clone(), &bad, &store).err().unwrap().to_string();
        assert!(e.starts_with("--model bret=/m: no role \"bret\"") && e.contains("bert, distilbert"), "{e}");
        let e = Planner::new(&lib, stages, &PlanOptions { pool: 0.0, ..PlanOptions::default() }, &store)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("--subset 0"), "{e}");
        assert!(PlanOptions::parse_model_flag("bert").is_err());
        assert_eq!(PlanOptions::parse_model_flag("bert=x/y").unwrap(), ("bert".into(), "x/y".into()));
    }

    #[test]
    fn oom_retry_halves_the_batch() {
        assert_eq!(oom_retry_batch(16), Some(8));
        assert_eq!(oom_retry_batch(8), Some(4));
        assert_eq!(oom_retry_batch(3), Some(1));
        assert_eq!(oom_retry_batch(1), None);
    }

    #[test]
    fn spec_toml_has_every_setting_and_the_retry_batch() {
        let spec = PipelineSpec::from_toml_str(P1, Path::new("x.toml")).unwrap();
        let options = PlanOptions { precision: Some(Precision::BF16), ..PlanOptions::default() };
        let store = ResultsStore::new("/tmp/none");
        let dir = tempfile::tempdir().unwrap();
        let lib = PipelineLibrary::new(dir.path());
        let stages = vec![Stage::new(&spec, &spec.problems[0])];
        let planner = Planner::new(&lib, stages, &options, &store).unwrap();
        let run = planner.plan(&StageKey::parse("x/p1", "")).unwrap().runs[1].clone();
        let target = SpecTarget {
            model: "/models/d",
            source: Some("/data/imdb"),
            out: Path::new("/runs/x/p1/r"),
            device: "cuda:1",
            cache_dir: Some(Path::new("/runs/cache")),
        };
        let text = run.spec_toml(&target, Some(8)).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["model"].as_str(), Some("/models/d"));
        assert_eq!(table["source"].as_str(), Some("/data/imdb"));
        assert_eq!(table["batch"].as_integer(), Some(8));
        assert_eq!(table["max_len"].as_integer(), Some(256));
        assert_eq!(table["lr"].as_float(), Some(1e-5));
        assert_eq!(table["precision"].as_str(), Some("bf16"));
        assert_eq!(table["optimizer"].as_str(), Some("adam"));
        assert_eq!(table["device"].as_str(), Some("cuda:1"));
        assert_eq!(table["out"].as_str(), Some("/runs/x/p1/r"));
        assert_eq!(table["cache_dir"].as_str(), Some("/runs/cache"));
        assert!(text.starts_with("# Written by cargo xtask"));
    }

    #[test]
    fn best_is_highest_val_acc_at_min_loss_with_deterministic_ties() {
        let a = record(&[(0.34, 0.84), (0.33, 0.86), (0.36, 0.90)], 8, 1.0); // 0.86 at min loss
        let b = record(&[(0.30, 0.87)], 8, 1.0);
        let c = record(&[(0.29, 0.87)], 8, 1.0); // same accuracy, lower loss
        let mut d = record(&[(0.20, 0.99)], 8, 1.0);
        d.status = RunStatus::Failed;
        assert_eq!(select_best(&[&a, &b, &c, &d]), Some(2));
        assert_eq!(select_best(&[&a, &b]), Some(1));
        assert_eq!(select_best(&[&b, &b]), Some(0));
        assert_eq!(select_best(&[&d]), None);
    }
}
