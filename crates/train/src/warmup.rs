//! The warm-up stage (`bertlab train --warmup`, the default of the GPU builds): one forward and
//! backward pass at each batch shape the run plans ([`RunSpec::planned_shapes`]), before the
//! first step. A GPU build compiles its kernels at first use and, with autotuning, times every
//! candidate of each matmul and reduction per shape: warming up pays that up front, a line per
//! shape saying so, instead of inside the first epoch (whose timings and progress then mean
//! what they say), and leaves the results in the kernel and autotune caches, where every later
//! run of the same shapes (a pipeline's other runs) finds them. Nothing of the model changes:
//! the gradients are dropped, and each epoch reseeds the RNG that dropout draws from.

use crate::batching::BatchArrays;
use crate::readback::logits_to_vec;
use crate::step::forward_backward;
use bertlab_models::TextClassifier;
use bertlab_run::RunSpec;
use burn::tensor::backend::AutodiffBackend;
use std::time::Instant;

/// Run `model` forward and backward once at each of `spec`'s planned shapes (rows of `pad_id`,
/// all attended), waiting for the device after each; says what it does unless `quiet`.
/// Returns the seconds it took.
pub(crate) fn warm_up<B: AutodiffBackend>(
    spec: &RunSpec,
    model: &TextClassifier<B>,
    pad_id: u32,
    device: &B::Device,
    quiet: bool,
) -> f64 {
    let shapes = spec.planned_shapes();
    let started = Instant::now();
    for (i, &[rows, len]) in shapes.iter().enumerate() {
        if !quiet {
            eprintln!(
                "Warming up: batch shape {}/{} ({rows} × {len}): compiling and tuning its kernels",
                i + 1,
                shapes.len()
            );
        }
        let arrays = BatchArrays {
            input_ids: vec![i64::from(pad_id); rows * len],
            attention_mask: vec![1; rows * len],
            rows,
            len,
        };
        let labels = vec![0u32; rows];
        let (grads, logits) =
            forward_backward(model, &arrays, &labels, 1.0 / rows as f64, spec.precision, device);
        drop(grads);
        // Reading the logits waits for the forward; the sync, for the backward's kernels.
        let _ = logits_to_vec(logits);
        B::sync(device).ok();
    }
    let seconds = started.elapsed().as_secs_f64();
    if !quiet {
        eprintln!("Warmed up {} batch shapes in {seconds:.1} s", shapes.len());
    }
    seconds
}
