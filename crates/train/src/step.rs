//! One optimizer step of fine-tuning: forward and backward of its micro-batches (gradient
//! accumulation), the f16 overflow check and clipping on the global gradient norm, and the
//! Adam/AdamW update — the step `fit` takes, and the one the benchmarks time.
//!
//! A step never waits for the device: with a dynamic loss scale (f16) or clipping, the verdict
//! on the gradient norm is taken on the device ([`crate::step_state`]), and what it decided
//! (steps applied and skipped, the scale) is read back by [`TrainStep::settle`], which the
//! trainer calls when it reads the logits. A backend with a multi-tensor AdamW kernel (the GPU
//! builds) takes that path at every precision, so its update is a few launches.

use crate::batching::BatchArrays;
use crate::loss_scale::{DynamicLossScaler, SKIP_GRACE_STEPS};
use crate::optim::{grad_sq_norm, Adam, AdamSettings};
use crate::predict::batch_tensors;
use crate::readback::logits_to_vec;
use crate::schedule::LrSchedule;
use crate::step_state::{StepCounts, StepRules, StepState};
use bertlab_models::{autodiff_lock, host_wait, Precision, TextClassifier};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;
use std::time::Instant;

/// Seconds spent in each phase of the steps timed with a [`PhaseTimes`] (the device is synced
/// after each phase, so timed steps are slower than untimed ones: use them to see where the
/// time goes, not to measure throughput).
#[derive(Debug, Default, Clone, Serialize)]
pub struct PhaseTimes {
    /// Packing the batch on the host and copying ids and mask to the device.
    pub upload: f64,
    /// The forward pass.
    pub forward: f64,
    /// Reading the logits back to the host.
    pub readback: f64,
    /// Loss and backward pass.
    pub backward: f64,
    /// Global gradient norm and the step's verdict on it (f16 overflow check and clipping),
    /// on the device.
    pub grad_norm: f64,
    /// The Adam/AdamW update of every parameter.
    pub optimizer: f64,
}

/// What one optimizer step did.
pub struct StepOutcome<B: Backend> {
    /// Each micro-batch's logits (`[rows, classes]`, f32, its filler rows included: the
    /// labelled rows come first), still on the device, in order.
    pub logits: Vec<Tensor<B, 2>>,
    /// The learning rate of the step: exact when no step has been skipped since the last
    /// [`TrainStep::settle`] (the device holds the count the schedule follows).
    pub lr: f64,
}

/// A model with its optimizer, loss scale and learning-rate schedule, stepped one optimizer
/// step at a time.
pub struct TrainStep<B: AutodiffBackend> {
    // Adam's update takes the module by value and returns the updated one.
    model: Option<TextClassifier<B>>,
    optimizer: Adam<B>,
    scaler: DynamicLossScaler,
    schedule: LrSchedule,
    grad_clip: Option<f64>,
    precision: Precision,
    /// The loss scale and step counts on the device (with a dynamic scale or clipping), made
    /// from `scaler` and the optimizer's count at the first step.
    state: Option<StepState<B::InnerBackend>>,
    /// Steps taken since the state was last read back.
    unsettled: u64,
}

impl<B: AutodiffBackend> TrainStep<B> {
    /// Steps of `model` with `optimizer`, `schedule`, an optional global-norm clip, in
    /// `precision` (f16 gets dynamic loss scaling; f32 and bf16 need none).
    pub fn new(
        model: TextClassifier<B>,
        optimizer: AdamSettings,
        schedule: LrSchedule,
        grad_clip: Option<f64>,
        precision: Precision,
    ) -> TrainStep<B> {
        let optimizer = Adam::new(optimizer, &model);
        let scaler = if precision == Precision::F16 {
            DynamicLossScaler::f16()
        } else {
            DynamicLossScaler::disabled()
        };
        TrainStep {
            model: Some(model),
            optimizer,
            scaler,
            schedule,
            grad_clip,
            precision,
            state: None,
            unsettled: 0,
        }
    }

    /// The model as it is now.
    pub fn model(&self) -> &TextClassifier<B> {
        self.model.as_ref().expect("a TrainStep always holds its model")
    }

    /// The model, ending the training.
    pub fn into_model(self) -> TextClassifier<B> {
        self.model.expect("a TrainStep always holds its model")
    }

    /// The optimizer (its state: moments and step count).
    pub fn optimizer(&self) -> &Adam<B> {
        &self.optimizer
    }

    /// The loss scaler (its scale and overflow count) as of the last [`TrainStep::settle`].
    pub fn scaler(&self) -> &DynamicLossScaler {
        &self.scaler
    }

    /// Whether a step has a verdict to take on the gradient norm: with a dynamic loss scale
    /// (overflow) or a clip. Otherwise every step applies with the gradients as they are.
    fn needs_verdict(&self) -> bool {
        self.scaler.is_dynamic() || self.grad_clip.is_some()
    }

    /// Whether the step's factors are decided on the device and the update runs through
    /// [`Adam::step_on_device`]: where there is a verdict to take, and on every backend whose
    /// AdamW is a multi-tensor kernel (the GPU builds), where the host path's update, a chain
    /// of ops a parameter, would cost ~100 launches a step and a cast a parameter a forward
    /// (the kernel also writes the product-dtype copy of each weight). The CPU build at f32
    /// and bf16 without a clip keeps the host path: its factors are scalars there.
    fn decides_on_device(&self) -> bool {
        self.needs_verdict() || bertlab_models::ops::adam_is_multi_tensor::<B::InnerBackend>()
    }

    /// Read back what the device decided since the last call (steps applied and skipped, the
    /// loss scale) and mirror it in [`TrainStep::scaler`] and [`TrainStep::optimizer`]. This
    /// waits for the steps queued so far; without device-side decisions it reads nothing.
    pub fn settle(&mut self) -> StepCounts {
        self.unsettled = 0;
        let Some(state) = &self.state else {
            return StepCounts {
                scale: self.scaler.scale(),
                clean_steps: self.scaler.clean_steps() as u64,
                applied: self.optimizer.steps(),
                skipped: self.scaler.skipped_steps(),
                skips_in_row: 0,
            };
        };
        let counts = state.read();
        self.scaler.settle(counts.scale, counts.clean_steps, counts.skipped);
        self.optimizer.set_steps(counts.applied);
        counts
    }

    /// Put back a checkpoint's optimizer state (step count and moments) and loss scale.
    pub fn restore(
        &mut self,
        steps: u64,
        moments: Vec<crate::optim::MomentState>,
        scaler: DynamicLossScaler,
        device: &B::Device,
    ) -> Result<(), String> {
        let model = self.model.as_ref().expect("a TrainStep always holds its model");
        self.optimizer.restore(model, steps, moments, device)?;
        self.scaler = scaler;
        // Made again from the restored scale and step count at the next step.
        self.state = None;
        self.unsettled = 0;
        Ok(())
    }

    /// The learning rate the next step will use (exact when no step has been skipped since the
    /// last [`TrainStep::settle`]).
    pub fn next_lr(&self) -> f64 {
        self.schedule.lr(self.optimizer.steps() + self.unsettled)
    }

    /// One optimizer step over `micro_batches` (ids, mask and labels each); their gradients are
    /// accumulated so that the step equals one over all their rows. With `timer`, the device is
    /// synced between phases and each phase's seconds are added to it.
    pub fn step(
        &mut self,
        micro_batches: &[(&BatchArrays, &[u32])],
        device: &B::Device,
        mut timer: Option<&mut PhaseTimes>,
    ) -> StepOutcome<B::InnerBackend> {
        let rows: usize = micro_batches.iter().map(|(_, labels)| labels.len()).sum();
        let lr = self.next_lr();
        let model = self.model.take().expect("a TrainStep always holds its model");
        let on_device = self.decides_on_device();
        let needs_verdict = self.needs_verdict();
        let state = on_device.then(|| {
            let settings = *self.optimizer.settings();
            let applied = self.optimizer.steps();
            let scaler = &self.scaler;
            &mut *self.state.get_or_insert_with(|| {
                StepState::from_host(scaler, applied, &settings, &device_of::<B>(device))
            })
        });
        let scale = state.as_ref().map(|s| s.scale());
        let mut accumulator = GradientsAccumulator::<TextClassifier<B>>::new();
        let mut single: Option<GradientsParams> = None;
        let mut logits = Vec::with_capacity(micro_batches.len());
        for &(arrays, labels) in micro_batches {
            // Each micro-batch's loss is its share of the step's mean, so the accumulated
            // gradient equals the gradient of the whole step's batch.
            let weight = LossWeight { per_row: 1.0 / rows as f64, scale: scale.clone() };
            let (grads, l) = forward_backward_timed(
                &model,
                arrays,
                labels,
                weight,
                self.precision,
                device,
                timer.as_deref_mut(),
            );
            logits.push(l);
            if micro_batches.len() == 1 {
                single = Some(grads);
            } else {
                accumulator.accumulate(&model, grads);
            }
        }
        let grads = single.unwrap_or_else(|| accumulator.grads());
        let Some(state) = state else {
            let t = Instant::now();
            let model = self.optimizer.step(lr, model, grads, 1.0);
            if let Some(timer) = timer {
                host_wait::sync::<B>(device);
                timer.optimizer += t.elapsed().as_secs_f64();
            }
            self.model = Some(model);
            return StepOutcome { logits, lr };
        };
        let t = Instant::now();
        // The norm only matters to a verdict; without one the device decides from the step
        // count and the schedule alone.
        let sq_norm = needs_verdict
            .then(|| grad_sq_norm::<B, _>(&model, &grads))
            .flatten()
            .unwrap_or_else(|| Tensor::zeros([1], &device_of::<B>(device)));
        let rules = StepRules {
            scaler: &self.scaler,
            grad_clip: self.grad_clip,
            adam: self.optimizer.settings(),
            schedule: &self.schedule,
            grace_steps: SKIP_GRACE_STEPS,
        };
        let factors = state.decide(sq_norm, &rules);
        if let Some(timer) = timer.as_deref_mut() {
            host_wait::sync::<B>(device);
            timer.grad_norm += t.elapsed().as_secs_f64();
        }
        let t = Instant::now();
        let model = self.optimizer.step_on_device(model, grads, &factors);
        if let Some(timer) = timer {
            host_wait::sync::<B>(device);
            timer.optimizer += t.elapsed().as_secs_f64();
        }
        self.unsettled += 1;
        self.model = Some(model);
        StepOutcome { logits, lr }
    }
}

/// The inner backend's handle of `device` (the same device).
fn device_of<B: AutodiffBackend>(device: &B::Device) -> burn::tensor::Device<B::InnerBackend> {
    device.clone()
}

/// What a micro-batch's summed cross-entropy is multiplied by: its share of the step's mean
/// (`per_row`), times the loss scale when there is one (a `[1]` tensor on the device, so that
/// the scale the device decided needs no read).
struct LossWeight<B: Backend> {
    /// 1 / the rows of the whole step.
    per_row: f64,
    /// The loss scale, on the device.
    scale: Option<Tensor<B, 1>>,
}

/// Σ cross-entropy of `logits` (`[rows, classes]`) against `labels`, times `weight`: the
/// training loss whose gradient a micro-batch contributes. Computed as
/// `−weight × Σ log_softmax(logits) ⊙ targets`, where `targets` is the one-hot `[rows,
/// classes]` matrix of the labels: one upload, and an element-wise product the backward fuses
/// (a gather would need its index tensor uploaded and a scatter in the backward). Rows past the
/// labels are filler ([`crate::Batch::filler`]): their row of `targets` is all 0, so that a
/// filled batch runs the same kernels as a full one (a slice would be a batch of another shape
/// to the loss's reductions: kernels compiled for it alone), and their gradient is exactly 0,
/// as a slice's would be.
pub fn weighted_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: &[u32],
    weight: f64,
    device: &B::Device,
) -> Tensor<B, 1> {
    let [rows, classes] = logits.dims();
    assert!(labels.len() <= rows, "{} labels for {rows} rows of logits", labels.len());
    let mut targets = vec![0f32; rows * classes];
    for (r, &label) in labels.iter().enumerate() {
        let label = label as usize;
        assert!(label < classes, "label {label} of row {r} for {classes} classes");
        targets[r * classes + label] = 1.0;
    }
    let targets = Tensor::<B, 2>::from_data(TensorData::new(targets, [rows, classes]), device);
    (log_softmax(logits, 1) * targets).sum().mul_scalar(-weight)
}

/// Forward and backward of one micro-batch: gradients of `weight × Σ cross-entropy` over its
/// labelled rows, and their logits (`[rows, classes]`, f32, filler rows included), still on
/// the device. Rows of `arrays` past the labels are filler ([`crate::Batch::filler`]) and
/// count for nothing.
///
/// Nothing here waits for the device: read the logits when they are needed, preferably many
/// batches at once ([`crate::PendingLogits`]), so that the host keeps queueing work.
pub fn forward_backward<B: AutodiffBackend>(
    model: &TextClassifier<B>,
    arrays: &BatchArrays,
    labels: &[u32],
    weight: f64,
    precision: Precision,
    device: &B::Device,
) -> (GradientsParams, Tensor<B::InnerBackend, 2>) {
    forward_backward_timed(
        model,
        arrays,
        labels,
        LossWeight { per_row: weight, scale: None },
        precision,
        device,
        None,
    )
}

/// [`forward_backward`], with `timer`: a device sync and a timer between its phases (upload,
/// forward, logits read back, backward).
fn forward_backward_timed<B: AutodiffBackend>(
    model: &TextClassifier<B>,
    arrays: &BatchArrays,
    labels: &[u32],
    weight: LossWeight<B::InnerBackend>,
    precision: Precision,
    device: &B::Device,
    mut timer: Option<&mut PhaseTimes>,
) -> (GradientsParams, Tensor<B::InnerBackend, 2>) {
    // Only a timed step waits for the device between phases and reads the logits back.
    let timed = timer.is_some();
    let mut phase = |t: Instant, slot: fn(&mut PhaseTimes) -> &mut f64| {
        if let Some(timer) = timer.as_deref_mut() {
            host_wait::sync::<B>(device);
            *slot(timer) += t.elapsed().as_secs_f64();
        }
    };
    let t = Instant::now();
    let (ids, mask) = batch_tensors::<B>(arrays, device);
    phase(t, |p| &mut p.upload);
    // From the graph's first op to the end of its backward: another thread's backward must not
    // reclaim this graph's steps (see `autodiff_lock`).
    let _graph_turn = autodiff_lock::lock();
    let t = Instant::now();
    // [batch, classes], f32. Rows after the labelled ones are filler (a partial batch filled to
    // the batch size): out of the loss, so out of the gradients; whoever reads the logits
    // drops them (`PendingLogits::push` keeps the labelled rows).
    let logits = model.forward(ids, mask, precision);
    assert!(labels.len() <= arrays.rows, "{} labels for a batch of {} rows", labels.len(), arrays.rows);
    phase(t, |p| &mut p.forward);
    let kept = logits.clone().detach().inner();
    let t = Instant::now();
    if timed {
        let _ = logits_to_vec(kept.clone());
    }
    phase(t, |p| &mut p.readback);
    let t = Instant::now();
    let mut loss = weighted_cross_entropy(logits, labels, weight.per_row, device);
    if let Some(scale) = weight.scale {
        // A constant of the graph: no gradient flows into the scale.
        loss = loss.mul(Tensor::from_inner(scale));
    }
    let grads = GradientsParams::from_grads(loss.backward(), model);
    phase(t, |p| &mut p.backward);
    (grads, kept)
}
