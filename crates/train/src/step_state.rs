//! The loss scale, the overflow verdict, gradient clipping and the step count of a training
//! step, decided on the device.
//!
//! Deciding on the host whether an f16 step overflowed (or how much to clip) means reading the
//! global gradient norm back every step: the host waits for the whole backward pass before it
//! can queue the optimizer, and the GPU idles while it does (≈ 7 ms a step on an H200). Here the
//! norm never leaves the device: the verdict becomes `[1]` tensors that the Adam update
//! multiplies by ([`crate::optim::DeviceFactors`]), a skipped step is an update that changes
//! nothing, and the state (scale, clean steps in a row, steps applied and skipped) stays on the
//! device until the trainer reads it with the logits ([`StepState::read`]), every few dozen steps.
//!
//! Counts are kept as f32, exact up to 2²⁴ (16.7 million) steps.

use crate::loss_scale::DynamicLossScaler;
use crate::optim::{AdamSettings, DeviceFactors, EpsilonForm};
use crate::schedule::LrSchedule;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

/// The step state as read back: what the host mirrors of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCounts {
    /// The loss scale the next step will use.
    pub scale: f64,
    /// Clean steps in a row since the scale last changed.
    pub clean_steps: u64,
    /// Optimizer steps applied (Adam's step count).
    pub applied: u64,
    /// Steps skipped for f16 overflow.
    pub skipped: u64,
    /// Steps skipped in a row, not counting those within the grace steps at the start of
    /// training (where the scale is still settling).
    pub skips_in_row: u64,
}

/// The loss scale and step counts on the device, and the bias corrections of Adam's moments
/// (`1 − βᵗ`, kept by the recurrence `1 − βᵗ⁺¹ = (1 − β) + β·(1 − βᵗ)`, which has no
/// cancellation in f32 where `1 − β^t` computed directly would lose four digits at t = 1).
pub(crate) struct StepState<B: Backend> {
    scale: Tensor<B, 1>,
    clean: Tensor<B, 1>,
    applied: Tensor<B, 1>,
    skipped: Tensor<B, 1>,
    skips_in_row: Tensor<B, 1>,
    bias1: Tensor<B, 1>,
    bias2: Tensor<B, 1>,
    /// The constants that pack the factors, made once for the run's Adam settings.
    basis: FactorBasis<B>,
    /// Those settings.
    adam: AdamSettings,
}

/// `[ADAM_FACTORS]` columns: the packed factors are `constant + Σ column × quantity`
/// ([`StepState::decide`]).
struct FactorBasis<B: Backend> {
    constant: Tensor<B, 1>,
    applies: Tensor<B, 1>,
    multiplier: Tensor<B, 1>,
    multiplier_squared: Tensor<B, 1>,
    sqrt_v_scale: Tensor<B, 1>,
    step_size: Tensor<B, 1>,
    lr: Tensor<B, 1>,
}

impl<B: Backend> FactorBasis<B> {
    fn new(a: &AdamSettings, device: &B::Device) -> FactorBasis<B> {
        debug_assert_eq!(bertlab_models::ops::adam::ADAM_FACTORS, 8);
        let column = |values: [f64; 8]| {
            Tensor::from_data(TensorData::new(values.map(|v| v as f32).to_vec(), [8]), device)
        };
        let one = |i: usize, value: f64| {
            let mut values = [0.0; 8];
            values[i] = value;
            column(values)
        };
        FactorBasis {
            // β₁', β₂', the decay and the skip flag start from 1.
            constant: column([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
            applies: column([a.beta1 - 1.0, 0.0, a.beta2 - 1.0, 0.0, 0.0, 0.0, 0.0, -1.0]),
            multiplier: one(1, 1.0 - a.beta1),
            multiplier_squared: one(3, 1.0 - a.beta2),
            sqrt_v_scale: one(4, 1.0),
            step_size: one(5, 1.0),
            lr: one(6, -a.weight_decay),
        }
    }
}

/// How a step is decided: the scaler's rules, the clip, the optimizer and the schedule.
pub(crate) struct StepRules<'a> {
    pub(crate) scaler: &'a DynamicLossScaler,
    pub(crate) grad_clip: Option<f64>,
    pub(crate) adam: &'a AdamSettings,
    pub(crate) schedule: &'a LrSchedule,
    /// Skips within the first this many attempted steps do not count as skips in a row.
    pub(crate) grace_steps: u64,
}

fn scalar<B: Backend>(value: f64, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(vec![value as f32], [1]), device)
}

/// `if mask { yes } else { no }` on `[1]` tensors.
fn select<B: Backend>(mask: &Tensor<B, 1, Bool>, yes: Tensor<B, 1>, no: Tensor<B, 1>) -> Tensor<B, 1> {
    no.mask_where(mask.clone(), yes)
}

impl<B: Backend> StepState<B> {
    /// The state of `scaler` after `applied` optimizer steps (a new run, or a checkpoint's).
    pub(crate) fn from_host(
        scaler: &DynamicLossScaler,
        applied: u64,
        adam: &AdamSettings,
        device: &B::Device,
    ) -> StepState<B> {
        let t = applied.min(i32::MAX as u64) as i32;
        StepState {
            scale: scalar(scaler.scale(), device),
            clean: scalar(scaler.clean_steps() as f64, device),
            applied: scalar(applied as f64, device),
            skipped: scalar(scaler.skipped_steps() as f64, device),
            skips_in_row: scalar(0.0, device),
            bias1: scalar(1.0 - adam.beta1.powi(t), device),
            bias2: scalar(1.0 - adam.beta2.powi(t), device),
            basis: FactorBasis::new(adam, device),
            adam: *adam,
        }
    }

    /// The loss scale of the next step, on the device.
    pub(crate) fn scale(&self) -> Tensor<B, 1> {
        self.scale.clone()
    }

    /// Read the state back (one transfer: this waits for the steps queued so far).
    pub(crate) fn read(&self) -> StepCounts {
        let all = Tensor::cat(
            vec![
                self.scale.clone(),
                self.clean.clone(),
                self.applied.clone(),
                self.skipped.clone(),
                self.skips_in_row.clone(),
            ],
            0,
        );
        let v = crate::readback::logits_to_vec(all);
        let count = |x: f32| x.max(0.0).round() as u64;
        StepCounts {
            scale: v[0] as f64,
            clean_steps: count(v[1]),
            applied: count(v[2]),
            skipped: count(v[3]),
            skips_in_row: count(v[4]),
        }
    }

    /// Decide the step whose scaled gradients have `sq_norm` (Σ‖g‖² of the loss-scaled
    /// gradients): whether it applies, by how much each gradient is multiplied (unscaling and
    /// clipping), the learning rate and Adam's bias corrections; advance the state. Nothing is
    /// read back.
    pub(crate) fn decide(&mut self, sq_norm: Tensor<B, 1>, rules: &StepRules) -> DeviceFactors<B> {
        let device = sq_norm.device();
        assert_eq!(*rules.adam, self.adam, "a step decided with other Adam settings than the state's");
        let dynamic = rules.scaler.is_dynamic();
        // Without a dynamic scale every step applies, as on the host path: a non-finite
        // gradient there is not an overflow to recover from, and the trainer reports the loss.
        // 1 or 0 (the seam's one kernel on a GPU; Burn's `is_finite` and `bool_not` took a
        // launch an op), the masks compared from it in float ops that fuse.
        let applies = if dynamic {
            bertlab_models::ops::finite_flag(sq_norm.clone())
        } else {
            Tensor::<B, 1>::ones([1], &device)
        };
        let finite = applies.clone().greater_elem(0.5);
        let skip = applies.clone().lower_elem(0.5);
        let norm = sq_norm.sqrt() / self.scale.clone();
        let mut multiplier = self.scale.clone().recip();
        if let Some(max_norm) = rules.grad_clip {
            // torch.nn.utils.clip_grad_norm_'s factor, min(1, max_norm / (norm + 1e-6)).
            let clip = (norm + 1e-6).recip().mul_scalar(max_norm).clamp_max(1.0);
            multiplier = multiplier * clip;
        }
        // 0 on a skipped step, whose norm (and so the multiplier) may be NaN.
        let multiplier = multiplier.mask_fill(skip.clone(), 0.0);

        let lr = rules.schedule.lr_on_device(self.applied.clone());
        let a = rules.adam;
        // The corrections of the step if it applies: on a skipped step the old ones may be
        // 0 (no step yet), and the factors below must stay finite to be zeroed.
        let bias1 = self.bias1.clone().mul_scalar(a.beta1).add_scalar(1.0 - a.beta1);
        let bias2 = self.bias2.clone().mul_scalar(a.beta2).add_scalar(1.0 - a.beta2);
        let (step_size, sqrt_v_scale) = match a.epsilon_form {
            EpsilonForm::BiasCorrected => (lr.clone() / bias1.clone(), bias2.clone().sqrt().recip()),
            EpsilonForm::Hat => {
                (lr.clone() * bias2.clone().sqrt() / bias1.clone(), Tensor::ones([1], &device))
            }
        };
        // Packed by broadcasting each `[1]` quantity against a constant `[8]` column of the
        // basis: one fused chain, where concatenating eight `[1]` tensors took a launch each.
        // Every element has one non-zero term beside the constant, so each factor is the same
        // f32 arithmetic as computed alone: β₁' = 1 + applies·(β₁ − 1), g₁' = multiplier·(1 −
        // β₁), β₂', g₂' = multiplier²·(1 − β₂), the √v scale, the step size × applies, decay =
        // 1 + lr·applies·(−weight decay), skip = 1 − applies (0 without a dynamic scale, where
        // every step applies).
        let basis = &self.basis;
        let packed = basis.constant.clone()
            + basis.applies.clone() * applies.clone()
            + basis.multiplier.clone() * multiplier.clone()
            + basis.multiplier_squared.clone() * multiplier.clone().square()
            + basis.sqrt_v_scale.clone() * sqrt_v_scale
            + basis.step_size.clone() * (step_size * applies.clone())
            + basis.lr.clone() * (lr * applies.clone());
        let factors = DeviceFactors::from_packed(packed);

        let attempts = self.applied.clone() + self.skipped.clone();
        if dynamic {
            let s = rules.scaler;
            let clean = (self.clean.clone() + 1.0) * applies.clone();
            let grow = clean.clone().greater_equal_elem(s.growth_interval() as f64);
            let grown = select(
                &grow,
                self.scale.clone().mul_scalar(2.0).clamp_max(2f64.powi(64)),
                self.scale.clone(),
            );
            self.scale = select(&finite, grown, self.scale.clone().mul_scalar(0.5).clamp_min(1.0));
            self.clean = clean.mask_fill(grow, 0.0);
            let counted = attempts.greater_equal_elem(rules.grace_steps as f64).float();
            self.skips_in_row = (self.skips_in_row.clone() + counted) * (applies.clone().neg() + 1.0);
            self.skipped = self.skipped.clone() + (applies.clone().neg() + 1.0);
        }
        self.applied = self.applied.clone() + applies;
        self.bias1 = select(&finite, bias1, self.bias1.clone());
        self.bias2 = select(&finite, bias2, self.bias2.clone());
        factors
    }
}
