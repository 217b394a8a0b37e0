//! [`RunRecord`]: the JSON record of one run (schema in `RECORD.md`), written atomically.

use crate::batching::PaddingStats;
use crate::metrics::ClassificationMetrics;
use crate::spec::RunSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the record layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// The Burn release bertlab is built against (pinned in the workspace `Cargo.toml`).
pub const BURN_VERSION: &str = "0.21.0";

/// Everything a run produced. See `crates/train/RECORD.md` for each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `completed` or `failed`.
    pub status: RunStatus,
    /// The error of a failed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The spec the run was started with.
    pub spec: RunSpec,
    /// Where and with what it ran.
    pub environment: Environment,
    /// Split sizes and token statistics.
    pub data: DataSummary,
    /// One entry per completed epoch.
    pub epochs: Vec<EpochRecord>,
    /// 1-based epoch with the lowest validation loss.
    pub best_epoch: Option<usize>,
    /// Early stopping ended training before `spec.epochs`.
    pub stopped_early: bool,
    /// 1-based epoch whose weights were tested and exported (the last one when not restored).
    pub restored_epoch: Option<usize>,
    /// The notebook's headline: validation accuracy at the epoch of minimum validation loss.
    pub val_acc_at_min_val_loss: Option<f64>,
    /// Test-set metrics of the final weights.
    pub test: Option<ClassificationMetrics>,
    /// Wall-clock timings.
    pub timings: Timings,
    /// Peak resident memory of the process (Linux `VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Directory of the exported model (`<out>/best`), when exported.
    pub best_dir: Option<PathBuf>,
}

/// Outcome of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Trained, tested and exported.
    Completed,
    /// Ended with an error (`error` says which).
    Failed,
}

/// Machine, backend and versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// Burn backend, e.g. `cpu (burn-flex)` or `cuda`.
    pub backend: String,
    /// Device, e.g. `Cpu` or `Cuda(0)`.
    pub device: String,
    /// Compute precision actually used.
    pub precision: String,
    /// bertlab version.
    pub bertlab_version: String,
    /// Burn version.
    pub burn_version: String,
    /// `git rev-parse HEAD` of the working directory or `BERTLAB_GIT_COMMIT`.
    pub git_commit: Option<String>,
    /// Seed of the run.
    pub seed: u64,
    /// Hardware threads available to the process.
    pub host_threads: usize,
    /// Host name.
    pub hostname: Option<String>,
    /// `linux-x86_64` etc.
    pub platform: String,
    /// Start time, UTC, RFC 3339.
    pub started_at: String,
}

impl Environment {
    /// Describe this process; `backend`, `device` and `precision` come from the caller.
    pub fn capture(backend: &str, device: &str, precision: &str, seed: u64) -> Environment {
        Environment {
            backend: backend.into(),
            device: device.into(),
            precision: precision.into(),
            bertlab_version: env!("CARGO_PKG_VERSION").into(),
            burn_version: BURN_VERSION.into(),
            git_commit: git_commit(),
            seed,
            host_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            platform: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            started_at: utc_now_rfc3339(),
        }
    }
}

/// Sizes of the splits and token counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// The dataset source (resolved).
    pub source: String,
    /// Rows of the joined dataset.
    pub total_rows: usize,
    /// Rows in the subset pool.
    pub pool: usize,
    /// Training rows.
    pub train: usize,
    /// Validation rows.
    pub val: usize,
    /// Test rows.
    pub test: usize,
    /// Class names, index = label.
    pub class_names: Vec<String>,
    /// Training rows truncated at `max_len`.
    pub train_truncated: usize,
    /// Real and padded tokens of one training epoch (the first).
    pub train_padding: PaddingStats,
}

/// One epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's examples (as Keras reports it).
    pub train_loss: f64,
    /// Training accuracy over the epoch's examples.
    pub train_acc: f64,
    /// Validation loss (mean over examples).
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_acc: f64,
    /// Learning rate of the epoch's last optimizer step.
    pub lr: f64,
    /// Optimizer steps taken (skipped ones excluded).
    pub steps: u64,
    /// Steps skipped for f16 overflow.
    pub skipped_steps: u64,
    /// Loss scale at the end of the epoch (1 without scaling).
    pub loss_scale: f64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Seconds of validation.
    pub val_seconds: f64,
    /// Training sequences per second.
    pub train_seq_per_s: f64,
    /// Real (unpadded) training tokens per second.
    pub train_tokens_per_s: f64,
    /// Padded training tokens per second (what the device computed on).
    pub train_padded_tokens_per_s: f64,
}

/// Wall-clock seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Loading and splitting the data.
    pub data_seconds: f64,
    /// Tokenizing (or reading the token cache).
    pub tokenize_seconds: f64,
    /// Loading the model.
    pub model_load_seconds: f64,
    /// All epochs (training + validation).
    pub fit_seconds: f64,
    /// Test prediction.
    pub test_seconds: f64,
    /// fit + test, as the notebook's `Elapsed time`.
    pub elapsed_seconds: f64,
    /// Exporting `best/`.
    pub export_seconds: f64,
    /// Everything, from start to record.
    pub total_seconds: f64,
}

impl RunRecord {
    /// Write `record` as pretty JSON to `path` atomically (temporary file in the same
    /// directory, then rename), creating the directory.
    pub fn write_atomic(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bertlab_hub::write_atomic(path, &json)
    }

    /// Read a record.
    pub fn read(path: &Path) -> Result<RunRecord, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a run record: {e}", path.display()))
    }

    /// The record with every wall-clock-dependent field zeroed, for comparing two runs.
    pub fn without_timings(&self) -> RunRecord {
        let mut r = self.clone();
        r.timings = Timings::default();
        r.peak_rss_bytes = None;
        r.environment.started_at.clear();
        for e in &mut r.epochs {
            e.train_seconds = 0.0;
            e.val_seconds = 0.0;
            e.train_seq_per_s = 0.0;
            e.train_tokens_per_s = 0.0;
            e.train_padded_tokens_per_s = 0.0;
        }
        r
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// The commit being run: `BERTLAB_GIT_COMMIT`, else `git rev-parse HEAD` in the working directory.
pub fn git_commit() -> Option<String> {
    if let Ok(c) = std::env::var("BERTLAB_GIT_COMMIT") {
        if !c.trim().is_empty() {
            return Some(c.trim().to_string());
        }
    }
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && s.len() >= 7).then_some(s)
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now_rfc3339() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn burn_version_matches_workspace_pin() {
        let manifest =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml")).unwrap();
        let line = manifest.lines().find(|l| l.starts_with("burn = ")).expect("burn pinned in the workspace");
        assert!(line.contains(&format!("\"={BURN_VERSION}\"")), "{line}");
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 1_000_000);
        }
    }
}
