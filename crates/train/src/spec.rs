//! [`RunSpec`]: everything that defines one training run, read from a TOML file (every field is
//! also a `bertlab train` flag).

use crate::batching::Padding;
use crate::early_stopping::RestoreBest;
use crate::optim::OptimizerKind;
use crate::schedule::Schedule;
use bertlab_tokenize::Truncation;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Numeric precision of the forward and backward passes. Parameters and optimizer state stay
/// f32 whatever the choice (master weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionSpec {
    /// Everything in f32.
    #[default]
    F32,
    /// Matmuls in f16, with dynamic loss scaling.
    F16,
    /// Matmuls in bf16 (f32's exponent range: no loss scaling).
    Bf16,
}

impl FromStr for PrecisionSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(PrecisionSpec::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(PrecisionSpec::F16),
            "bf16" | "bfloat16" => Ok(PrecisionSpec::Bf16),
            other => Err(format!("precision {other:?}: expected `f32`, `f16` or `bf16`")),
        }
    }
}

impl fmt::Display for PrecisionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrecisionSpec::F32 => "f32",
            PrecisionSpec::F16 => "f16",
            PrecisionSpec::Bf16 => "bf16",
        })
    }
}

impl From<PrecisionSpec> for bertlab_models::Precision {
    fn from(p: PrecisionSpec) -> Self {
        match p {
            PrecisionSpec::F32 => bertlab_models::Precision::F32,
            PrecisionSpec::F16 => bertlab_models::Precision::F16,
            PrecisionSpec::Bf16 => bertlab_models::Precision::BF16,
        }
    }
}

/// One training run. Defaults are the notebook's baseline (DistilBERT, max_len 128, 3 epochs,
/// batch 32, eval batch 64, Adam 1e-5, early stopping with patience 2), except `padding`, which
/// defaults to `bucket` (dynamic padding, several times fewer padded FLOPs on IMDB) where the
/// notebook pads every batch to `max_len` (`fixed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSpec {
    /// Model: a Hub id (`distilbert/distilbert-base-uncased`) or a local snapshot directory.
    pub model: String,
    /// Data: `hub` (stanfordnlp/imdb, pinned), `hub:ORG/NAME[@REV]`, or a local directory.
    pub source: String,
    /// Fraction of the whole dataset used (stratified), in (0, 1].
    pub subset: f64,
    /// Seed of the splits, the head initialisation, dropout and batch order.
    pub seed: u64,
    /// Tokens per sequence, `[CLS]` and `[SEP]` included.
    pub max_len: usize,
    /// Which tokens of a long review are kept.
    pub truncation: Truncation,
    /// Peak learning rate.
    pub lr: f64,
    /// Training batch size (per optimizer micro-step).
    pub batch: usize,
    /// Batch size of validation and test prediction.
    pub eval_batch: usize,
    /// Maximum number of epochs.
    pub epochs: usize,
    /// `adam` (Keras) or `adamw` (HF).
    pub optimizer: OptimizerKind,
    /// `constant` or `linear` (with warmup).
    pub schedule: Schedule,
    /// Fraction of the optimizer steps spent warming up (linear schedule).
    pub warmup_ratio: f64,
    /// Weight decay; unset = the optimizer's default (adam 0, adamw 0.01).
    pub weight_decay: Option<f64>,
    /// Clip gradients to this global L2 norm; unset = no clipping.
    pub grad_clip: Option<f64>,
    /// Micro-batches per optimizer step (effective batch = batch × accum).
    pub accum: usize,
    /// `f32`, `f16` or `bf16`.
    pub precision: PrecisionSpec,
    /// `bucket` (dynamic, default) or `fixed` (to max_len, the notebook).
    pub padding: Padding,
    /// Bucketed lengths are rounded up to a multiple of this.
    pub pad_multiple: usize,
    /// Epochs without val-loss improvement before stopping.
    pub patience: usize,
    /// `always` (default) or `on-stop` (Keras).
    pub restore_best: RestoreBest,
    /// Run directory: `record.json` and `best/` are written here.
    pub out: PathBuf,
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// Token cache directory; unset = no cache.
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network.
    pub offline: bool,
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            model: "distilbert/distilbert-base-uncased".into(),
            source: "hub".into(),
            subset: 1.0,
            seed: 42,
            max_len: 128,
            truncation: Truncation::Head,
            lr: 1e-5,
            batch: 32,
            eval_batch: 64,
            epochs: 3,
            optimizer: OptimizerKind::Adam,
            schedule: Schedule::Constant,
            warmup_ratio: 0.0,
            weight_decay: None,
            grad_clip: None,
            accum: 1,
            precision: PrecisionSpec::F32,
            padding: Padding::Bucket,
            pad_multiple: 8,
            patience: 2,
            restore_best: RestoreBest::Always,
            out: PathBuf::from("runs/run"),
            device: "default".into(),
            cache_dir: None,
            offline: false,
        }
    }
}

/// A spec file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or has an unknown key or a wrong type.
    #[error("{path}: {message}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error (names the key and line).
        message: String,
    },
    /// A value out of range.
    #[error("{field} = {value}: {why}")]
    Invalid {
        /// The spec field / flag.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        why: &'static str,
    },
}

impl RunSpec {
    /// Read a spec from TOML text (`origin` names it in errors); missing keys take defaults.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<RunSpec, SpecError> {
        let spec: RunSpec = toml::from_str(text)
            .map_err(|e| SpecError::Parse { path: origin.to_path_buf(), message: e.to_string() })?;
        Ok(spec)
    }

    /// Read a spec file.
    pub fn from_toml_file(path: &Path) -> Result<RunSpec, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SpecError::Io { path: path.to_path_buf(), source })?;
        RunSpec::from_toml_str(&text, path)
    }

    /// The spec as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a RunSpec always serialises")
    }

    /// Check every value's range; the error names the field (= the flag).
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field, value: String, why| Err(SpecError::Invalid { field, value, why });
        if !(self.subset > 0.0 && self.subset <= 1.0) {
            return bad("subset", self.subset.to_string(), "must be a fraction in (0, 1]");
        }
        if !(3..=4096).contains(&self.max_len) {
            return bad(
                "max_len",
                self.max_len.to_string(),
                "must be in 3..=4096 (and at most the model's max_position_embeddings)",
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", self.lr.to_string(), "must be a positive number");
        }
        if self.batch == 0 {
            return bad("batch", "0".into(), "must be at least 1");
        }
        if self.eval_batch == 0 {
            return bad("eval_batch", "0".into(), "must be at least 1");
        }
        if self.epochs == 0 {
            return bad("epochs", "0".into(), "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad("warmup_ratio", self.warmup_ratio.to_string(), "must be in [0, 1)");
        }
        if let Some(wd) = self.weight_decay {
            if !(wd.is_finite() && wd >= 0.0) {
                return bad("weight_decay", wd.to_string(), "must be a non-negative number");
            }
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return bad("grad_clip", c.to_string(), "must be a positive number");
            }
        }
        if self.accum == 0 {
            return bad("accum", "0".into(), "must be at least 1");
        }
        if self.pad_multiple == 0 {
            return bad("pad_multiple", "0".into(), "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_notebook_baseline() {
        let s = RunSpec::default();
        assert_eq!((s.max_len, s.epochs, s.batch, s.eval_batch, s.lr, s.patience), (128, 3, 32, 64, 1e-5, 2));
        assert_eq!(s.optimizer, OptimizerKind::Adam);
        assert_eq!(s.padding, Padding::Bucket);
        assert_eq!(s.restore_best, RestoreBest::Always);
        s.validate().unwrap();
    }

    #[test]
    fn toml_round_trip_and_partial_files() {
        let mut s = RunSpec {
            optimizer: OptimizerKind::Adamw,
            grad_clip: Some(1.0),
            precision: PrecisionSpec::Bf16,
            ..RunSpec::default()
        };
        s.truncation = Truncation::HeadTail;
        let text = s.to_toml();
        assert_eq!(RunSpec::from_toml_str(&text, Path::new("x.toml")).unwrap(), s);
        let partial = "model = \"../shared/models/all-MiniLM-L6-v2\"\nmax_len = 256\noptimizer = \"adamw\"\npadding = \"fixed\"\nrestore_best = \"on-stop\"\n";
        let p = RunSpec::from_toml_str(partial, Path::new("p.toml")).unwrap();
        assert_eq!(p.max_len, 256);
        assert_eq!(p.padding, Padding::Fixed);
        assert_eq!(p.restore_best, RestoreBest::OnStop);
        assert_eq!(p.batch, 32);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = RunSpec::from_toml_str("max_length = 3\n", Path::new("run.toml")).unwrap_err().to_string();
        assert!(err.contains("run.toml") && err.contains("max_length"), "{err}");
        let err =
            RunSpec::from_toml_str("padding = \"ragged\"\n", Path::new("run.toml")).unwrap_err().to_string();
        assert!(err.contains("ragged"), "{err}");
        let err = RunSpec { subset: 1.5, ..RunSpec::default() }.validate().unwrap_err().to_string();
        assert!(err.starts_with("subset = 1.5"), "{err}");
        assert!(RunSpec { accum: 0, ..RunSpec::default() }.validate().is_err());
    }

    #[test]
    fn precision_parses() {
        assert_eq!("BF16".parse::<PrecisionSpec>(), Ok(PrecisionSpec::Bf16));
        assert_eq!(PrecisionSpec::F16.to_string(), "f16");
        assert!("f8".parse::<PrecisionSpec>().is_err());
    }
}
