//! Pipeline specs: the TOML files in `pipelines/` (format in the crate README).
//!
//! A pipeline names model *roles* (`[models]`), default run settings (`[defaults]`) and a list of
//! problems (`[[problem]]`), each a list of runs; or it chains other pipelines (`chain`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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
    /// A record file that is not a run record.
    #[error("{path}: not a run record: {message}", path = path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        message: String,
    },
}

/// Settings of a run, any of which a pipeline may leave unset. Keys and values are those of
/// `bertlab train`'s run spec (`RunSpec`), except `model`, which names a role of `[models]`.
/// Unset keys take `RunSpec`'s defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// A model role declared in `[models]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Data: `hub`, `hub:ORG/NAME[@REV]`, a directory, `shared:REL`, or with `${VAR}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Fraction of the (pool of the) dataset, in (0, 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<f64>,
    /// Seed of splits, initialisation, dropout and batch order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Tokens per sequence, `[CLS]` and `[SEP]` included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
    /// `head`, `tail` or `head-tail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    /// Peak learning rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Training batch size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// Batch size of validation and test prediction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_batch: Option<usize>,
    /// Maximum number of epochs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// `adam` (Keras) or `adamw` (HF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<String>,
    /// `constant` or `linear`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Warmup fraction of the optimizer steps (linear schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f64>,
    /// Weight decay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// Micro-batches per optimizer step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accum: Option<usize>,
    /// `f32`, `f16` or `bf16`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// `bucket` or `fixed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub padding: Option<String>,
    /// Bucketed lengths are rounded up to a multiple of this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pad_multiple: Option<usize>,
    /// Epochs without val-loss improvement before stopping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    /// `always` or `on-stop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_best: Option<String>,
}

/// Apply `$m!(field)` to every field of [`RunSettings`], so that merging, hashing and key lists
/// cannot forget one.
macro_rules! for_each_setting {
    ($m:ident) => {
        $m!(model);
        $m!(source);
        $m!(subset);
        $m!(seed);
        $m!(max_len);
        $m!(truncation);
        $m!(lr);
        $m!(batch);
        $m!(eval_batch);
        $m!(epochs);
        $m!(optimizer);
        $m!(schedule);
        $m!(warmup_ratio);
        $m!(weight_decay);
        $m!(grad_clip);
        $m!(accum);
        $m!(precision);
        $m!(padding);
        $m!(pad_multiple);
        $m!(patience);
        $m!(restore_best);
    };
}

/// Every key of [`RunSettings`], in declaration order.
pub const SETTING_KEYS: &[&str] = &[
    "model",
    "source",
    "subset",
    "seed",
    "max_len",
    "truncation",
    "lr",
    "batch",
    "eval_batch",
    "epochs",
    "optimizer",
    "schedule",
    "warmup_ratio",
    "weight_decay",
    "grad_clip",
    "accum",
    "precision",
    "padding",
    "pad_multiple",
    "patience",
    "restore_best",
];

/// Allowed values of the string-valued settings (those of `RunSpec`'s enums).
const CHOICES: &[(&str, &[&str])] = &[
    ("truncation", &["head", "tail", "head-tail"]),
    ("optimizer", &["adam", "adamw"]),
    ("schedule", &["constant", "linear"]),
    ("precision", &["f32", "f16", "bf16"]),
    ("padding", &["bucket", "fixed"]),
    ("restore_best", &["always", "on-stop"]),
];

impl RunSettings {
    /// `self` with every key that `other` sets replaced by `other`'s value.
    pub fn overlay(&self, other: &RunSettings) -> RunSettings {
        let mut out = self.clone();
        macro_rules! take {
            ($f:ident) => {
                if other.$f.is_some() {
                    out.$f = other.$f.clone();
                }
            };
        }
        for_each_setting!(take);
        out
    }

    /// The keys that are set, in declaration order.
    pub fn keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        macro_rules! push {
            ($f:ident) => {
                if self.$f.is_some() {
                    keys.push(stringify!($f));
                }
            };
        }
        for_each_setting!(push);
        keys
    }

    /// The value of `key` as text (`None` when unset or unknown).
    pub fn get(&self, key: &str) -> Option<String> {
        if key == "lr" {
            return self.lr.map(format_lr);
        }
        macro_rules! value {
            ($f:ident) => {
                if key == stringify!($f) {
                    return self.$f.as_ref().map(|v| SettingValue::text(v));
                }
            };
        }
        for_each_setting!(value);
        None
    }

    /// Copy `key` from `other` (whether set or not); false when `key` is not a setting.
    pub fn copy_key(&mut self, key: &str, other: &RunSettings) -> bool {
        macro_rules! copy {
            ($f:ident) => {
                if key == stringify!($f) {
                    self.$f = other.$f.clone();
                    return true;
                }
            };
        }
        for_each_setting!(copy);
        false
    }

    /// Check ranges and choices; `at` prefixes the key in errors (`problem[0].runs[2]`).
    pub fn validate(&self, path: &Path, at: &str) -> Result<(), PipelineError> {
        let bad = |key: &str, message: String| PipelineError::Invalid {
            path: path.to_path_buf(),
            key: if at.is_empty() { key.to_string() } else { format!("{at}.{key}") },
            message,
        };
        if let Some(s) = self.subset {
            if !(s > 0.0 && s <= 1.0) {
                return Err(bad("subset", format!("{s} is not a fraction in (0, 1]")));
            }
        }
        if let Some(lr) = self.lr {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(bad("lr", format!("{lr} is not a positive number")));
            }
        }
        if let Some(m) = self.max_len {
            if !(3..=4096).contains(&m) {
                return Err(bad("max_len", format!("{m} is not in 3..=4096")));
            }
        }
        for (key, value) in [
            ("batch", self.batch),
            ("eval_batch", self.eval_batch),
            ("epochs", self.epochs),
            ("accum", self.accum),
            ("pad_multiple", self.pad_multiple),
        ] {
            if value == Some(0) {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if let Some(w) = self.warmup_ratio {
            if !(0.0..1.0).contains(&w) {
                return Err(bad("warmup_ratio", format!("{w} is not in [0, 1)")));
            }
        }
        for (key, value) in [("weight_decay", self.weight_decay), ("grad_clip", self.grad_clip)] {
            if let Some(v) = value {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(bad(key, format!("{v} is not a non-negative number")));
                }
            }
        }
        for (key, allowed) in CHOICES {
            if let Some(v) = self.get(key) {
                if !allowed.contains(&v.as_str()) {
                    return Err(bad(key, format!("{v:?} is not one of {}", allowed.join(", "))));
                }
            }
        }
        Ok(())
    }
}

/// Text form of a setting's value, shared by run ids, hashes and reports.
pub(crate) trait SettingValue {
    fn text(&self) -> String;
}

impl SettingValue for String {
    fn text(&self) -> String {
        self.clone()
    }
}

impl SettingValue for usize {
    fn text(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for u64 {
    fn text(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for f64 {
    fn text(&self) -> String {
        format_number(*self)
    }
}

/// A number as short as it reads: `2e-5`, `7.5e-6`, `0.25`, `1`, `128`.
pub fn format_number(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let x = round_sig(x, 12);
    if x.abs() < 1e-3 || x.abs() >= 1e6 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A learning rate in scientific notation: `1e-3`, `2e-5`, `7.5e-6`.
pub fn format_lr(x: f64) -> String {
    if x == 0.0 || x.abs() >= 1.0 {
        return format_number(x);
    }
    format!("{:e}", round_sig(x, 12))
}

/// `x` rounded to `digits` significant digits (removes binary noise such as 0.15000000000000002).
pub fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// One problem of a pipeline: runs that share settings and, optionally, the best configuration
/// of an earlier problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemSpec {
    /// Identifier, unique in the pipeline; names the problem's directory.
    pub id: String,
    /// Human title for reports.
    #[serde(default)]
    pub title: String,
    /// Name of the graded answer (`a1a`): the validation accuracy at minimum validation loss of
    /// the best run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The problem whose best run supplies the `inherit` keys: `problem` of this pipeline or
    /// `pipeline/problem` of another pipeline file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_best: Option<String>,
    /// Keys taken from the best run's record (default `max_len`, `lr`, `batch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit: Option<Vec<String>>,
    /// Settings shared by every run of the problem.
    #[serde(default)]
    pub set: RunSettings,
    /// The runs, each a table of the settings that differ.
    #[serde(default)]
    pub runs: Vec<RunSettings>,
}

impl ProblemSpec {
    /// The keys inherited from the best run of `from_best`.
    pub fn inherited_keys(&self) -> Vec<String> {
        match (&self.from_best, &self.inherit) {
            (None, _) => Vec::new(),
            (Some(_), Some(keys)) => keys.clone(),
            (Some(_), None) => DEFAULT_INHERIT.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// What a problem with `from_best` and no `inherit` takes from the best run.
pub const DEFAULT_INHERIT: &[&str] = &["max_len", "lr", "batch"];

/// A pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name; the file stem when absent. Names the pipeline's results directory.
    #[serde(default)]
    pub name: String,
    /// Human title for reports.
    #[serde(default)]
    pub title: String,
    /// Other pipelines (file stems in the same directory) run first, in order.
    #[serde(default)]
    pub chain: Vec<String>,
    /// Model roles: role → Hub id, local directory, `shared:REL` or a path with `${VAR}`.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// Settings of every run.
    #[serde(default)]
    pub defaults: RunSettings,
    /// The problems, run in order.
    #[serde(default, rename = "problem")]
    pub problems: Vec<ProblemSpec>,
    /// Where it was read from (not part of the file).
    #[serde(skip)]
    pub path: PathBuf,
}

impl PipelineSpec {
    /// Parse pipeline TOML; `path` names it in errors and gives the default name.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<PipelineSpec, PipelineError> {
        let mut spec: PipelineSpec = toml::from_str(text)
            .map_err(|e| PipelineError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        spec.path = path.to_path_buf();
        if spec.name.is_empty() {
            spec.name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("pipeline").to_string();
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Read and check a pipeline file.
    pub fn from_file(path: &Path) -> Result<PipelineSpec, PipelineError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })?;
        PipelineSpec::from_toml_str(&text, path)
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> PipelineError {
        PipelineError::Invalid { path: self.path.clone(), key: key.into(), message: message.into() }
    }

    /// Check names, roles, values and references within the file.
    pub fn validate(&self) -> Result<(), PipelineError> {
        check_name(&self.name).map_err(|m| self.invalid("name", m))?;
        if self.problems.is_empty() && self.chain.is_empty() {
            return Err(self.invalid("problem", "a pipeline needs at least one [[problem]] or a `chain`"));
        }
        for (i, c) in self.chain.iter().enumerate() {
            check_name(c).map_err(|m| self.invalid(format!("chain[{i}]"), m))?;
            if *c == self.name {
                return Err(self.invalid(format!("chain[{i}]"), "a pipeline cannot chain itself"));
            }
        }
        for (role, reference) in &self.models {
            check_name(role).map_err(|m| self.invalid(format!("models.{role}"), m))?;
            if reference.trim().is_empty() {
                return Err(self.invalid(format!("models.{role}"), "is empty"));
            }
        }
        self.defaults.validate(&self.path, "defaults")?;
        self.check_role(&self.defaults, "defaults")?;
        let mut seen = Vec::new();
        for (pi, p) in self.problems.iter().enumerate() {
            let at = format!("problem[{pi}]");
            check_name(&p.id).map_err(|m| self.invalid(format!("{at}.id"), m))?;
            if seen.contains(&&p.id) {
                return Err(self.invalid(format!("{at}.id"), format!("duplicate problem id {:?}", p.id)));
            }
            if p.runs.is_empty() {
                return Err(self.invalid(format!("{at}.runs"), "a problem needs at least one run"));
            }
            if let Some(answer) = &p.answer {
                check_name(answer).map_err(|m| self.invalid(format!("{at}.answer"), m))?;
            }
            if p.inherit.is_some() && p.from_best.is_none() {
                return Err(self.invalid(format!("{at}.inherit"), "needs `from_best`"));
            }
            if let Some(dep) = &p.from_best {
                let local = !dep.contains('/');
                if local && !seen.contains(&dep) {
                    return Err(self.invalid(
                        format!("{at}.from_best"),
                        format!("{dep:?} is not an earlier problem of this pipeline (use `pipeline/problem` for another file)"),
                    ));
                }
                if dep.split('/').count() > 2 || dep.split('/').any(|s| s.is_empty()) {
                    return Err(self.invalid(
                        format!("{at}.from_best"),
                        format!("{dep:?}: expected `problem` or `pipeline/problem`"),
                    ));
                }
                for (ki, key) in p.inherited_keys().iter().enumerate() {
                    if !SETTING_KEYS.contains(&key.as_str()) || key == "source" {
                        return Err(self.invalid(
                            format!("{at}.inherit[{ki}]"),
                            format!(
                                "{key:?} is not an inheritable setting (one of {})",
                                SETTING_KEYS.join(", ")
                            ),
                        ));
                    }
                }
            }
            p.set.validate(&self.path, &format!("{at}.set"))?;
            self.check_role(&p.set, &format!("{at}.set"))?;
            for (ri, r) in p.runs.iter().enumerate() {
                let at = format!("{at}.runs[{ri}]");
                r.validate(&self.path, &at)?;
                self.check_role(r, &at)?;
                let merged = self.defaults.overlay(&p.set).overlay(r);
                if merged.model.is_none() && !p.inherited_keys().iter().any(|k| k == "model") {
                    return Err(self.invalid(
                        format!("{at}.model"),
                        "no model role set (in [defaults], `set` or the run)",
                    ));
                }
            }
            seen.push(&p.id);
        }
        Ok(())
    }

    fn check_role(&self, s: &RunSettings, at: &str) -> Result<(), PipelineError> {
        match &s.model {
            Some(role) if !self.models.contains_key(role) => Err(self.invalid(
                format!("{at}.model"),
                format!("role {role:?} is not declared in [models] (declared: {})", self.roles()),
            )),
            _ => Ok(()),
        }
    }

    /// Declared roles, comma-separated.
    pub fn roles(&self) -> String {
        let roles: Vec<&str> = self.models.keys().map(String::as_str).collect();
        if roles.is_empty() {
            "none".into()
        } else {
            roles.join(", ")
        }
    }
}

/// Names become directory names: ASCII letters, digits, `-`, `_`, `.`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.starts_with('.')
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!("{name:?}: use ASCII letters, digits, `-`, `_` and `.` only"));
    }
    Ok(())
}

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
    pub defaults: RunSettings,
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
title = "t"
[models]
distilbert = "distilbert/distilbert-base-uncased"
[defaults]
model = "distilbert"
seed = 42
[[problem]]
id = "p1"
answer = "a1a"
set = { subset = 0.25 }
runs = [ { max_len = 128, lr = 2e-5, batch = 32 }, { max_len = 256, lr = 1e-5, batch = 16 } ]
[[problem]]
id = "p2"
from_best = "p1"
runs = [ { subset = 0.5 }, { subset = 1.0 } ]
"#;

    fn parse(text: &str) -> Result<PipelineSpec, PipelineError> {
        PipelineSpec::from_toml_str(text, Path::new("pipelines/x.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_problems_runs_and_defaults() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.name, "x");
        assert_eq!(p.problems.len(), 2);
        assert_eq!(p.problems[0].runs[1].max_len, Some(256));
        assert_eq!(p.problems[0].runs[0].lr, Some(2e-5));
        assert_eq!(p.problems[0].set.subset, Some(0.25));
        assert_eq!(p.problems[1].inherited_keys(), vec!["max_len", "lr", "batch"]);
        assert_eq!(p.defaults.seed, Some(42));
    }

    #[test]
    fn unknown_keys_are_named_with_the_file() {
        let e = err(&GOOD.replace("max_len = 256", "max_length = 256"));
        assert!(e.contains("pipelines/x.toml") && e.contains("max_length"), "{e}");
        let e = err(&GOOD.replace("title = \"t\"", "titel = \"t\""));
        assert!(e.contains("titel"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_path() {
        let e = err(&GOOD.replace("lr = 1e-5", "lr = -1e-5"));
        assert!(e.contains("`problem[0].runs[1].lr`") && e.contains("-0.00001"), "{e}");
        let e = err(&GOOD.replace("seed = 42", "seed = 42\noptimizer = \"sgd\""));
        assert!(e.contains("`defaults.optimizer`") && e.contains("adam, adamw"), "{e}");
        let e = err(&GOOD.replace("{ subset = 0.5 }", "{ subset = 1.5 }"));
        assert!(e.contains("`problem[1].runs[0].subset`"), "{e}");
        let e = err(&GOOD.replace("batch = 32", "batch = 0"));
        assert!(e.contains("`problem[0].runs[0].batch`: must be at least 1"), "{e}");
    }

    #[test]
    fn roles_dependencies_and_ids_are_checked() {
        let e = err(&GOOD.replace("model = \"distilbert\"", "model = \"bert\""));
        assert!(
            e.contains("`defaults.model`") && e.contains("\"bert\"") && e.contains("declared: distilbert"),
            "{e}"
        );
        let e = err(&GOOD.replace("from_best = \"p1\"", "from_best = \"p9\""));
        assert!(e.contains("`problem[1].from_best`") && e.contains("p9"), "{e}");
        let e = err(&GOOD.replace("id = \"p2\"", "id = \"p1\""));
        assert!(e.contains("duplicate problem id"), "{e}");
        let e =
            err(&GOOD
                .replace("from_best = \"p1\"", "from_best = \"p1\"\ninherit = [\"max_len\", \"colour\"]"));
        assert!(e.contains("`problem[1].inherit[1]`") && e.contains("colour"), "{e}");
        let e = err(&GOOD.replace("id = \"p2\"", "id = \"p 2\""));
        assert!(e.contains("`problem[1].id`"), "{e}");
        let e = err("title = \"empty\"\n");
        assert!(e.contains("at least one [[problem]]"), "{e}");
    }

    #[test]
    fn a_missing_role_is_reported_per_run() {
        let text = GOOD.replace("model = \"distilbert\"\n", "");
        let e = err(&text);
        assert!(e.contains("`problem[0].runs[0].model`: no model role set"), "{e}");
    }

    #[test]
    fn overlay_and_keys() {
        let a = RunSettings { lr: Some(1e-5), batch: Some(32), ..Default::default() };
        let b = RunSettings { batch: Some(16), max_len: Some(256), ..Default::default() };
        let c = a.overlay(&b);
        assert_eq!((c.lr, c.batch, c.max_len), (Some(1e-5), Some(16), Some(256)));
        assert_eq!(c.keys(), vec!["max_len", "lr", "batch"]);
        assert_eq!(c.get("lr").as_deref(), Some("1e-5"));
        assert_eq!(c.get("colour"), None);
        let mut d = RunSettings::default();
        assert!(d.copy_key("max_len", &c) && !d.copy_key("colour", &c));
        assert_eq!(d.max_len, Some(256));
        assert_eq!(SETTING_KEYS.len(), RunSettings::default().overlay(&full()).keys().len());
    }

    fn full() -> RunSettings {
        RunSettings {
            model: Some("m".into()),
            source: Some("s".into()),
            subset: Some(1.0),
            seed: Some(1),
            max_len: Some(8),
            truncation: Some("head".into()),
            lr: Some(1.0),
            batch: Some(1),
            eval_batch: Some(1),
            epochs: Some(1),
            optimizer: Some("adam".into()),
            schedule: Some("constant".into()),
            warmup_ratio: Some(0.0),
            weight_decay: Some(0.0),
            grad_clip: Some(1.0),
            accum: Some(1),
            precision: Some("f32".into()),
            padding: Some("bucket".into()),
            pad_multiple: Some(8),
            patience: Some(2),
            restore_best: Some("always".into()),
        }
    }

    /// This crate mirrors `RunSpec` without depending on the training crate: its keys must stay
    /// `RunSpec`'s fields (less those xtask sets per run: out, device, cache_dir, offline).
    #[test]
    fn setting_keys_are_the_run_spec_fields() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../train/src/spec.rs");
        let Ok(source) = std::fs::read_to_string(path) else {
            eprintln!("skipping: {path} not found");
            return;
        };
        let body = source.split("pub struct RunSpec {").nth(1).expect("RunSpec in spec.rs");
        let body = &body[..body.find("\n}").expect("end of RunSpec")];
        let fields: Vec<&str> = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub ").and_then(|r| r.split_once(':')).map(|(n, _)| n))
            .collect();
        let mut expected: Vec<&str> = SETTING_KEYS.to_vec();
        expected.extend(["out", "device", "cache_dir", "offline"]);
        assert_eq!(fields, expected);
    }

    #[test]
    fn numbers_format_short() {
        assert_eq!(format_number(2e-5), "2e-5");
        assert_eq!(format_number(7.5e-6), "7.5e-6");
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(0.02 * 0.75), "0.015");
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(128.0), "128");
        assert_eq!(format_number(0.004), "0.004");
        assert_eq!(format_lr(0.001), "1e-3");
        assert_eq!(format_lr(7.5e-6), "7.5e-6");
    }

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
