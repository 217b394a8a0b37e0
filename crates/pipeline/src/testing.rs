//! Hand-made run records for the tests of planning and reports.

use bertlab_run::{Environment, EpochRecord, RunRecord, RunSpec, RunStatus};

/// A completed record of `spec` with one epoch per `(val_loss, val_acc)`, each taking
/// `seconds` (one of them validation), on a fixed, made-up machine.
pub(crate) fn record(spec: RunSpec, epochs: &[(f64, f64)], seconds: f64) -> RunRecord {
    let environment = Environment {
        backend: "cpu (burn-flex)".into(),
        device: "Cpu".into(),
        precision: spec.precision.to_string(),
        bertlab_version: "0.1.0".into(),
        burn_version: "0.21.0".into(),
        git_commit: None,
        seed: spec.seed,
        host_threads: 2,
        hostname: Some("box".into()),
        platform: "linux-x86_64".into(),
        started_at: "2025-01-01T00:00:00Z".into(),
    };
    let mut r = RunRecord::new(spec, environment);
    r.status = RunStatus::Completed;
    r.epochs = epochs
        .iter()
        .enumerate()
        .map(|(i, &(val_loss, val_acc))| EpochRecord {
            epoch: i + 1,
            train_loss: 0.5 - 0.1 * i as f64,
            train_acc: 0.8 + 0.05 * i as f64,
            val_loss,
            val_acc,
            lr: r.spec.lr,
            steps: 10,
            skipped_steps: 0,
            loss_scale: 1.0,
            train_seconds: seconds - 1.0,
            val_seconds: 1.0,
            train_seq_per_s: 0.0,
            train_tokens_per_s: 0.0,
            train_padded_tokens_per_s: 0.0,
        })
        .collect();
    let losses: Vec<f64> = epochs.iter().map(|e| e.0).collect();
    let accs: Vec<f64> = epochs.iter().map(|e| e.1).collect();
    r.val_acc_at_min_val_loss = bertlab_run::val_acc_at_min_val_loss(&losses, &accs);
    r.best_epoch = epochs.iter().enumerate().min_by(|a, b| a.1 .0.total_cmp(&b.1 .0)).map(|(i, _)| i + 1);
    r.restored_epoch = r.best_epoch;
    r
}
