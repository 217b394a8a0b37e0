//! Early stopping on the validation loss, with Keras' semantics, and the restore-best policy.

pub use bertlab_run::RestoreBest;

/// What [`EarlyStopping::observe`] concluded about one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochVerdict {
    /// This epoch's loss is the new minimum: keep its weights as the best.
    pub improved: bool,
    /// Patience ran out: stop training after this epoch.
    pub stop: bool,
}

/// `keras.callbacks.EarlyStopping(monitor="val_loss", patience, min_delta=0)`.
///
/// An epoch improves when its loss is strictly below the best so far (a NaN never improves).
/// After an epoch that does not improve, the wait counter grows; when it reaches `patience` (and
/// this is not the first epoch) training stops.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    patience: usize,
    best: f64,
    best_epoch: Option<usize>,
    wait: usize,
    stopped_epoch: Option<usize>,
    epochs_seen: usize,
}

impl EarlyStopping {
    /// Stop after `patience` epochs without improvement (0 stops at the first non-improvement).
    pub fn new(patience: usize) -> EarlyStopping {
        EarlyStopping {
            patience,
            best: f64::INFINITY,
            best_epoch: None,
            wait: 0,
            stopped_epoch: None,
            epochs_seen: 0,
        }
    }

    /// Record the validation loss of the next epoch (0-based epochs, in order).
    pub fn observe(&mut self, val_loss: f64) -> EpochVerdict {
        let epoch = self.epochs_seen;
        self.epochs_seen += 1;
        self.wait += 1;
        if val_loss < self.best {
            self.best = val_loss;
            self.best_epoch = Some(epoch);
            self.wait = 0;
            return EpochVerdict { improved: true, stop: false };
        }
        let stop = self.wait >= self.patience && epoch > 0;
        if stop {
            self.stopped_epoch = Some(epoch);
        }
        EpochVerdict { improved: false, stop }
    }

    /// The 0-based epoch with the lowest loss so far (None before any finite loss).
    pub fn best_epoch(&self) -> Option<usize> {
        self.best_epoch
    }

    /// The lowest loss so far.
    pub fn best_loss(&self) -> f64 {
        self.best
    }

    /// The epoch at which patience ran out, if it did.
    pub fn stopped_epoch(&self) -> Option<usize> {
        self.stopped_epoch
    }

    /// Which epoch's weights the final model should carry under `policy`: `Some(best)` when the
    /// best weights are to be restored, `None` to keep the last epoch's.
    pub fn restore_epoch(&self, policy: RestoreBest) -> Option<usize> {
        match policy {
            RestoreBest::Always => self.best_epoch,
            RestoreBest::OnStop => self.stopped_epoch.and(self.best_epoch),
        }
    }
}

pub use bertlab_run::val_acc_at_min_val_loss;

#[cfg(test)]
mod tests {
    use super::*;

    fn run(patience: usize, losses: &[f64]) -> (EarlyStopping, Vec<EpochVerdict>) {
        let mut es = EarlyStopping::new(patience);
        let mut verdicts = Vec::new();
        for &l in losses {
            let v = es.observe(l);
            verdicts.push(v);
            if v.stop {
                break;
            }
        }
        (es, verdicts)
    }

    #[test]
    fn notebook_baseline_sequence_does_not_stop() {
        // The notebook's baseline val losses over 3 epochs: best at epoch 1, no stop (patience 2).
        let (es, v) = run(2, &[0.3449, 0.3396, 0.3552]);
        assert_eq!(v.len(), 3);
        assert_eq!(v.iter().map(|v| v.improved).collect::<Vec<_>>(), [true, true, false]);
        assert!(v.iter().all(|v| !v.stop));
        assert_eq!(es.best_epoch(), Some(1));
        assert_eq!(es.stopped_epoch(), None);
        // bertlab restores epoch 1; Keras keeps the last epoch's weights.
        assert_eq!(es.restore_epoch(RestoreBest::Always), Some(1));
        assert_eq!(es.restore_epoch(RestoreBest::OnStop), None);
        assert_eq!(
            val_acc_at_min_val_loss(&[0.3449, 0.3396, 0.3552], &[0.8376, 0.8592, 0.8608]),
            Some(0.8592)
        );
    }

    #[test]
    fn patience_runs_out() {
        let (es, v) = run(2, &[0.5, 0.4, 0.45, 0.41, 0.3, 0.2]);
        // Epochs 2 and 3 do not improve on 0.4 → stop after epoch 3.
        assert_eq!(v.len(), 4);
        assert!(v[3].stop && !v[2].stop);
        assert_eq!(es.best_epoch(), Some(1));
        assert_eq!(es.best_loss(), 0.4);
        assert_eq!(es.stopped_epoch(), Some(3));
        assert_eq!(es.restore_epoch(RestoreBest::Always), Some(1));
        assert_eq!(es.restore_epoch(RestoreBest::OnStop), Some(1));
    }

    #[test]
    fn equal_loss_is_not_an_improvement_and_wait_resets() {
        let (es, v) = run(2, &[0.5, 0.5, 0.4, 0.4, 0.39, 0.39, 0.39]);
        assert_eq!(
            v.iter().map(|v| v.improved).collect::<Vec<_>>(),
            [true, false, true, false, true, false, false]
        );
        assert!(v[6].stop);
        assert_eq!(es.best_epoch(), Some(4));
    }

    #[test]
    fn patience_zero_and_one_and_nan() {
        // Keras never stops at epoch 0, even with patience 0.
        let (_, v) = run(0, &[f64::NAN, 1.0, 2.0]);
        assert!(!v[0].stop && !v[0].improved);
        assert!(v[1].improved && !v[1].stop);
        assert!(v[2].stop);
        let (es, v) = run(1, &[1.0, f64::NAN]);
        assert!(v[1].stop);
        assert_eq!(es.best_epoch(), Some(0));
        // All NaN: nothing to restore.
        let (es, _) = run(5, &[f64::NAN, f64::NAN]);
        assert_eq!(es.restore_epoch(RestoreBest::Always), None);
    }

    #[test]
    fn headline_follows_numpy_argmin() {
        assert_eq!(val_acc_at_min_val_loss(&[0.3, 0.2, 0.2], &[0.1, 0.2, 0.3]), Some(0.2));
        assert_eq!(val_acc_at_min_val_loss(&[0.3, f64::NAN, 0.1], &[0.1, 0.2, 0.3]), Some(0.2));
        assert_eq!(val_acc_at_min_val_loss(&[], &[]), None);
    }

    #[test]
    fn restore_best_parses() {
        assert_eq!("on-stop".parse::<RestoreBest>(), Ok(RestoreBest::OnStop));
        assert_eq!(RestoreBest::Always.to_string(), "always");
        assert!("never".parse::<RestoreBest>().is_err());
    }
}
