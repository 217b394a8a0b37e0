//! Learning-rate schedules: constant (the notebook) or linear decay with warmup (HF's
//! `get_linear_schedule_with_warmup`).

pub use bertlab_run::Schedule;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// A schedule bound to a run: peak rate, total steps and warmup steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Curve.
    pub kind: Schedule,
    /// Peak learning rate.
    pub peak: f64,
    /// Optimizer steps of the whole run.
    pub total_steps: u64,
    /// Steps of linear warmup: `ceil(warmup_ratio × total_steps)`, as HF's `get_warmup_steps`.
    pub warmup_steps: u64,
}

impl LrSchedule {
    /// Bind `kind` to a run of `total_steps` optimizer steps.
    pub fn new(kind: Schedule, peak: f64, total_steps: u64, warmup_ratio: f64) -> LrSchedule {
        let warmup_steps = match kind {
            Schedule::Constant => 0,
            Schedule::Linear => (warmup_ratio.max(0.0) * total_steps as f64).ceil() as u64,
        };
        LrSchedule { kind, peak, total_steps, warmup_steps }
    }

    /// The rate of optimizer step `step` (0-based). HF's lambda: `step / warmup` while warming
    /// up (so the very first step has rate 0 when there is warmup), then
    /// `(total − step) / (total − warmup)`, never below 0.
    pub fn lr(&self, step: u64) -> f64 {
        match self.kind {
            Schedule::Constant => self.peak,
            Schedule::Linear => {
                if step < self.warmup_steps {
                    return self.peak * step as f64 / self.warmup_steps.max(1) as f64;
                }
                let remaining = self.total_steps.saturating_sub(step) as f64;
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                self.peak * (remaining / span).max(0.0)
            }
        }
    }
}

impl LrSchedule {
    /// [`LrSchedule::lr`] of the step count `step` held on the device (a `[1]` f32 tensor), so
    /// that a step whose count only the device knows ([`crate::step_state`]) needs no read.
    pub fn lr_on_device<B: Backend>(&self, step: Tensor<B, 1>) -> Tensor<B, 1> {
        match self.kind {
            Schedule::Constant => step.zeros_like().add_scalar(self.peak),
            Schedule::Linear => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let decaying = step
                    .clone()
                    .neg()
                    .add_scalar(self.total_steps as f64)
                    .mul_scalar(self.peak / span)
                    .clamp_min(0.0);
                if self.warmup_steps == 0 {
                    return decaying;
                }
                let warming = step.clone().mul_scalar(self.peak / self.warmup_steps as f64);
                decaying.mask_where(step.lower_elem(self.warmup_steps as f64), warming)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_is_constant() {
        let s = LrSchedule::new(Schedule::Constant, 1e-5, 100, 0.1);
        assert_eq!(s.warmup_steps, 0);
        assert_eq!(s.lr(0), 1e-5);
        assert_eq!(s.lr(99), 1e-5);
    }

    #[test]
    fn linear_with_warmup_matches_hf() {
        // transformers.get_linear_schedule_with_warmup(opt, 3, 10) with lr 1.0 gives, per step:
        // 0, 1/3, 2/3, 1, 6/7, 5/7, 4/7, 3/7, 2/7, 1/7.
        let s = LrSchedule::new(Schedule::Linear, 1.0, 10, 0.25);
        assert_eq!(s.warmup_steps, 3); // ceil(2.5)
        let want = [
            0.0,
            1.0 / 3.0,
            2.0 / 3.0,
            1.0,
            6.0 / 7.0,
            5.0 / 7.0,
            4.0 / 7.0,
            3.0 / 7.0,
            2.0 / 7.0,
            1.0 / 7.0,
        ];
        for (step, w) in want.iter().enumerate() {
            assert!((s.lr(step as u64) - w).abs() < 1e-12, "step {step}: {} vs {w}", s.lr(step as u64));
        }
        assert_eq!(s.lr(10), 0.0);
        assert_eq!(s.lr(50), 0.0);
    }

    #[test]
    fn linear_without_warmup_starts_at_peak() {
        let s = LrSchedule::new(Schedule::Linear, 2.0, 4, 0.0);
        assert_eq!([s.lr(0), s.lr(1), s.lr(2), s.lr(3)], [2.0, 1.5, 1.0, 0.5]);
    }
}
