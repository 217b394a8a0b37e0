//! A lenient mirror of the run record `bertlab train` writes (`record.json`, schema in
//! `crates/train/RECORD.md`): only the fields reports and planning need, every one optional, and
//! unknown fields ignored, so that this crate (and `cargo xtask`) never depends on the training
//! crate and survives additions to the schema.

use crate::spec::PipelineError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The run record, as far as pipelines are concerned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    /// Record layout version.
    pub schema_version: u32,
    /// `completed` or `failed`.
    pub status: String,
    /// The error of a failed run.
    pub error: Option<String>,
    /// The run spec the run was started with.
    pub spec: RecordSpec,
    /// Machine, backend, versions.
    pub environment: RecordEnvironment,
    /// Split sizes and token counts.
    pub data: RecordData,
    /// One entry per completed epoch.
    pub epochs: Vec<EpochRecord>,
    /// 1-based epoch of minimum validation loss.
    pub best_epoch: Option<usize>,
    /// Early stopping ended training before the last epoch.
    pub stopped_early: bool,
    /// Epoch whose weights were tested and exported.
    pub restored_epoch: Option<usize>,
    /// Validation accuracy at the epoch of minimum validation loss (the graded answers).
    pub val_acc_at_min_val_loss: Option<f64>,
    /// Test metrics.
    pub test: Option<TestMetrics>,
    /// Wall-clock timings.
    pub timings: RecordTimings,
    /// Peak resident memory, bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// The fields of `RunSpec` that reports show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordSpec {
    /// Model reference (as resolved: a directory or Hub id).
    pub model: String,
    /// Data source.
    pub source: String,
    /// Effective fraction of the dataset.
    pub subset: Option<f64>,
    /// Seed.
    pub seed: Option<u64>,
    /// Tokens per sequence.
    pub max_len: Option<usize>,
    /// Truncation strategy.
    pub truncation: Option<String>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Training batch size actually used.
    pub batch: Option<usize>,
    /// Evaluation batch size.
    pub eval_batch: Option<usize>,
    /// Maximum epochs.
    pub epochs: Option<usize>,
    /// Optimizer.
    pub optimizer: Option<String>,
    /// Learning-rate schedule.
    pub schedule: Option<String>,
    /// Warmup fraction.
    pub warmup_ratio: Option<f64>,
    /// Weight decay.
    pub weight_decay: Option<f64>,
    /// Gradient clip.
    pub grad_clip: Option<f64>,
    /// Gradient accumulation.
    pub accum: Option<usize>,
    /// Compute precision.
    pub precision: Option<String>,
    /// Padding strategy.
    pub padding: Option<String>,
    /// Pad multiple.
    pub pad_multiple: Option<usize>,
    /// Early-stopping patience.
    pub patience: Option<usize>,
    /// Restore policy.
    pub restore_best: Option<String>,
    /// Device.
    pub device: Option<String>,
    /// Run directory the record was written for.
    pub out: String,
}

/// Where the run ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordEnvironment {
    /// Backend, e.g. `cpu (burn-flex)` or `cuda`.
    pub backend: String,
    /// Device.
    pub device: String,
    /// Compute precision used.
    pub precision: String,
    /// Host threads.
    pub host_threads: Option<usize>,
    /// Host name.
    pub hostname: Option<String>,
    /// Start time (UTC, RFC 3339).
    pub started_at: String,
    /// bertlab version.
    pub bertlab_version: String,
}

/// Split sizes and token counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordData {
    /// Rows of the joined dataset.
    pub total_rows: usize,
    /// Rows of the subset pool.
    pub pool: usize,
    /// Training rows.
    pub train: usize,
    /// Validation rows.
    pub val: usize,
    /// Test rows.
    pub test: usize,
    /// Class names.
    pub class_names: Vec<String>,
    /// Training rows truncated at `max_len`.
    pub train_truncated: usize,
    /// Real and padded tokens of one training epoch.
    pub train_padding: PaddingStats,
}

/// Real and padded token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PaddingStats {
    /// Tokens of the rows.
    pub real_tokens: u64,
    /// Tokens computed on, padding included.
    pub padded_tokens: u64,
}

/// One epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy.
    pub train_acc: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_acc: f64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Seconds of validation.
    pub val_seconds: f64,
    /// Training sequences per second.
    pub train_seq_per_s: f64,
    /// Padded training tokens per second.
    pub train_padded_tokens_per_s: f64,
}

/// Test-set metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TestMetrics {
    /// Examples.
    pub n: u64,
    /// Accuracy.
    pub accuracy: f64,
    /// F1 of the positive class.
    pub f1: f64,
    /// Precision of the positive class.
    pub precision: f64,
    /// Recall of the positive class.
    pub recall: f64,
    /// Mean loss.
    pub loss: Option<f64>,
    /// Rows true, columns predicted.
    pub confusion: Vec<Vec<u64>>,
}

/// Wall-clock seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordTimings {
    /// Loading and splitting the data.
    pub data_seconds: f64,
    /// Tokenizing.
    pub tokenize_seconds: f64,
    /// Loading the model.
    pub model_load_seconds: f64,
    /// All epochs.
    pub fit_seconds: f64,
    /// Test prediction.
    pub test_seconds: f64,
    /// fit + test (the notebook's `Elapsed time`).
    pub elapsed_seconds: f64,
    /// Export.
    pub export_seconds: f64,
    /// Start to record.
    pub total_seconds: f64,
}

impl RunRecord {
    /// Read `record.json`.
    pub fn read(path: &Path) -> Result<RunRecord, PipelineError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })?;
        RunRecord::from_json(&text, path)
    }

    /// Parse record JSON (`path` names it in errors).
    pub fn from_json(text: &str, path: &Path) -> Result<RunRecord, PipelineError> {
        let record: RunRecord = serde_json::from_str(text)
            .map_err(|e| PipelineError::Record { path: path.to_path_buf(), message: e.to_string() })?;
        if record.status.is_empty() {
            return Err(PipelineError::Record { path: path.to_path_buf(), message: "no `status`".into() });
        }
        Ok(record)
    }

    /// The run trained, tested and exported.
    pub fn is_completed(&self) -> bool {
        self.status == "completed"
    }

    /// The lowest validation loss of any epoch.
    pub fn min_val_loss(&self) -> Option<f64> {
        self.epochs.iter().map(|e| e.val_loss).filter(|v| v.is_finite()).min_by(f64::total_cmp)
    }

    /// Validation accuracy at the epoch of minimum validation loss: the record's own value, or
    /// recomputed from the epochs (first minimum wins, as numpy's `argmin`).
    pub fn val_acc_at_min_val_loss(&self) -> Option<f64> {
        self.val_acc_at_min_val_loss.or_else(|| {
            let mut best: Option<&EpochRecord> = None;
            for e in &self.epochs {
                if best.is_none_or(|b| e.val_loss < b.val_loss) {
                    best = Some(e);
                }
            }
            best.map(|e| e.val_acc)
        })
    }

    /// Mean seconds per epoch (training + validation).
    pub fn seconds_per_epoch(&self) -> Option<f64> {
        if self.epochs.is_empty() {
            return None;
        }
        let sum: f64 = self.epochs.iter().map(|e| e.train_seconds + e.val_seconds).sum();
        Some(sum / self.epochs.len() as f64)
    }

    /// Training sequences per second over all epochs.
    pub fn train_seq_per_s(&self) -> Option<f64> {
        let seconds: f64 = self.epochs.iter().map(|e| e.train_seconds).sum();
        if seconds <= 0.0 || self.data.train == 0 {
            return None;
        }
        Some((self.data.train * self.epochs.len()) as f64 / seconds)
    }

    /// Padded training tokens per second over all epochs.
    pub fn train_padded_tokens_per_s(&self) -> Option<f64> {
        let seconds: f64 = self.epochs.iter().map(|e| e.train_seconds).sum();
        let tokens = self.data.train_padding.padded_tokens as f64 * self.epochs.len() as f64;
        (seconds > 0.0 && tokens > 0.0).then(|| tokens / seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_record_and_ignores_unknown_fields() {
        let json = r#"{
          "schema_version": 1, "status": "completed", "something_new": [1, 2],
          "spec": {"model": "m", "source": "hub", "subset": 0.25, "max_len": 128, "lr": 2e-5, "batch": 32,
                   "truncation": "head", "out": "/x", "cache_dir": null},
          "epochs": [
            {"epoch": 1, "train_loss": 0.45, "train_acc": 0.78, "val_loss": 0.3449, "val_acc": 0.8376, "train_seconds": 10, "val_seconds": 2, "lr": 1e-5},
            {"epoch": 2, "train_loss": 0.29, "train_acc": 0.88, "val_loss": 0.3396, "val_acc": 0.8592, "train_seconds": 12, "val_seconds": 2},
            {"epoch": 3, "train_loss": 0.22, "train_acc": 0.92, "val_loss": 0.3552, "val_acc": 0.8608, "train_seconds": 8, "val_seconds": 2}
          ],
          "data": {"train": 100, "val": 10, "test": 20, "train_padding": {"real_tokens": 900, "padded_tokens": 1000}},
          "test": {"n": 20, "accuracy": 0.855, "f1": 0.851, "precision": 0.8, "recall": 0.9, "confusion": [[9, 1], [2, 8]]}
        }"#;
        let r = RunRecord::from_json(json, Path::new("r.json")).unwrap();
        assert!(r.is_completed());
        assert_eq!(r.spec.lr, Some(2e-5));
        assert_eq!(r.min_val_loss(), Some(0.3396));
        // The record has no `val_acc_at_min_val_loss`: recomputed as the notebook does.
        assert_eq!(r.val_acc_at_min_val_loss(), Some(0.8592));
        assert_eq!(r.seconds_per_epoch(), Some(12.0));
        assert_eq!(r.train_seq_per_s(), Some(10.0));
        assert_eq!(r.train_padded_tokens_per_s(), Some(100.0));
        assert_eq!(r.test.unwrap().confusion, vec![vec![9, 1], vec![2, 8]]);
    }

    #[test]
    fn a_file_without_status_is_not_a_record() {
        let e = RunRecord::from_json("{}", Path::new("x/record.json")).unwrap_err().to_string();
        assert!(e.contains("x/record.json") && e.contains("status"), "{e}");
        let e = RunRecord::from_json("[", Path::new("y.json")).unwrap_err().to_string();
        assert!(e.starts_with("y.json: not a run record"), "{e}");
    }
}
