//! The fit stage of a run, one epoch at a time: batches, optimizer steps, the checks that stop
//! a run that diverged, validation, early stopping, and a checkpoint after every epoch that has
//! a next one.

use crate::batching::{padding_stats, Batch, BatchArrays};
use crate::checkpoint::{self, CheckpointState};
use crate::error::{fault_error, TrainError};
use crate::load::Fitting;
use crate::loss_scale::SKIP_GRACE_STEPS;
use crate::metrics::{argmax_rows, cross_entropy_rows};
use crate::predict::{eval_batches, metrics_from_logits, predict_logits};
use crate::prepare::Prepared;
use crate::progress::{EpochProgress, ProgressMode};
use crate::readback::PendingLogits;
use crate::step_state::StepCounts;
use bertlab_models::TextClassifier;
use bertlab_run::format::hms;
use bertlab_run::{EpochRecord, RunRecord, RunSpec};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use std::path::PathBuf;
use std::time::Instant;

/// Skipped steps in a row after the grace steps that mean the run diverged: the loss scale has
/// then fallen by 2^16, far below any scale at which f16 training makes progress.
const MAX_CONSECUTIVE_SKIPS: u64 = 16;

/// The seed of Burn's generator (dropout) for an epoch: reseeded at every epoch start, so that
/// a run resumed after epoch `e` draws the same masks in epoch `e + 1` as one never stopped.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// How an epoch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochEnd {
    /// The next epoch follows (when there is one).
    Next,
    /// Early stopping ended the fit.
    Stop,
}

/// Epoch `epoch` (0-based) of the run: its train steps, validation and early stopping, and a
/// checkpoint when another epoch follows. Takes the fitting as the epoch before left it (or the
/// load stage); leaves it after this epoch, with the epoch's record in `record` (and the train
/// padding, for the first epoch; `stopped_early` when early stopping ends the fit here).
pub(crate) fn fit_epoch<B: AutodiffBackend>(
    spec: &RunSpec,
    prepared: &Prepared,
    device: &B::Device,
    progress: ProgressMode,
    fitting: &mut Fitting<B>,
    epoch: usize,
    record: &mut RunRecord,
) -> Result<EpochEnd, TrainError> {
    fitting.last_epoch = epoch;
    B::seed(device, epoch_seed(spec.seed, epoch));
    bertlab_models::ops::seed_dropout(epoch_seed(spec.seed, epoch));
    let lengths = &prepared.train_lengths;
    let batches = prepared.buckets.epoch(lengths, &mut fitting.batch_rng);
    let padding = padding_stats(&batches, lengths);
    if epoch == 0 {
        record.data.train_padding = padding;
    }
    record.add_shapes(batches.iter().map(Batch::shape));
    record.add_shapes(eval_batches(&prepared.encoded.val, &prepared.eval).iter().map(Batch::shape));
    let mut bar = EpochProgress::new(progress, epoch + 1, spec.epochs, batches.len() as u64);
    let trained = train_steps(spec, prepared, device, fitting, epoch, &batches, &mut bar)?;

    let started = Instant::now();
    let inner = fitting.trainer.model().valid();
    let val_logits = predict_logits(&inner, &prepared.encoded.val, &prepared.eval, device);
    let val = metrics_from_logits(&val_logits, &prepared.encoded.val_labels, inner.config().num_labels());
    let val_seconds = started.elapsed().as_secs_f64();
    let val_loss = val.loss.unwrap_or(f64::NAN);
    if let Some(fault) = fitting.faults.fault() {
        return Err(fault_error(spec, &fault));
    }
    if !val_loss.is_finite() {
        return Err(TrainError::NonFiniteValidation { epoch: epoch + 1, value: val_loss });
    }
    let TrainedEpoch { tally, steps, skipped, lr, seconds: train_seconds, .. } = trained;
    let counted = (tally.seen - tally.non_finite).max(1) as f64;
    let epoch_record = EpochRecord {
        epoch: epoch + 1,
        train_loss: tally.loss_sum / counted,
        train_acc: tally.correct as f64 / tally.seen.max(1) as f64,
        val_loss,
        val_acc: val.accuracy,
        lr,
        steps,
        skipped_steps: skipped,
        loss_scale: fitting.trainer.scaler().scale(),
        train_seconds,
        val_seconds,
        train_seq_per_s: tally.seen as f64 / train_seconds,
        train_tokens_per_s: padding.real_tokens as f64 / train_seconds,
        train_padded_tokens_per_s: padding.padded_tokens as f64 / train_seconds,
    };
    bar.finish(&format!(
        "- {} - acc: {:.4} - loss: {:.4} - val_acc: {:.4} - val_loss: {:.4} - {:.1} seq/s",
        hms(train_seconds + val_seconds),
        epoch_record.train_acc,
        epoch_record.train_loss,
        epoch_record.val_acc,
        epoch_record.val_loss,
        epoch_record.train_seq_per_s
    ));
    record.epochs.push(epoch_record);

    let verdict = fitting.early.observe(val_loss);
    if verdict.improved {
        // Shares the parameter buffers: the next optimizer step writes new ones.
        fitting.best = Some(inner);
    }
    if verdict.stop {
        record.stopped_early = epoch + 1 < spec.epochs;
        return Ok(EpochEnd::Stop);
    }
    if epoch + 1 < spec.epochs {
        save_checkpoint(spec, fitting, record, epoch, verdict.improved)?;
    }
    Ok(EpochEnd::Next)
}

/// What an epoch's train steps leave.
struct TrainedEpoch {
    /// Loss and accuracy of the steps, from their logits.
    tally: TrainTally,
    /// Optimizer steps taken.
    steps: u64,
    /// Optimizer steps skipped for f16 overflow.
    skipped: u64,
    /// The learning rate of the last step.
    lr: f64,
    /// Seconds of the steps (the device synced).
    seconds: f64,
}

/// The optimizer steps of one epoch over `batches` (groups of `spec.accum` micro-batches),
/// stopping at a backend thread's fault, a non-finite loss without a dynamic loss scale, or f16
/// overflow that leaves no training.
fn train_steps<B: AutodiffBackend>(
    spec: &RunSpec,
    prepared: &Prepared,
    device: &B::Device,
    fitting: &mut Fitting<B>,
    epoch: usize,
    batches: &[Batch],
    bar: &mut EpochProgress,
) -> Result<TrainedEpoch, TrainError> {
    let enc = &prepared.encoded;
    let trainer = &mut fitting.trainer;
    let num_classes = trainer.model().config().num_labels();
    let dynamic_scale = trainer.scaler().is_dynamic();
    let started = Instant::now();
    let mut tally = TrainTally::default();
    let mut pending = PendingLogits::<B::InnerBackend, BatchTag>::for_training();
    // What the device decided (steps applied and skipped) is read with the logits.
    let at_start = trainer.settle();
    let mut lr = trainer.next_lr();
    let mut step_in_epoch = 0usize;
    for group in batches.chunks(spec.accum) {
        let packed: Vec<(BatchArrays, Vec<u32>)> = group
            .iter()
            .map(|batch| {
                let arrays = BatchArrays::pack(batch, prepared.eval.pad_id, |r, out| {
                    enc.train.extend_row_into(r, out)
                });
                let labels: Vec<u32> = batch.rows.iter().map(|&r| enc.train_labels[r]).collect();
                (arrays, labels)
            })
            .collect();
        let micro: Vec<(&BatchArrays, &[u32])> = packed.iter().map(|(a, l)| (a, l.as_slice())).collect();
        let outcome = trainer.step(&micro, device, None);
        lr = outcome.lr;
        for (logits, (_, labels)) in outcome.logits.into_iter().zip(packed) {
            step_in_epoch += 1;
            pending.push(logits, labels.len(), BatchTag { labels, step: step_in_epoch, lr });
        }
        if pending.due() {
            tally.read(&mut pending, bar, num_classes, dynamic_scale, epoch)?;
            check_skips_in_row(&trainer.settle(), epoch, step_in_epoch)?;
            // After a read, the device has run the steps so far: stop at a backend
            // thread's panic (CUDA out of memory) rather than train on lost buffers.
            if let Some(fault) = fitting.faults.fault() {
                return Err(fault_error(spec, &fault));
            }
        }
    }
    tally.read(&mut pending, bar, num_classes, dynamic_scale, epoch)?;
    let at_end = trainer.settle();
    check_skips_in_row(&at_end, epoch, step_in_epoch)?;
    let (steps, skipped) = (at_end.applied - at_start.applied, at_end.skipped - at_start.skipped);
    B::sync(device).ok();
    if let Some(fault) = fitting.faults.fault() {
        return Err(fault_error(spec, &fault));
    }
    let seconds = started.elapsed().as_secs_f64();
    // Half the epoch's steps lost to overflow (after the grace steps) is no training.
    let graced = if epoch == 0 { SKIP_GRACE_STEPS.min(skipped) } else { 0 };
    if (skipped - graced) * 2 > steps + skipped - graced || tally.seen == tally.non_finite {
        return Err(TrainError::Diverged {
            epoch: epoch + 1,
            step: step_in_epoch,
            detail: format!(
                "{skipped} of {} optimizer steps skipped for f16 overflow, {} of {} batches with a \
                 non-finite loss",
                steps + skipped,
                tally.non_finite,
                step_in_epoch
            ),
        });
    }
    Ok(TrainedEpoch { tally, steps, skipped, lr, seconds })
}

/// Too many f16 steps skipped in a row (after the grace steps) is a diverged run.
fn check_skips_in_row(counts: &StepCounts, epoch: usize, step_in_epoch: usize) -> Result<(), TrainError> {
    if counts.skips_in_row < MAX_CONSECUTIVE_SKIPS {
        return Ok(());
    }
    Err(TrainError::Diverged {
        epoch: epoch + 1,
        step: step_in_epoch,
        detail: format!(
            "{} f16 steps in a row overflowed (loss scale now {:e})",
            counts.skips_in_row, counts.scale
        ),
    })
}

/// Write the checkpoint after epoch `epoch` (0-based): the weights, the optimizer's moments, the
/// best weights when this epoch `improved`, then `state.json` naming them.
fn save_checkpoint<B: AutodiffBackend>(
    spec: &RunSpec,
    fitting: &mut Fitting<B>,
    record: &RunRecord,
    epoch: usize,
    improved: bool,
) -> Result<(), TrainError> {
    let checkpoint_dir = checkpoint::checkpoint_dir(&spec.out);
    let trainer = &fitting.trainer;
    let (model_file, optimizer_file) = CheckpointState::files_for(epoch + 1);
    let io = |path: PathBuf| move |source| TrainError::Io { path, source };
    std::fs::create_dir_all(&checkpoint_dir).map_err(io(checkpoint_dir.clone()))?;
    checkpoint::save_weights(trainer.model(), &checkpoint_dir.join(&model_file))
        .map_err(io(checkpoint_dir.join(&model_file)))?;
    let moments = trainer.optimizer().moments(trainer.model());
    checkpoint::save_moments(&moments, &checkpoint_dir.join(&optimizer_file))
        .map_err(io(checkpoint_dir.join(&optimizer_file)))?;
    if improved {
        let file = format!("best-{}.bin", epoch + 1);
        let best_model: &TextClassifier<B::InnerBackend> = fitting.best.as_ref().expect("just set");
        checkpoint::save_weights(best_model, &checkpoint_dir.join(&file))
            .map_err(io(checkpoint_dir.join(&file)))?;
        fitting.best_file = Some(file);
    }
    let state = CheckpointState {
        format: CheckpointState::format(),
        spec: spec.clone(),
        data: record.data.clone(),
        epochs: record.epochs.clone(),
        shapes: record.shapes.clone(),
        batch_rng: fitting.batch_rng.clone(),
        scaler: trainer.scaler().clone(),
        optimizer_steps: trainer.optimizer().steps(),
        fit_seconds: fitting.fit_seconds(),
        model_file,
        optimizer_file,
        best_file: fitting.best_file.clone(),
    };
    state.commit(&checkpoint_dir).map_err(io(checkpoint_dir.join("state.json")))
}

/// What the trainer keeps of a micro-batch until its logits are read back.
struct BatchTag {
    labels: Vec<u32>,
    /// 1-based batch number in the epoch.
    step: usize,
    lr: f64,
}

/// The epoch's running training loss and accuracy, from logits read back in groups.
#[derive(Default)]
struct TrainTally {
    loss_sum: f64,
    correct: u64,
    seen: u64,
    /// Rows of batches whose loss overflowed (f16, dynamic scale): skipped steps, left out of
    /// the mean loss so that the record holds the loss of the steps that trained.
    non_finite: u64,
}

impl TrainTally {
    /// Read the waiting logits, add them to the tally in batch order and advance the progress
    /// bar. A non-finite loss ends the run unless a dynamic loss scale handles overflow (then
    /// the step is skipped and the loss is only counted as such).
    fn read<B: Backend>(
        &mut self,
        pending: &mut PendingLogits<B, BatchTag>,
        bar: &mut EpochProgress,
        num_classes: usize,
        dynamic_scale: bool,
        epoch: usize,
    ) -> Result<(), TrainError> {
        for (tag, logits) in pending.take() {
            let losses = cross_entropy_rows(&logits, &tag.labels, num_classes);
            let batch_loss: f64 = losses.iter().sum();
            if !batch_loss.is_finite() {
                if !dynamic_scale {
                    return Err(TrainError::NonFiniteLoss {
                        epoch: epoch + 1,
                        step: tag.step,
                        value: batch_loss,
                        lr: tag.lr,
                    });
                }
                self.non_finite += tag.labels.len() as u64;
            } else {
                self.loss_sum += batch_loss;
            }
            let predicted = argmax_rows(&logits, num_classes);
            self.correct += predicted.iter().zip(&tag.labels).filter(|(p, l)| p == l).count() as u64;
            self.seen += tag.labels.len() as u64;
            let counted = (self.seen - self.non_finite).max(1) as f64;
            bar.batch(self.loss_sum / counted, self.correct as f64 / self.seen as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seeds_differ_by_epoch_and_run() {
        assert_ne!(epoch_seed(42, 0), epoch_seed(42, 1));
        assert_ne!(epoch_seed(42, 0), epoch_seed(43, 0));
        assert_eq!(epoch_seed(42, 3), epoch_seed(42, 3));
    }
}
