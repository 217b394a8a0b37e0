//! The finish stage of a run: the weights it ends with (restored per policy), its test metrics,
//! `best/`, and then its record: `record.json` when it completed, `failed-record.json` when not.

use crate::batching::Batch;
use crate::checkpoint;
use crate::error::TrainError;
use crate::load::Fitting;
use crate::predict::{eval_batches, evaluate};
use crate::prepare::Prepared;
use bertlab_models::export_classifier;
use bertlab_run::format::hms;
use bertlab_run::{val_acc_at_min_val_loss, RunRecord, RunSpec, RunStatus, FAILED_RECORD_FILE, RECORD_FILE};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use std::path::Path;
use std::time::Instant;

/// End the fit: restore the best epoch's weights (per `spec.restore_best`), test them, and
/// export them to `<out>/best/` unless `skip_export`. Takes the fitting after its last epoch;
/// fills the record's fit time, headline, best and restored epoch, test metrics, elapsed time
/// and `best_dir`.
pub(crate) fn finish<B: AutodiffBackend>(
    spec: &RunSpec,
    prepared: &Prepared,
    device: &B::Device,
    fitting: Fitting<B>,
    record: &mut RunRecord,
    skip_export: bool,
) -> Result<(), TrainError> {
    record.timings.fit_seconds = fitting.fit_seconds();
    let val_loss: Vec<f64> = record.epochs.iter().map(|e| e.val_loss).collect();
    let val_acc: Vec<f64> = record.epochs.iter().map(|e| e.val_acc).collect();
    record.val_acc_at_min_val_loss = val_acc_at_min_val_loss(&val_loss, &val_acc);
    record.best_epoch = fitting.early.best_epoch().map(|e| e + 1);
    let restore = fitting.early.restore_epoch(spec.restore_best).filter(|&e| e != fitting.last_epoch);
    let fitted = match (restore, fitting.best) {
        (Some(e), Some(best)) => {
            record.restored_epoch = Some(e + 1);
            best
        }
        _ => {
            record.restored_epoch = Some(fitting.last_epoch + 1);
            fitting.trainer.into_model().valid()
        }
    };

    // Test the final (restored) weights, as the notebook's `model.predict(X_te)`.
    let t = Instant::now();
    let enc = &prepared.encoded;
    let test = evaluate(&fitted, &enc.test, &enc.test_labels, &prepared.eval, device);
    record.add_shapes(eval_batches(&enc.test, &prepared.eval).iter().map(Batch::shape));
    record.timings.test_seconds = t.elapsed().as_secs_f64();
    record.timings.elapsed_seconds = record.timings.fit_seconds + record.timings.test_seconds;
    prepared.say(&format!(
        "Validation acc (best epoch): {}\nTest accuracy: {:.3}   Test F1: {:.3}\nConfusion matrix: {:?}\nElapsed time: {}",
        record.val_acc_at_min_val_loss.map_or("n/a".into(), |a| format!("{a:.3}")),
        test.accuracy,
        test.f1,
        test.confusion,
        hms(record.timings.elapsed_seconds)
    ));
    record.test = Some(test);

    if !skip_export {
        let t = Instant::now();
        let best_dir = spec.out.join("best");
        let tokenizer_dir = prepared.tokenizer.source().parent().map(Path::to_path_buf);
        export_classifier(&fitted, fitted.config(), &best_dir, tokenizer_dir.as_deref())?;
        record.timings.export_seconds = t.elapsed().as_secs_f64();
        record.best_dir = Some(best_dir);
    }
    Ok(())
}

/// Write the record of a run that ended with `outcome`. A run is completed only when its data
/// files are still what it read and every number it reports is finite: then `record.json` is
/// written and the checkpoint and an earlier failure's record go. Otherwise the error is recorded
/// in `failed-record.json` (best effort) and returned.
pub(crate) fn write_record(
    spec: &RunSpec,
    mut record: RunRecord,
    outcome: Result<(), TrainError>,
) -> Result<RunRecord, TrainError> {
    // The data files must still be what the run read: a file replaced during the run would leave
    // a record that describes other data.
    let outcome = outcome.and_then(|()| {
        record
            .data
            .files
            .iter()
            .try_for_each(|f| f.check_unchanged())
            .map_err(|e| TrainError::Data(Box::new(e.into())))
    });
    // No number that was not measured is reported: a non-finite one fails the run.
    let outcome = outcome.and_then(|()| match record.first_non_finite() {
        Some((field, value)) => Err(TrainError::NonFiniteResult { field, value }),
        None => Ok(()),
    });
    match outcome {
        Ok(()) => {
            record.status = RunStatus::Completed;
            let path = spec.out.join(RECORD_FILE);
            record.write_atomic(&path).map_err(|source| TrainError::Io { path, source })?;
            // The run is complete: its checkpoint and an earlier failure's record are obsolete
            // (best/ stays: it is the run's model).
            let _ = std::fs::remove_dir_all(checkpoint::checkpoint_dir(&spec.out));
            let _ = std::fs::remove_file(spec.out.join(FAILED_RECORD_FILE));
            Ok(record)
        }
        // An `overwrite` run that failed before it replaced the completed run (its inputs did
        // not load) leaves that run as it was: no failed record beside it to say otherwise.
        Err(err) if spec.out.join(RECORD_FILE).exists() => Err(err),
        Err(err) => {
            record.error = Some(err.to_string());
            // Best effort: the error itself is what the caller needs.
            let _ = record.write_atomic(&spec.out.join(FAILED_RECORD_FILE));
            Err(err)
        }
    }
}
