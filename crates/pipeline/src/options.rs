//! [`PlanOptions`]: the `cargo xtask` flags that apply to every run of a plan.

use crate::error::PipelineError;
use bertlab_run::Precision;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    pub precision: Option<Precision>,
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
