//! [`RunRecord`]: the JSON record of one run (schema in `RECORD.md`), written atomically by
//! `bertlab train` and read by pipelines, reports and `cargo xtask` — one type for both.

use crate::metrics::ClassificationMetrics;
use crate::spec::RunSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the record layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// File name of a completed run's record.
pub const RECORD_FILE: &str = "record.json";

/// File name of the record of a run that failed (never `record.json`, so that resuming by
/// `record.json` cannot mistake it for a finished run).
pub const FAILED_RECORD_FILE: &str = "failed-record.json";

/// The name an unreadable `record.json` is moved aside to (`record.json.unreadable-N`, `n` from
/// 1): never deleted, and a sign that a run was in its directory.
pub fn unreadable_record_name(n: usize) -> String {
    format!("{RECORD_FILE}.unreadable-{n}")
}

/// Whether `name` is a record moved aside by [`unreadable_record_name`].
pub fn is_unreadable_record_name(name: &str) -> bool {
    name.strip_prefix(RECORD_FILE)
        .and_then(|rest| rest.strip_prefix(".unreadable-"))
        .is_some_and(|n| n.parse::<usize>().is_ok())
}

/// Everything a run produced. See `crates/run/RECORD.md` for each field.
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
    /// The `[rows, length]` shapes of the batches the run fed the model, in training and
    /// evaluation, sorted (a GPU build compiles and tunes kernels per shape): at most
    /// [`RunSpec::planned_shapes`]. `None` in a record written before bertlab kept them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shapes: Option<Vec<[usize; 2]>>,
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

/// The Burn release bertlab is built against (pinned in the workspace `Cargo.toml`).
pub const BURN_VERSION: &str = "0.21.0";

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

/// Real and padded token counts of a set of batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaddingStats {
    /// Tokens that belong to a row.
    pub real_tokens: u64,
    /// Tokens computed on, padding included (`Σ rows × padded_len`).
    pub padded_tokens: u64,
}

impl PaddingStats {
    /// Padded / real tokens (1.0 = no padding).
    pub fn padding_factor(&self) -> f64 {
        if self.real_tokens == 0 {
            1.0
        } else {
            self.padded_tokens as f64 / self.real_tokens as f64
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
    /// The data files read (size, modification time, SHA-256), checked unchanged at the end.
    #[serde(default)]
    pub files: Vec<crate::identity::FileIdentity>,
    /// Rows per class (index = class id) of each split.
    #[serde(default)]
    pub class_counts: ClassCounts,
}

/// Rows per class of the run's splits, index = class id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCounts {
    /// Training rows per class.
    pub train: Vec<usize>,
    /// Validation rows per class.
    pub val: Vec<usize>,
    /// Test rows per class.
    pub test: Vec<usize>,
}

impl ClassCounts {
    /// Largest over smallest class of the training split (1 when balanced; `None` without
    /// counts, infinite when a class has no training row).
    pub fn train_imbalance(&self) -> Option<f64> {
        let max = *self.train.iter().max()?;
        let min = *self.train.iter().min()?;
        Some(if min == 0 { f64::INFINITY } else { max as f64 / min as f64 })
    }
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
    /// The warm-up before the first step (`--warmup`: kernels compiled and tuned for every
    /// planned batch shape), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_seconds: Option<f64>,
    /// The batch shapes that warm-up ran, when there was one: those of the run not met by
    /// earlier runs (`--warmed-shapes`, which `cargo xtask` passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_shapes: Option<usize>,
}

/// A file that is not a readable run record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file cannot be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is not a run record of this schema (the message names the missing or wrong
    /// field).
    #[error("{path}: not a run record: {message}", path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl RunRecord {
    /// The record of a run of `spec` that has not produced anything yet (status `failed`, so
    /// that a record written before the run ends never claims completion).
    pub fn new(spec: RunSpec, environment: Environment) -> RunRecord {
        RunRecord {
            schema_version: SCHEMA_VERSION,
            status: RunStatus::Failed,
            error: None,
            spec,
            environment,
            data: DataSummary::default(),
            epochs: Vec::new(),
            best_epoch: None,
            stopped_early: false,
            restored_epoch: None,
            val_acc_at_min_val_loss: None,
            test: None,
            timings: Timings::default(),
            peak_rss_bytes: None,
            best_dir: None,
            shapes: None,
        }
    }

    /// Add `shapes` to [`Self::shapes`], kept sorted and without repeats.
    pub fn add_shapes(&mut self, shapes: impl IntoIterator<Item = [usize; 2]>) {
        let all = self.shapes.get_or_insert_with(Vec::new);
        all.extend(shapes);
        all.sort_unstable();
        all.dedup();
    }

    /// Write `record` as pretty JSON to `path` atomically (temporary file in the same
    /// directory, then rename), creating the directory.
    pub fn write_atomic(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::write_atomic(path, &json)
    }

    /// Whether `path` is a run's record (`record.json` or `failed-record.json` with a record's
    /// `schema_version`, of any version): what another command's output must not replace.
    pub fn is_at(path: &Path) -> bool {
        let named = path.file_name().is_some_and(|n| n == RECORD_FILE || n == FAILED_RECORD_FILE);
        named
            && path.is_file()
            && std::fs::read(path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .is_some_and(|v| v.get("schema_version").is_some())
    }

    /// Read a record file.
    pub fn read(path: &Path) -> Result<RunRecord, RecordError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| RecordError::Io { path: path.to_path_buf(), source })?;
        RunRecord::from_json(&text, path)
    }

    /// Parse record JSON (`path` names it in errors). Every field of the schema must be there:
    /// a record that lacks one is reported, never half-read into zeros.
    pub fn from_json(text: &str, path: &Path) -> Result<RunRecord, RecordError> {
        let invalid = |message: String| RecordError::Invalid { path: path.to_path_buf(), message };
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        match value.get("schema_version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(invalid(format!(
                    "schema_version {v}, but this bertlab reads version {SCHEMA_VERSION}"
                )))
            }
            None => return Err(invalid("no `schema_version`".into())),
        }
        serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
    }

    /// The run trained, tested and exported.
    pub fn is_completed(&self) -> bool {
        self.status == RunStatus::Completed
    }

    /// Validation accuracy at the epoch of minimum validation loss: the record's own value, or
    /// computed from its epochs by the same rule ([`val_acc_at_min_val_loss`], numpy's
    /// `argmin`) for a failed run's partial record.
    pub fn val_acc_at_min_val_loss(&self) -> Option<f64> {
        self.val_acc_at_min_val_loss.or_else(|| {
            let losses: Vec<f64> = self.epochs.iter().map(|e| e.val_loss).collect();
            let accs: Vec<f64> = self.epochs.iter().map(|e| e.val_acc).collect();
            val_acc_at_min_val_loss(&losses, &accs)
        })
    }

    /// The first number of the record that is NaN or infinite, as its field path
    /// (`epochs[1].train_loss`), with the value. A completed record must have none: JSON has no
    /// NaN (serde_json would write `null`), and no report should show one as a result.
    pub fn first_non_finite(&self) -> Option<(String, f64)> {
        let mut fields: Vec<(String, f64)> = Vec::new();
        for (i, e) in self.epochs.iter().enumerate() {
            let at = |f: &str| format!("epochs[{i}].{f}");
            fields.extend([
                (at("train_loss"), e.train_loss),
                (at("train_acc"), e.train_acc),
                (at("val_loss"), e.val_loss),
                (at("val_acc"), e.val_acc),
                (at("lr"), e.lr),
                (at("loss_scale"), e.loss_scale),
                (at("train_seconds"), e.train_seconds),
                (at("val_seconds"), e.val_seconds),
                (at("train_seq_per_s"), e.train_seq_per_s),
                (at("train_tokens_per_s"), e.train_tokens_per_s),
                (at("train_padded_tokens_per_s"), e.train_padded_tokens_per_s),
            ]);
        }
        if let Some(v) = self.val_acc_at_min_val_loss {
            fields.push(("val_acc_at_min_val_loss".into(), v));
        }
        if let Some(t) = &self.test {
            fields.extend([
                ("test.accuracy".into(), t.accuracy),
                ("test.f1".into(), t.f1),
                ("test.precision".into(), t.precision),
                ("test.recall".into(), t.recall),
            ]);
            if let Some(l) = t.loss {
                fields.push(("test.loss".into(), l));
            }
        }
        let t = &self.timings;
        fields.extend([
            ("timings.fit_seconds".into(), t.fit_seconds),
            ("timings.test_seconds".into(), t.test_seconds),
            ("timings.elapsed_seconds".into(), t.elapsed_seconds),
            ("timings.total_seconds".into(), t.total_seconds),
        ]);
        fields.into_iter().find(|(_, v)| !v.is_finite())
    }

    /// The lowest finite validation loss of any epoch.
    pub fn min_val_loss(&self) -> Option<f64> {
        self.epochs.iter().map(|e| e.val_loss).filter(|v| v.is_finite()).min_by(f64::total_cmp)
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

/// The notebook's headline: `val_acc[np.argmin(val_loss)]`. Mirrors numpy's `argmin`: the first
/// minimum, and the first NaN when there is one (numpy propagates NaN through `argmin`).
pub fn val_acc_at_min_val_loss(val_loss: &[f64], val_acc: &[f64]) -> Option<f64> {
    assert_eq!(val_loss.len(), val_acc.len(), "one val accuracy per val loss");
    let index = match val_loss.iter().position(|l| l.is_nan()) {
        Some(nan) => nan,
        None => {
            let mut best = 0;
            for (i, &l) in val_loss.iter().enumerate() {
                if l < val_loss[best] {
                    best = i;
                }
            }
            best
        }
    };
    val_acc.get(index).copied()
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
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn utc_timestamps_are_rfc3339() {
        let t = utc_now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(t.as_str() > "2025-01-01", "{t}");
    }

    #[test]
    fn headline_is_numpys_argmin() {
        assert_eq!(
            val_acc_at_min_val_loss(&[0.3449, 0.3396, 0.3552], &[0.8376, 0.8592, 0.8608]),
            Some(0.8592)
        );
        // Ties: the first minimum.
        assert_eq!(val_acc_at_min_val_loss(&[0.3, 0.3], &[0.1, 0.2]), Some(0.1));
        // numpy's argmin returns the first NaN.
        assert_eq!(val_acc_at_min_val_loss(&[0.3, f64::NAN, 0.1], &[0.1, 0.2, 0.3]), Some(0.2));
        assert_eq!(val_acc_at_min_val_loss(&[], &[]), None);
    }

    fn sample_json() -> serde_json::Value {
        let spec = serde_json::to_value(RunSpec::default()).unwrap();
        serde_json::json!({
            "schema_version": 1, "status": "completed", "spec": spec,
            "environment": {"backend": "cpu", "device": "Cpu", "precision": "f32", "bertlab_version": "0.1.0",
                "burn_version": "0.21.0", "git_commit": null, "seed": 42, "host_threads": 2, "hostname": null,
                "platform": "linux-x86_64", "started_at": "2026-11-29T00:00:00Z"},
            "data": {"source": "s", "total_rows": 10, "pool": 10, "train": 7, "val": 1, "test": 2,
                "class_names": ["neg", "pos"], "train_truncated": 0,
                "train_padding": {"real_tokens": 900, "padded_tokens": 1000}},
            "epochs": [{"epoch": 1, "train_loss": 0.45, "train_acc": 0.78, "val_loss": 0.3449, "val_acc": 0.8376,
                "lr": 1e-5, "steps": 1, "skipped_steps": 0, "loss_scale": 1.0, "train_seconds": 10.0,
                "val_seconds": 2.0, "train_seq_per_s": 0.7, "train_tokens_per_s": 90.0,
                "train_padded_tokens_per_s": 100.0}],
            "best_epoch": 1, "stopped_early": false, "restored_epoch": 1, "val_acc_at_min_val_loss": 0.8376,
            "test": {"n": 2, "accuracy": 0.5, "f1": 0.0, "precision": 0.0, "recall": 0.0, "confusion": [[1, 0], [1, 0]]},
            "timings": {"data_seconds": 0.0, "tokenize_seconds": 0.0, "model_load_seconds": 0.0, "fit_seconds": 12.0,
                "test_seconds": 1.0, "elapsed_seconds": 13.0, "export_seconds": 0.0, "total_seconds": 14.0},
            "peak_rss_bytes": null, "best_dir": null
        })
    }

    #[test]
    fn records_set_aside_are_named_and_known() {
        assert_eq!(unreadable_record_name(2), "record.json.unreadable-2");
        assert!(is_unreadable_record_name(&unreadable_record_name(12)));
        for other in
            ["record.json", "record.json.unreadable-", "record.json.unreadable-x", "failed-record.json"]
        {
            assert!(!is_unreadable_record_name(other), "{other}");
        }
    }

    #[test]
    fn reads_its_own_records_and_names_what_is_missing() {
        let json = sample_json();
        let r = RunRecord::from_json(&json.to_string(), Path::new("r.json")).unwrap();
        assert!(r.is_completed());
        assert_eq!(r.seconds_per_epoch(), Some(12.0));
        assert_eq!(r.train_seq_per_s(), Some(0.7));
        assert_eq!(r.train_padded_tokens_per_s(), Some(100.0));
        assert_eq!(r.min_val_loss(), Some(0.3449));
        assert_eq!(r.val_acc_at_min_val_loss(), Some(0.8376));
        let mut partial = r.clone();
        partial.val_acc_at_min_val_loss = None;
        assert_eq!(partial.val_acc_at_min_val_loss(), Some(0.8376));
        // Fields added by a later bertlab are ignored.
        let mut extra = json.clone();
        extra["something_new"] = serde_json::json!([1, 2]);
        assert_eq!(RunRecord::from_json(&extra.to_string(), Path::new("r.json")).unwrap(), r);
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(RunRecord::from_json(&back.to_string(), Path::new("r.json")).unwrap(), r);

        let mut lacking = json.clone();
        lacking["epochs"][0].as_object_mut().unwrap().remove("val_acc");
        let e =
            RunRecord::from_json(&lacking.to_string(), Path::new("x/record.json")).unwrap_err().to_string();
        assert!(e.starts_with("x/record.json: not a run record") && e.contains("val_acc"), "{e}");
        let e = RunRecord::from_json("{}", Path::new("y.json")).unwrap_err().to_string();
        assert!(e.contains("schema_version"), "{e}");
        let mut nan = r.clone();
        nan.epochs[0].train_loss = 1e29;
        assert_eq!(nan.first_non_finite(), None, "huge is not non-finite");
        nan.epochs[0].train_loss = f64::NAN;
        assert_eq!(nan.first_non_finite().map(|f| f.0), Some("epochs[0].train_loss".to_string()));
        assert_eq!(r.first_non_finite(), None);
        let mut newer = json;
        newer["schema_version"] = 9.into();
        let e = RunRecord::from_json(&newer.to_string(), Path::new("z.json")).unwrap_err().to_string();
        assert!(e.contains("schema_version 9"), "{e}");
    }
}
