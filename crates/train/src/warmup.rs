//! The warm-up stage (`bertlab train --warmup`, the default of the GPU builds): one forward and
//! backward pass at each batch shape the run will meet ([`run_shapes`]: its epochs' batches,
//! drawn ahead from a copy of the batch-order generator, and its evaluation batches), before the
//! first step. A GPU build compiles its kernels at first use and, with autotuning, times every
//! candidate of each matmul and reduction per shape: warming up pays that up front, a line per
//! shape saying so, instead of inside the first epoch (whose timings and progress then mean
//! what they say), and leaves the results in the kernel and autotune caches, where every later
//! run of the same shapes (a pipeline's other runs) finds them. Nothing of the model changes:
//! the gradients are dropped, and each epoch reseeds the RNG that dropout draws from.

use crate::batching::{Batch, BatchArrays};
use crate::load::Fitting;
use crate::predict::eval_batches;
use crate::prepare::Prepared;
use crate::readback::logits_to_vec;
use crate::step::forward_backward;
use bertlab_models::TextClassifier;
use bertlab_run::RunSpec;
use burn::tensor::backend::AutodiffBackend;
use std::time::Instant;

/// The `[rows, length]` shapes the run's remaining epochs and its evaluations will feed the model,
/// sorted: each epoch's batches drawn from a copy of the batch-order generator (the trainer draws
/// the very same ones), and the validation and test batches. A subset of
/// [`RunSpec::planned_shapes`] (and a split smaller than a batch).
pub(crate) fn run_shapes<B: AutodiffBackend>(
    spec: &RunSpec,
    prepared: &Prepared,
    fitting: &Fitting<B>,
) -> Vec<[usize; 2]> {
    let mut rng = fitting.batch_rng.clone();
    let mut shapes: Vec<[usize; 2]> = (fitting.first_epoch..spec.epochs)
        .flat_map(|_| prepared.buckets.epoch(&prepared.train_lengths, &mut rng))
        .chain(eval_batches(&prepared.encoded.val, &prepared.eval))
        .chain(eval_batches(&prepared.encoded.test, &prepared.eval))
        .map(|b: Batch| b.shape())
        .collect();
    shapes.sort_unstable();
    shapes.dedup();
    shapes
}

/// Run `model` forward and backward once at each of `shapes` (rows of `pad_id`, all attended),
/// in `spec`'s precision, waiting for the device after each; says what it does unless `quiet`
/// (and that `warmed` more shapes were warm already, met by earlier runs). Returns the seconds
/// it took.
pub(crate) fn warm_up<B: AutodiffBackend>(
    spec: &RunSpec,
    shapes: &[[usize; 2]],
    warmed: usize,
    model: &TextClassifier<B>,
    pad_id: u32,
    device: &B::Device,
    quiet: bool,
) -> f64 {
    let started = Instant::now();
    if !quiet && warmed > 0 {
        eprintln!(
            "Warm-up: {warmed} of the run's {} batch shapes were met by earlier runs (--warmed-shapes): \
             their kernels are in the caches",
            warmed + shapes.len()
        );
    }
    if shapes.is_empty() {
        return started.elapsed().as_secs_f64();
    }
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
