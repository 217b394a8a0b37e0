//! Batched inference: logits, predictions and metrics of a classifier over encoded texts.

use crate::batching::{Batch, BatchArrays, LengthBuckets, Padding};
use crate::metrics::{argmax_rows, cross_entropy_rows, ClassificationMetrics};
pub use crate::readback::logits_to_vec;
use crate::readback::PendingLogits;
use bertlab_models::{Precision, TextClassifier};
use bertlab_tokenize::EncodedTexts;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use std::time::Duration;

/// How evaluation batches are formed and computed.
#[derive(Debug, Clone, Copy)]
pub struct EvalSettings {
    /// Rows per batch.
    pub batch: usize,
    /// `bucket` sorts rows by length (least padding); `fixed` pads to `max_len`.
    pub padding: Padding,
    /// Bucketed lengths are rounded up to a multiple of this.
    pub pad_multiple: usize,
    /// Matmul precision.
    pub precision: Precision,
    /// The tokenizer's `[PAD]` id.
    pub pad_id: u32,
}

/// The `input_ids` and `attention_mask` tensors of a packed batch.
pub fn batch_tensors<B: Backend>(
    arrays: &BatchArrays,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let shape = [arrays.rows, arrays.len];
    let ids = Tensor::from_data(TensorData::new(arrays.input_ids.clone(), shape), device);
    let mask = Tensor::from_data(TensorData::new(arrays.attention_mask.clone(), shape), device);
    (ids, mask)
}

/// Logits of every row of `encoded`, in row order, row-major `[rows, num_labels]`.
///
/// Use an inference module (`model.valid()` of a training one) so that dropout is off.
pub fn predict_logits<B: Backend>(
    model: &TextClassifier<B>,
    encoded: &EncodedTexts,
    settings: &EvalSettings,
    device: &B::Device,
) -> Vec<f32> {
    let k = model.config().num_labels();
    let mut out = vec![0f32; encoded.len() * k];
    // Read back in groups: one wait for the device per group instead of per batch.
    let mut pending = PendingLogits::<B, Vec<usize>>::new(EVAL_READBACK_BATCHES, Duration::MAX);
    let mut scatter = |pending: &mut PendingLogits<B, Vec<usize>>| {
        for (rows, values) in pending.take() {
            for (i, &row) in rows.iter().enumerate() {
                out[row * k..(row + 1) * k].copy_from_slice(&values[i * k..(i + 1) * k]);
            }
        }
    };
    for batch in eval_batches(encoded, settings) {
        let arrays = BatchArrays::pack(&batch, settings.pad_id, |r, ids| encoded.extend_row_into(r, ids));
        let (ids, mask) = batch_tensors::<B>(&arrays, device);
        let logits = model.forward(ids, mask, settings.precision);
        // Filler rows (after the real ones) are computed for the shape's sake and dropped.
        pending.push(logits, batch.rows.len(), batch.rows);
        if pending.due() {
            scatter(&mut pending);
        }
    }
    scatter(&mut pending);
    out
}

/// The batches [`predict_logits`] runs `encoded` in (their shapes are what the device sees).
pub fn eval_batches(encoded: &EncodedTexts, settings: &EvalSettings) -> Vec<Batch> {
    let lengths: Vec<usize> = encoded.seq_lens().collect();
    LengthBuckets::new(settings.batch, settings.padding, settings.pad_multiple, encoded.max_len())
        .sequential(&lengths)
}

/// How many evaluation batches' logits wait on the device before one read-back.
const EVAL_READBACK_BATCHES: usize = 256;

/// Accuracy, F1 (positive class), precision, recall, confusion matrix and mean loss of the
/// logits of `encoded` against `labels`.
pub fn evaluate<B: Backend>(
    model: &TextClassifier<B>,
    encoded: &EncodedTexts,
    labels: &[u32],
    settings: &EvalSettings,
    device: &B::Device,
) -> ClassificationMetrics {
    assert_eq!(encoded.len(), labels.len(), "one label per encoded text");
    let k = model.config().num_labels();
    let logits = predict_logits(model, encoded, settings, device);
    metrics_from_logits(&logits, labels, k)
}

/// Metrics of row-major `logits` against `labels`.
pub fn metrics_from_logits(logits: &[f32], labels: &[u32], num_classes: usize) -> ClassificationMetrics {
    let predicted = argmax_rows(logits, num_classes);
    let losses = cross_entropy_rows(logits, labels, num_classes);
    let mean = if losses.is_empty() { f64::NAN } else { losses.iter().sum::<f64>() / losses.len() as f64 };
    ClassificationMetrics::new(labels, &predicted, num_classes).with_loss(mean)
}
