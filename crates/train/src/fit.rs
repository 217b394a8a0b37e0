//! The epochs of a run: batches, optimizer steps, validation, early stopping, a checkpoint after
//! every epoch that has a next one, and the checks that stop a run that diverged.

use crate::batching::{padding_stats, BatchArrays, LengthBuckets};
use crate::checkpoint::{self, CheckpointState};
use crate::device_fault::FaultWatch;
use crate::early_stopping::EarlyStopping;
use crate::metrics::{argmax_rows, cross_entropy_rows};
use crate::optim::AdamSettings;
use crate::predict::{metrics_from_logits, predict_logits, EvalSettings};
use crate::progress::{EpochProgress, ProgressMode};
use crate::readback::PendingLogits;
use crate::schedule::LrSchedule;
use crate::step::TrainStep;
use crate::trainer::{fault_error, Encoded, TrainError};
use bertlab_data::rng::Pcg64;
use bertlab_models::TextClassifier;
use bertlab_run::format::hms;
use bertlab_run::{val_acc_at_min_val_loss, EpochRecord, RunRecord, RunSpec};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use std::path::PathBuf;
use std::time::Instant;

/// Optimizer steps at the start of a run in which f16 overflow skips are expected while the
/// loss scale settles (from 2^16 it halves once per overflow).
const SKIP_GRACE_STEPS: u64 = 10;

/// Skipped steps in a row after the grace steps that mean the run diverged: the loss scale has
/// then fallen by 2^16, far below any scale at which f16 training makes progress.
const MAX_CONSECUTIVE_SKIPS: u64 = 16;

/// A checkpoint to resume from, read and checked by the caller.
pub(crate) struct Resume {
    pub state: CheckpointState,
    pub dir: PathBuf,
}

/// The seed of Burn's generator (dropout) for an epoch: reseeded at every epoch start, so that
/// a run resumed after epoch `e` draws the same masks in epoch `e + 1` as one never stopped.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// All epochs; returns the inference module the run ends with (restored per policy) and fills
/// the record's epochs, best/restored epoch, early-stopping flag and headline. Writes a
/// checkpoint after each epoch that has a next one.
#[allow(clippy::too_many_arguments)] // the run's parts, each used throughout the loop
pub(crate) fn fit<B: AutodiffBackend>(
    spec: &RunSpec,
    model: TextClassifier<B>,
    enc: &Encoded,
    eval: &EvalSettings,
    device: &B::Device,
    progress: ProgressMode,
    record: &mut RunRecord,
    resume: Option<Resume>,
) -> Result<TextClassifier<B::InnerBackend>, TrainError> {
    let precision = eval.precision;
    let num_classes = model.config().num_labels();
    let lengths: Vec<usize> = enc.train.seq_lens().collect();
    let buckets = LengthBuckets::new(spec.batch, spec.padding, spec.pad_multiple, spec.max_len);
    let batches_per_epoch = lengths.len().div_ceil(spec.batch);
    let steps_per_epoch = batches_per_epoch.div_ceil(spec.accum) as u64;
    let schedule =
        LrSchedule::new(spec.schedule, spec.lr, steps_per_epoch * spec.epochs as u64, spec.warmup_ratio);
    let optimizer = AdamSettings::for_kind(spec.optimizer, spec.weight_decay);
    let checkpoint_dir = checkpoint::checkpoint_dir(&spec.out);
    let mut early = EarlyStopping::new(spec.patience);
    let mut rng = Pcg64::new(spec.seed);
    let mut best: Option<TextClassifier<B::InnerBackend>> = None;
    let mut best_file: Option<String> = None;
    let mut fit_seconds_before = 0.0;
    let mut trainer;
    let first_epoch;
    match resume {
        None => {
            trainer = TrainStep::new(model, optimizer, schedule, spec.grad_clip, precision);
            first_epoch = 0;
        }
        Some(Resume { state, dir }) => {
            let weights = dir.join(&state.model_file);
            let model = checkpoint::load_weights(model, &weights, device)?;
            trainer = TrainStep::new(model, optimizer, schedule, spec.grad_clip, precision);
            let moments = checkpoint::load_moments(&dir.join(&state.optimizer_file))?;
            trainer.restore(state.optimizer_steps, moments, state.scaler.clone(), device).map_err(
                |message| checkpoint::CheckpointError { path: dir.join(&state.optimizer_file), message },
            )?;
            if let Some(file) = &state.best_file {
                let inner = trainer.model().valid();
                best = Some(checkpoint::load_weights(inner, &dir.join(file), device)?);
                best_file = Some(file.clone());
            }
            // Early stopping is a function of the validation losses: replaying them restores it.
            for e in &state.epochs {
                early.observe(e.val_loss);
            }
            rng = state.batch_rng;
            fit_seconds_before = state.fit_seconds;
            first_epoch = state.epochs.len();
            record.epochs = state.epochs;
            // Counted in the first epoch, which this process did not run.
            record.data.train_padding = state.data.train_padding;
        }
    }
    let dynamic_scale = trainer.scaler().is_dynamic();
    let mut last_epoch = first_epoch.saturating_sub(1);
    let mut consecutive_skips = 0u64;
    let fit_started = Instant::now();
    let faults = FaultWatch::start();

    for epoch in first_epoch..spec.epochs {
        last_epoch = epoch;
        B::seed(device, epoch_seed(spec.seed, epoch));
        let batches = buckets.epoch(&lengths, &mut rng);
        let padding = padding_stats(&batches, &lengths);
        if epoch == 0 {
            record.data.train_padding = padding;
        }
        let mut bar = EpochProgress::new(progress, epoch + 1, spec.epochs, batches.len() as u64);
        let started = Instant::now();
        let mut tally = TrainTally::default();
        let mut pending = PendingLogits::<B::InnerBackend, BatchTag>::for_training();
        let (mut steps, mut skipped, mut lr) = (0u64, 0u64, trainer.next_lr());
        let mut step_in_epoch = 0usize;
        for group in batches.chunks(spec.accum) {
            let packed: Vec<(BatchArrays, Vec<u32>)> = group
                .iter()
                .map(|batch| {
                    let arrays =
                        BatchArrays::pack(batch, eval.pad_id, |r, out| enc.train.extend_row_into(r, out));
                    let labels: Vec<u32> = batch.rows.iter().map(|&r| enc.train_labels[r]).collect();
                    (arrays, labels)
                })
                .collect();
            let micro: Vec<(&BatchArrays, &[u32])> = packed.iter().map(|(a, l)| (a, l.as_slice())).collect();
            let attempts_before = trainer.optimizer().steps() + trainer.scaler().skipped_steps();
            let outcome = trainer.step(&micro, device, None);
            lr = outcome.lr;
            for (logits, (_, labels)) in outcome.logits.into_iter().zip(packed) {
                step_in_epoch += 1;
                pending.push(logits, BatchTag { labels, step: step_in_epoch, lr });
            }
            if outcome.skipped {
                skipped += 1;
                if attempts_before >= SKIP_GRACE_STEPS {
                    consecutive_skips += 1;
                }
                if consecutive_skips >= MAX_CONSECUTIVE_SKIPS {
                    return Err(TrainError::Diverged {
                        epoch: epoch + 1,
                        step: step_in_epoch,
                        detail: format!(
                            "{consecutive_skips} f16 steps in a row overflowed (loss scale now {:e}); lower --lr \
                             or use --precision bf16 or f32",
                            trainer.scaler().scale()
                        ),
                    });
                }
            } else {
                steps += 1;
                consecutive_skips = 0;
            }
            if pending.due() {
                tally.read(&mut pending, &mut bar, num_classes, dynamic_scale, epoch)?;
                // After a read, the device has run the steps so far: stop at a backend
                // thread's panic (CUDA out of memory) rather than train on lost buffers.
                if let Some(fault) = faults.fault() {
                    return Err(fault_error(spec, &fault));
                }
            }
        }
        tally.read(&mut pending, &mut bar, num_classes, dynamic_scale, epoch)?;
        B::sync(device).ok();
        if let Some(fault) = faults.fault() {
            return Err(fault_error(spec, &fault));
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let TrainTally { loss_sum, correct, seen, non_finite } = tally;
        // Half the epoch's steps lost to overflow (after the grace steps) is no training.
        let graced = if epoch == 0 { SKIP_GRACE_STEPS.min(skipped) } else { 0 };
        if (skipped - graced) * 2 > steps + skipped - graced || seen == non_finite {
            return Err(TrainError::Diverged {
                epoch: epoch + 1,
                step: step_in_epoch,
                detail: format!(
                    "{skipped} of {} optimizer steps skipped for f16 overflow, {non_finite} of {} batches with a \
                     non-finite loss; lower --lr or use --precision bf16 or f32",
                    steps + skipped,
                    step_in_epoch
                ),
            });
        }

        let started = Instant::now();
        let inner = trainer.model().valid();
        let val_logits = predict_logits(&inner, &enc.val, eval, device);
        let val = metrics_from_logits(&val_logits, &enc.val_labels, num_classes);
        let val_seconds = started.elapsed().as_secs_f64();
        let val_loss = val.loss.unwrap_or(f64::NAN);
        if let Some(fault) = faults.fault() {
            return Err(fault_error(spec, &fault));
        }
        if !val_loss.is_finite() {
            return Err(TrainError::NonFiniteValidation { epoch: epoch + 1, value: val_loss });
        }
        let counted = (seen - non_finite).max(1) as f64;
        let epoch_record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / counted,
            train_acc: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_acc: val.accuracy,
            lr,
            steps,
            skipped_steps: skipped,
            loss_scale: trainer.scaler().scale(),
            train_seconds,
            val_seconds,
            train_seq_per_s: seen as f64 / train_seconds,
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
        let verdict = early.observe(val_loss);
        if verdict.improved {
            // Shares the parameter buffers: the next optimizer step writes new ones.
            best = Some(inner);
        }
        if verdict.stop {
            record.stopped_early = epoch + 1 < spec.epochs;
            break;
        }
        if epoch + 1 < spec.epochs {
            let (model_file, optimizer_file) = CheckpointState::files_for(epoch + 1);
            let io = |path: PathBuf| move |source| TrainError::Io { path, source };
            std::fs::create_dir_all(&checkpoint_dir).map_err(io(checkpoint_dir.clone()))?;
            checkpoint::save_weights(trainer.model(), &checkpoint_dir.join(&model_file))
                .map_err(io(checkpoint_dir.join(&model_file)))?;
            let moments = trainer.optimizer().moments(trainer.model());
            checkpoint::save_moments(&moments, &checkpoint_dir.join(&optimizer_file))
                .map_err(io(checkpoint_dir.join(&optimizer_file)))?;
            if verdict.improved {
                let file = format!("best-{}.bin", epoch + 1);
                let best_model = best.as_ref().expect("just set");
                checkpoint::save_weights(best_model, &checkpoint_dir.join(&file))
                    .map_err(io(checkpoint_dir.join(&file)))?;
                best_file = Some(file);
            }
            let state = CheckpointState {
                format: CheckpointState::format(),
                spec: spec.clone(),
                data: record.data.clone(),
                epochs: record.epochs.clone(),
                batch_rng: rng.clone(),
                scaler: trainer.scaler().clone(),
                optimizer_steps: trainer.optimizer().steps(),
                fit_seconds: fit_seconds_before + fit_started.elapsed().as_secs_f64(),
                model_file,
                optimizer_file,
                best_file: best_file.clone(),
            };
            state.commit(&checkpoint_dir).map_err(io(checkpoint_dir.join("state.json")))?;
        }
    }
    record.timings.fit_seconds = fit_seconds_before + fit_started.elapsed().as_secs_f64();

    let val_loss: Vec<f64> = record.epochs.iter().map(|e| e.val_loss).collect();
    let val_acc: Vec<f64> = record.epochs.iter().map(|e| e.val_acc).collect();
    record.val_acc_at_min_val_loss = val_acc_at_min_val_loss(&val_loss, &val_acc);
    record.best_epoch = early.best_epoch().map(|e| e + 1);
    let restore = early.restore_epoch(spec.restore_best).filter(|&e| e != last_epoch);
    let final_model = match (restore, best) {
        (Some(e), Some(best)) => {
            record.restored_epoch = Some(e + 1);
            best
        }
        _ => {
            record.restored_epoch = Some(last_epoch + 1);
            trainer.into_model().valid()
        }
    };
    Ok(final_model)
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
