//! `results.csv`: one row per run, written with the `csv` crate from [`ResultRow`], whose
//! fields are the columns (no second list of column names to keep in step).

use super::markdown::confusion_text;
use super::rows::{RunRow, StageReport};
use super::Report;
use crate::error::PipelineError;
use bertlab_run::format::{format_lr, format_number, round_sig};
use bertlab_run::SettingText;
use serde::Serialize;

/// One row of `results.csv`. Numbers are written as the report writes them (rounded to 10
/// significant digits; learning rates as `7.5e-6`); an empty cell is a value the run does not
/// have (not run yet, failed before it, or not recorded).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResultRow {
    /// Pipeline name.
    pub pipeline: String,
    /// Problem id.
    pub problem: String,
    /// Run id (directory name).
    pub run_id: String,
    /// The run belongs to the problem's latest plan (false: another plan's record in the same
    /// directory).
    pub in_latest_plan: bool,
    /// `completed`, `failed` or `pending`.
    pub status: String,
    /// The best run of its problem.
    pub is_best: bool,
    /// Model role.
    pub model_role: String,
    /// Model reference the run used.
    pub model: String,
    /// Data source the run used.
    pub source: String,
    /// Column of the texts.
    pub text_column: String,
    /// Column of the labels.
    pub label_column: String,
    /// The dataset's config (subfolder), when it has several.
    pub dataset_config: String,
    /// `notebook` or `given` splits.
    pub splits: String,
    /// Classes of the run, `|`-separated.
    pub classes: String,
    /// Tokens per sequence.
    pub max_len: String,
    /// Truncation strategy.
    pub truncation: String,
    /// Learning rate.
    pub lr: String,
    /// Training batch the run used (after any out-of-memory retry).
    pub batch: String,
    /// The planned batch.
    pub planned_batch: String,
    /// The batch was halved after running out of memory.
    pub oom_retry: bool,
    /// Evaluation batch.
    pub eval_batch: String,
    /// Subset as a fraction of the pool.
    pub subset_fraction: String,
    /// The pool (`--subset`).
    pub pool: String,
    /// Effective fraction of the dataset.
    pub subset: String,
    /// Maximum epochs.
    pub epochs_max: String,
    /// Epochs run.
    pub epochs_run: String,
    /// Epoch of minimum validation loss.
    pub best_epoch: String,
    /// Early stopping ended the run.
    pub stopped_early: String,
    /// Lowest validation loss.
    pub min_val_loss: String,
    /// Validation accuracy at minimum validation loss.
    pub val_acc_at_min_val_loss: String,
    /// Test accuracy.
    pub test_accuracy: String,
    /// Test F1 (the positive class's for two classes, else macro).
    pub test_f1: String,
    /// Test macro F1.
    pub test_macro_f1: String,
    /// Test weighted F1.
    pub test_weighted_f1: String,
    /// Test precision (positive class).
    pub test_precision: String,
    /// Test recall (positive class).
    pub test_recall: String,
    /// Test loss.
    pub test_loss: String,
    /// Test confusion matrix, numpy-style.
    pub confusion: String,
    /// Training rows.
    pub train_rows: String,
    /// Validation rows.
    pub val_rows: String,
    /// Test rows.
    pub test_rows: String,
    /// Optimizer.
    pub optimizer: String,
    /// Learning-rate schedule.
    pub schedule: String,
    /// Warmup fraction.
    pub warmup_ratio: String,
    /// Weight decay (empty: the optimizer's default).
    pub weight_decay: String,
    /// Gradient clip (empty: none).
    pub grad_clip: String,
    /// Gradient accumulation.
    pub accum: String,
    /// Compute precision actually used.
    pub precision: String,
    /// Padding strategy.
    pub padding: String,
    /// Pad multiple.
    pub pad_multiple: String,
    /// Early-stopping patience.
    pub patience: String,
    /// Restore policy.
    pub restore_best: String,
    /// Seed.
    pub seed: String,
    /// Backend.
    pub backend: String,
    /// Mean seconds per epoch.
    pub seconds_per_epoch: String,
    /// Seconds of all epochs.
    pub fit_seconds: String,
    /// fit + test seconds.
    pub elapsed_seconds: String,
    /// Start to record.
    pub total_seconds: String,
    /// Training sequences per second.
    pub train_seq_per_s: String,
    /// Padded training tokens per second.
    pub train_padded_tokens_per_s: String,
    /// Peak resident memory, MiB.
    pub peak_rss_mb: String,
    /// The error of a failed run.
    pub error: String,
}

impl ResultRow {
    fn of(stage: &StageReport, row: &RunRow, in_plan: bool, is_best: bool) -> ResultRow {
        let c = row.completed();
        let rec = row.record.as_ref();
        let test = c.and_then(|r| r.test.as_ref());
        let text = |v: Option<String>| v.unwrap_or_default();
        let num = |v: Option<f64>| v.map(|x| format!("{}", round_sig(x, 10))).unwrap_or_default();
        // A setting as the run recorded it, else as planned.
        let setting = |key: &str| {
            text(
                rec.and_then(|r| r.spec.value_text(key))
                    .or_else(|| row.planned.as_ref()?.settings.value_text(key)),
            )
        };
        let (fraction, pool) = row.subset_parts();
        ResultRow {
            pipeline: stage.key.pipeline.clone(),
            problem: stage.key.problem.clone(),
            run_id: row.run_id.clone(),
            in_latest_plan: in_plan,
            status: row.status().into(),
            is_best,
            model_role: row.role(),
            model: row.model(),
            source: setting("source"),
            text_column: setting("text_column"),
            label_column: setting("label_column"),
            dataset_config: setting("dataset_config"),
            splits: setting("splits"),
            classes: text(rec.map(|r| r.data.class_names.join("|")).filter(|c| !c.is_empty())),
            max_len: text(row.max_len().map(|v| v.to_string())),
            truncation: setting("truncation"),
            lr: text(row.lr().map(format_lr)),
            batch: text(row.batch().map(|v| v.to_string())),
            planned_batch: text(row.planned_batch().map(|v| v.to_string())),
            oom_retry: row.oom_retry().is_some(),
            eval_batch: setting("eval_batch"),
            subset_fraction: format_number(fraction),
            pool: format_number(pool),
            subset: text(row.subset().map(format_number)),
            epochs_max: text(row.max_epochs().map(|v| v.to_string())),
            epochs_run: text(rec.map(|r| r.epochs.len().to_string())),
            best_epoch: text(c.and_then(|r| r.best_epoch).map(|v| v.to_string())),
            stopped_early: text(c.map(|r| r.stopped_early.to_string())),
            min_val_loss: num(c.and_then(|r| r.min_val_loss())),
            val_acc_at_min_val_loss: num(c.and_then(|r| r.val_acc_at_min_val_loss())),
            test_accuracy: num(test.map(|t| t.accuracy)),
            test_f1: num(test.map(|t| t.f1)),
            test_macro_f1: num(test.map(|t| t.macro_f1)),
            test_weighted_f1: num(test.map(|t| t.weighted_f1)),
            test_precision: num(test.map(|t| t.precision)),
            test_recall: num(test.map(|t| t.recall)),
            test_loss: num(test.and_then(|t| t.loss)),
            confusion: text(test.map(|t| confusion_text(&t.confusion))),
            train_rows: text(c.map(|r| r.data.train.to_string())),
            val_rows: text(c.map(|r| r.data.val.to_string())),
            test_rows: text(c.map(|r| r.data.test.to_string())),
            optimizer: setting("optimizer"),
            schedule: setting("schedule"),
            warmup_ratio: setting("warmup_ratio"),
            weight_decay: setting("weight_decay"),
            grad_clip: setting("grad_clip"),
            accum: setting("accum"),
            precision: text(
                rec.map(|r| r.environment.precision.clone())
                    .filter(|p| !p.is_empty())
                    .or_else(|| row.planned.as_ref()?.settings.precision.map(|p| p.setting_text())),
            ),
            padding: setting("padding"),
            pad_multiple: setting("pad_multiple"),
            patience: setting("patience"),
            restore_best: setting("restore_best"),
            seed: setting("seed"),
            backend: text(rec.map(|r| r.environment.backend.clone())),
            seconds_per_epoch: num(c.and_then(|r| r.seconds_per_epoch())),
            fit_seconds: num(c.map(|r| r.timings.fit_seconds)),
            elapsed_seconds: num(c.map(|r| r.timings.elapsed_seconds)),
            total_seconds: num(c.map(|r| r.timings.total_seconds)),
            train_seq_per_s: num(c.and_then(|r| r.train_seq_per_s())),
            train_padded_tokens_per_s: num(c.and_then(|r| r.train_padded_tokens_per_s())),
            peak_rss_mb: num(rec.and_then(|r| r.peak_rss_bytes).map(|b| b as f64 / 1_048_576.0)),
            error: text(rec.and_then(|r| r.error.clone())),
        }
    }
}

/// The column names of `results.csv`, in order (the fields of [`ResultRow`]).
pub fn csv_columns() -> Vec<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(ResultRow::default()).expect("a row of strings serialises");
    let bytes = w.into_inner().expect("writing to memory");
    let text = String::from_utf8(bytes).expect("UTF-8 column names");
    text.lines().next().unwrap_or_default().split(',').map(str::to_string).collect()
}

/// `results.csv` of `report`: the header, then each problem's planned runs and the other
/// records of its directory.
pub(crate) fn render(report: &Report) -> Result<String, PipelineError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut rows = 0;
    for stage in &report.stages {
        let best = stage.best();
        let planned =
            stage.runs.iter().enumerate().map(|(i, row)| ResultRow::of(stage, row, true, best == Some(i)));
        let others = stage.others.iter().map(|row| ResultRow::of(stage, row, false, false));
        for r in planned.chain(others) {
            w.serialize(r).map_err(|e| PipelineError::Csv(e.to_string()))?;
            rows += 1;
        }
    }
    if rows == 0 {
        // The header alone: serialize writes it with the first row only.
        w.write_record(csv_columns()).map_err(|e| PipelineError::Csv(e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| PipelineError::Csv(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| PipelineError::Csv(e.to_string()))
}
