//! Pipeline files: the TOML files in `pipelines/` (format in the crate README).
//!
//! A pipeline names model *roles* (`[models]`), default run settings (`[defaults]`) and a list of
//! problems (`[[problem]]`), each a list of runs; or it chains other pipelines (`chain`). Every
//! settings table is a [`RunOverrides`]: the keys and values of `bertlab train`'s run spec, except
//! `model`, which names a role of `[models]`; unset keys take the run spec's defaults.

use crate::error::PipelineError;
use bertlab_run::{setting_keys, RunOverrides, PLACEMENT_KEYS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    pub set: RunOverrides,
    /// The runs, each a table of the settings that differ.
    #[serde(default)]
    pub runs: Vec<RunOverrides>,
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
    pub defaults: RunOverrides,
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
        let parse_error = |e: toml::de::Error| PipelineError::Parse {
            path: path.to_path_buf(),
            message: bertlab_run::spec::toml_error_line(text, &e),
        };
        // Settings tables first, key by key, so that a bad value is named by its key path
        // (`problem[1].runs[0].optimizer`) rather than by a line and column alone.
        let table: toml::Table = toml::from_str(text).map_err(parse_error)?;
        check_settings_tables(&table, path)?;
        let mut spec: PipelineSpec = toml::from_str(text).map_err(parse_error)?;
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
        self.check_settings(&self.defaults, "defaults")?;
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
                // The report writes one line per answer: two problems cannot give the same one.
                if let Some(other) =
                    self.problems[..pi].iter().position(|q| q.answer.as_ref() == Some(answer))
                {
                    return Err(self.invalid(
                        format!("{at}.answer"),
                        format!("{answer:?} is problem[{other}]'s answer too; give each problem its own"),
                    ));
                }
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
                    let inheritable: Vec<&str> = setting_keys().filter(|k| *k != "source").collect();
                    if !inheritable.contains(&key.as_str()) {
                        return Err(self.invalid(
                            format!("{at}.inherit[{ki}]"),
                            format!(
                                "{key:?} is not an inheritable setting (one of {})",
                                inheritable.join(", ")
                            ),
                        ));
                    }
                }
            }
            self.check_settings(&p.set, &format!("{at}.set"))?;
            self.check_role(&p.set, &format!("{at}.set"))?;
            for (ri, r) in p.runs.iter().enumerate() {
                let at = format!("{at}.runs[{ri}]");
                self.check_settings(r, &at)?;
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

    /// Ranges of the values a settings table sets, and no key that xtask sets per run.
    fn check_settings(&self, s: &RunOverrides, at: &str) -> Result<(), PipelineError> {
        if let Some(key) = s.keys().into_iter().find(|k| PLACEMENT_KEYS.contains(k)) {
            return Err(self.invalid(
                format!("{at}.{key}"),
                "is set by cargo xtask for each run (from --out and --backend); remove it",
            ));
        }
        s.validate()
            .map_err(|e| self.invalid(format!("{at}.{}", e.key), format!("{} (got {})", e.why, e.value)))
    }

    fn check_role(&self, s: &RunOverrides, at: &str) -> Result<(), PipelineError> {
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

/// Read every settings table of a pipeline file (`defaults`, and each problem's `set` and
/// `runs`) key by key; an error names the key path.
fn check_settings_tables(table: &toml::Table, path: &Path) -> Result<(), PipelineError> {
    let check = |value: &toml::Value, at: String| -> Result<(), PipelineError> {
        let invalid =
            |key: String, message: String| PipelineError::Invalid { path: path.to_path_buf(), key, message };
        let table =
            value.as_table().ok_or_else(|| invalid(at.clone(), "must be a table of settings".into()))?;
        RunOverrides::from_table(table).map(|_| ()).map_err(|e| invalid(format!("{at}.{}", e.key), e.message))
    };
    if let Some(defaults) = table.get("defaults") {
        check(defaults, "defaults".into())?;
    }
    let problems = table.get("problem").and_then(toml::Value::as_array).into_iter().flatten();
    for (pi, problem) in problems.enumerate() {
        if let Some(set) = problem.get("set") {
            check(set, format!("problem[{pi}].set"))?;
        }
        let runs = problem.get("runs").and_then(toml::Value::as_array).into_iter().flatten();
        for (ri, run) in runs.enumerate() {
            check(run, format!("problem[{pi}].runs[{ri}]"))?;
        }
    }
    Ok(())
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
        let e = err(&GOOD.replace("id = \"p2\"", "id = \"p2\"\nanswer = \"a1a\""));
        assert!(e.contains("`problem[1].answer`") && e.contains("problem[0]'s answer"), "{e}");
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
    fn keys_xtask_sets_per_run_are_refused() {
        let e = err(&GOOD.replace("seed = 42", "seed = 42\nout = \"/tmp/x\""));
        assert!(e.contains("`defaults.out`") && e.contains("cargo xtask"), "{e}");
        // One rule for every spelling of a setting: a clip of 0 fails here as in a run spec.
        let e = err(&GOOD.replace("{ subset = 0.5 }", "{ subset = 0.5, grad_clip = 0.0 }"));
        assert!(e.contains("`problem[1].runs[0].grad_clip`: must be a positive number"), "{e}");
    }
}
