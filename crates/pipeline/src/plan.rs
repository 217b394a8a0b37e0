//! Planning: from pipeline stages, command-line options and existing records to the concrete runs
//! (settings, stable run ids, run spec files), resolving `from_best` through the records of the
//! problem depended on.

use crate::record::RunRecord;
use crate::spec::{
    format_lr, format_number, round_sig, PipelineError, PipelineLibrary, RunSettings, Stage, StageKey,
    SETTING_KEYS,
};
use crate::store::ResultsStore;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options that apply to every run of a plan (the `cargo xtask` flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanOptions {
    /// `--subset F`: the pool is F of the dataset; every subset of a pipeline is a fraction of
    /// the pool, so a run's effective subset is F × fraction.
    pub pool: f64,
    /// `--model role=M`: replaces the reference of a role.
    pub models: BTreeMap<String, String>,
    /// `--source S`: replaces every run's data source.
    pub source: Option<String>,
    /// `--epochs N`.
    pub epochs: Option<usize>,
    /// `--precision P`.
    pub precision: Option<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { pool: 1.0, models: BTreeMap::new(), source: None, epochs: None, precision: None }
    }
}

impl PlanOptions {
    /// Check the values; errors name the flag.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let bad = |flag: String, message: &str| PipelineError::BadOption { flag, message: message.into() };
        if !(self.pool > 0.0 && self.pool <= 1.0) {
            return Err(bad(format!("--subset {}", self.pool), "must be a fraction in (0, 1]"));
        }
        if self.epochs == Some(0) {
            return Err(bad("--epochs 0".into(), "must be at least 1"));
        }
        if let Some(p) = &self.precision {
            if !["f32", "f16", "bf16"].contains(&p.as_str()) {
                return Err(bad(format!("--precision {p}"), "expected f32, f16 or bf16"));
            }
        }
        for (role, m) in &self.models {
            if m.trim().is_empty() {
                return Err(bad(format!("--model {role}="), "needs a Hub id or a directory after `=`"));
            }
        }
        Ok(())
    }

    /// Parse a `--model role=M` flag value.
    pub fn parse_model_flag(flag: &str) -> Result<(String, String), PipelineError> {
        match flag.split_once('=') {
            Some((role, m)) if !role.trim().is_empty() && !m.trim().is_empty() => {
                Ok((role.trim().to_string(), m.trim().to_string()))
            }
            _ => Err(PipelineError::BadOption {
                flag: format!("--model {flag}"),
                message: "expected ROLE=MODEL, e.g. --model distilbert=../shared/models/all-MiniLM-L6-v2"
                    .into(),
            }),
        }
    }
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
    pub settings: RunSettings,
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

    /// The run spec (TOML) `bertlab train --spec` reads: every setting of the run, the model and
    /// source resolved, and where/how it runs. `batch` overrides the planned batch (OOM retry).
    pub fn spec_toml(&self, target: &SpecTarget<'_>, batch: Option<usize>) -> String {
        let mut table = toml::Table::new();
        let s = &self.settings;
        let mut put = |key: &str, value: toml::Value| {
            table.insert(key.to_string(), value);
        };
        put("model", toml::Value::String(target.model.to_string()));
        if let Some(source) = target.source {
            put("source", toml::Value::String(source.to_string()));
        }
        for key in SETTING_KEYS {
            if matches!(*key, "model" | "source") {
                continue;
            }
            let value = match *key {
                "subset" => s.subset.map(toml::Value::Float),
                "lr" => s.lr.map(toml::Value::Float),
                "warmup_ratio" => s.warmup_ratio.map(toml::Value::Float),
                "weight_decay" => s.weight_decay.map(toml::Value::Float),
                "grad_clip" => s.grad_clip.map(toml::Value::Float),
                "batch" => batch.or(s.batch).map(|b| toml::Value::Integer(b as i64)),
                "seed" => s.seed.map(|v| toml::Value::Integer(v as i64)),
                "max_len" => s.max_len.map(|v| toml::Value::Integer(v as i64)),
                "eval_batch" => s.eval_batch.map(|v| toml::Value::Integer(v as i64)),
                "epochs" => s.epochs.map(|v| toml::Value::Integer(v as i64)),
                "accum" => s.accum.map(|v| toml::Value::Integer(v as i64)),
                "pad_multiple" => s.pad_multiple.map(|v| toml::Value::Integer(v as i64)),
                "patience" => s.patience.map(|v| toml::Value::Integer(v as i64)),
                other => s.get(other).map(toml::Value::String),
            };
            if let Some(v) = value {
                put(key, v);
            }
        }
        put("out", toml::Value::String(target.out.display().to_string()));
        put("device", toml::Value::String(target.device.to_string()));
        if let Some(cache) = target.cache_dir {
            put("cache_dir", toml::Value::String(cache.display().to_string()));
        }
        let header = format!(
            "# Written by cargo xtask for {}/{} (run {}). Edit the pipeline, not this file.\n",
            self.stage, self.run_id, self.index
        );
        header + &toml::to_string(&table).expect("a table of scalars serialises")
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
    /// The record of that run.
    pub record: RunRecord,
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

/// Turns references in pipelines into something `bertlab` can open: `shared:REL` and
/// `${BERTLAB_SHARED}` → the shared data folder, `${VAR}` → the environment, existing relative
/// paths → absolute ones. Hub ids pass through.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// The shared folder (`$BERTLAB_SHARED`, default `../shared` beside the workspace).
    pub shared_dir: Option<PathBuf>,
    /// Relative paths are relative to this directory (the invoking shell's).
    pub base_dir: PathBuf,
}

impl Resolver {
    /// Resolve `value`; `what` names the setting in errors (`model role bert`).
    pub fn resolve(&self, what: &str, value: &str) -> Result<String, PipelineError> {
        let err =
            |message: String| PipelineError::Reference { what: what.into(), value: value.into(), message };
        let no_shared = || {
            err("the shared data folder was not found: set BERTLAB_SHARED or put it at ../shared beside the workspace".into())
        };
        let mut text = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            text.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| err("unclosed `${`".into()))?;
            let name = &after[..end];
            let substituted = match std::env::var(name) {
                Ok(v) if !v.is_empty() => v,
                _ if name == "BERTLAB_SHARED" => {
                    self.shared_dir.as_ref().ok_or_else(no_shared)?.display().to_string()
                }
                _ => return Err(err(format!("environment variable {name} is not set"))),
            };
            text.push_str(&substituted);
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if let Some(rel) = text.strip_prefix("shared:") {
            let shared = self.shared_dir.as_ref().ok_or_else(no_shared)?;
            let path = shared.join(rel);
            if !path.exists() {
                return Err(err(format!("{} does not exist", path.display())));
            }
            return Ok(path.display().to_string());
        }
        if text == "hub" || text.starts_with("hub:") {
            return Ok(text);
        }
        let path = Path::new(&text);
        let path = if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) };
        if path.exists() {
            return Ok(path.canonicalize().unwrap_or(path).display().to_string());
        }
        let looks_like_path = text.starts_with('.') || text.starts_with('/') || text.matches('/').count() > 1;
        if looks_like_path {
            return Err(err(format!("{} does not exist", path.display())));
        }
        Ok(text)
    }
}

/// Makes [`StagePlan`]s for the stages of a pipeline.
pub struct Planner<'a> {
    library: &'a PipelineLibrary,
    stages: Vec<Stage>,
    options: &'a PlanOptions,
    store: &'a ResultsStore,
    memo: RefCell<BTreeMap<StageKey, StagePlan>>,
}

impl<'a> Planner<'a> {
    /// A planner for `stages` (dependencies outside them are loaded from `library`), reading
    /// records from `store`.
    pub fn new(
        library: &'a PipelineLibrary,
        stages: Vec<Stage>,
        options: &'a PlanOptions,
        store: &'a ResultsStore,
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
        Ok(Planner { library, stages, options, store, memo: RefCell::new(BTreeMap::new()) })
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
            match self.best_of(&dep)? {
                Ok((run, record)) => {
                    inherited =
                        Some(Inherited { from: dep, run, record, keys: stage.problem.inherited_keys() })
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
            record: RunRecord::default(),
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
            match self.store.record(run) {
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
                self.store.stage_dir(key).display()
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
                let from = record_settings(&inh.record, &inh.run);
                for key in &inh.keys {
                    if point.get(key).is_some() {
                        continue;
                    }
                    match key.as_str() {
                        "subset" => {
                            subset = from.subset.unwrap_or(inh.run.settings.subset.unwrap_or(1.0));
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
                settings.precision = Some(p.clone());
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
            let run_id = run_id(&role, &model, &settings);
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

/// The settings a record ran with, as [`RunSettings`] (for inheritance: "as recorded").
fn record_settings(record: &RunRecord, run: &PlannedRun) -> RunSettings {
    let s = &record.spec;
    let from_run = &run.settings;
    RunSettings {
        model: Some(run.role.clone()),
        source: from_run.source.clone(),
        subset: s.subset.or(from_run.subset),
        seed: s.seed.or(from_run.seed),
        max_len: s.max_len.or(from_run.max_len),
        truncation: s.truncation.clone().or(from_run.truncation.clone()),
        lr: s.lr.or(from_run.lr),
        batch: s.batch.or(from_run.batch),
        eval_batch: s.eval_batch.or(from_run.eval_batch),
        epochs: s.epochs.or(from_run.epochs),
        optimizer: s.optimizer.clone().or(from_run.optimizer.clone()),
        schedule: s.schedule.clone().or(from_run.schedule.clone()),
        warmup_ratio: s.warmup_ratio.or(from_run.warmup_ratio),
        weight_decay: s.weight_decay.or(from_run.weight_decay),
        grad_clip: s.grad_clip.or(from_run.grad_clip),
        accum: s.accum.or(from_run.accum),
        precision: s.precision.clone().or(from_run.precision.clone()),
        padding: s.padding.clone().or(from_run.padding.clone()),
        pad_multiple: s.pad_multiple.or(from_run.pad_multiple),
        patience: s.patience.or(from_run.patience),
        restore_best: s.restore_best.clone().or(from_run.restore_best.clone()),
    }
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

/// The id of a run: its role and the settings sweeps vary, readable, then a hash of every
/// setting and the model reference, so that changing anything (epochs, model, precision) gives
/// another directory while the same configuration always gets the same one.
pub fn run_id(role: &str, model: &str, settings: &RunSettings) -> String {
    let mut parts = vec![role.to_string()];
    if let Some(m) = settings.max_len {
        parts.push(format!("len{m}"));
    }
    if let Some(lr) = settings.lr {
        parts.push(format!("lr{}", format_lr(lr)));
    }
    if let Some(b) = settings.batch {
        parts.push(format!("b{b}"));
    }
    if let Some(s) = settings.subset {
        parts.push(format!("sub{}", format_number(s)));
    }
    let mut canonical = format!("model_ref={model}\n");
    for key in SETTING_KEYS {
        if let Some(v) = settings.get(key) {
            canonical.push_str(&format!("{key}={v}\n"));
        }
    }
    let h = fnv1a64(canonical.as_bytes());
    parts.push(format!("{:08x}", (h ^ (h >> 32)) as u32));
    parts.join("-")
}

/// FNV-1a, 64 bits: stable across platforms and Rust versions (unlike `DefaultHasher`).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PipelineSpec;

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
        let json = serde_json::json!({
            "status": "completed",
            "spec": {"model": "m", "source": "hub", "subset": subset, "max_len": 256, "lr": 1e-5, "batch": batch},
            "epochs": acc_by_epoch.iter().enumerate().map(|(i, (loss, acc))| serde_json::json!({
                "epoch": i + 1, "train_loss": 0.5, "train_acc": 0.8, "val_loss": loss, "val_acc": acc,
                "train_seconds": 10.0, "val_seconds": 1.0
            })).collect::<Vec<_>>(),
        });
        serde_json::from_value(json).unwrap()
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
        let toml = p2.runs[1].spec_toml(
            &SpecTarget { model: "/m", source: None, out: Path::new("/o"), device: "cpu", cache_dir: None },
            None,
        );
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
                rec.status = "failed".into();
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
        let options = PlanOptions { precision: Some("bf16".into()), ..PlanOptions::default() };
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
        let text = run.spec_toml(&target, Some(8));
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
        d.status = "failed".into();
        assert_eq!(select_best(&[&a, &b, &c, &d]), Some(2));
        assert_eq!(select_best(&[&a, &b]), Some(1));
        assert_eq!(select_best(&[&b, &b]), Some(0));
        assert_eq!(select_best(&[&d]), None);
    }

    #[test]
    fn references_resolve_shared_env_and_paths() {
        let shared = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(shared.path().join("fixtures/tiny")).unwrap();
        let r =
            Resolver { shared_dir: Some(shared.path().to_path_buf()), base_dir: shared.path().to_path_buf() };
        let want = shared.path().join("fixtures/tiny").display().to_string();
        assert_eq!(r.resolve("model", "shared:fixtures/tiny").unwrap(), want);
        if std::env::var_os("BERTLAB_SHARED").is_none() {
            assert_eq!(r.resolve("model", "${BERTLAB_SHARED}/fixtures/tiny").unwrap(), want);
        }
        assert_eq!(
            r.resolve("model", "fixtures/tiny").unwrap(),
            shared.path().canonicalize().unwrap().join("fixtures/tiny").display().to_string()
        );
        assert_eq!(
            r.resolve("model", "google-bert/bert-base-uncased").unwrap(),
            "google-bert/bert-base-uncased"
        );
        assert_eq!(r.resolve("source", "hub").unwrap(), "hub");
        let e = r.resolve("model role bert", "shared:fixtures/nope").unwrap_err().to_string();
        assert!(
            e.starts_with("model role bert = \"shared:fixtures/nope\"") && e.contains("does not exist"),
            "{e}"
        );
        let e = r.resolve("model", "${BERTLAB_SURELY_UNSET_VAR}/x").unwrap_err().to_string();
        assert!(e.contains("BERTLAB_SURELY_UNSET_VAR is not set"), "{e}");
        let none = Resolver { shared_dir: None, base_dir: PathBuf::from("/") };
        assert!(none.resolve("source", "shared:data").unwrap_err().to_string().contains("BERTLAB_SHARED"));
        assert!(none.resolve("model", "./missing/dir").unwrap_err().to_string().contains("does not exist"));
    }
}
