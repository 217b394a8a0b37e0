//! Dynamic loss scaling for f16 training (the scheme of PyTorch's `GradScaler` and Keras'
//! `LossScaleOptimizer`).
//!
//! f16 gradients of small losses underflow to zero. The loss is multiplied by a large scale
//! before the backward pass and the gradients are divided by it before the optimizer step. When
//! any gradient overflows (inf or NaN) the step is skipped and the scale halved; after
//! `growth_interval` clean steps in a row it doubles.

/// Optimizer steps at the start of a run in which f16 overflow skips are expected while the
/// loss scale settles (from 2^16 it halves once per overflow): they count neither as skips in a
/// row nor against the epoch.
pub const SKIP_GRACE_STEPS: u64 = 10;

/// What to do with the gradients of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDecision {
    /// Gradients are finite: apply the optimizer step.
    Step,
    /// Gradients overflowed: skip the step (the scale was halved).
    Skip,
}

/// The loss scale of a run; a fixed scale of 1 for f32 and bf16. Serialisable: a run's
/// checkpoint resumes it exactly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DynamicLossScaler {
    scale: f64,
    growth_interval: u32,
    clean_steps: u32,
    skipped: u64,
    dynamic: bool,
}

impl DynamicLossScaler {
    /// Initial scale 2^16, halved on overflow, doubled after 2000 clean steps.
    pub fn f16() -> DynamicLossScaler {
        DynamicLossScaler::new(65536.0, 2000)
    }

    /// A scaler with a custom initial scale and growth interval.
    pub fn new(initial_scale: f64, growth_interval: u32) -> DynamicLossScaler {
        DynamicLossScaler { scale: initial_scale, growth_interval, clean_steps: 0, skipped: 0, dynamic: true }
    }

    /// No scaling (scale 1): f32 and bf16 (whose exponent range is f32's).
    pub fn disabled() -> DynamicLossScaler {
        DynamicLossScaler {
            scale: 1.0,
            growth_interval: u32::MAX,
            clean_steps: 0,
            skipped: 0,
            dynamic: false,
        }
    }

    /// The current scale to multiply the loss by.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Whether this scaler ever changes the scale.
    pub fn is_dynamic(&self) -> bool {
        self.dynamic
    }

    /// Steps skipped so far because of overflow.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// Clean steps in a row since the scale last changed.
    pub fn clean_steps(&self) -> u32 {
        self.clean_steps
    }

    /// Clean steps in a row after which the scale doubles.
    pub fn growth_interval(&self) -> u32 {
        self.growth_interval
    }

    /// Take the scale, clean steps in a row and steps skipped decided on the device (see
    /// `step_state`) as this scaler's.
    pub(crate) fn settle(&mut self, scale: f64, clean_steps: u64, skipped: u64) {
        if self.dynamic {
            self.scale = scale;
            self.clean_steps = clean_steps.min(u32::MAX as u64) as u32;
            self.skipped = skipped;
        }
    }

    /// Report whether the gradients of the step just computed were all finite.
    pub fn update(&mut self, grads_finite: bool) -> ScaleDecision {
        if !self.dynamic {
            // Without scaling a non-finite gradient is not an overflow to recover from: the
            // trainer reports it (NaN loss) instead of silently skipping.
            return ScaleDecision::Step;
        }
        if grads_finite {
            self.clean_steps += 1;
            if self.clean_steps >= self.growth_interval {
                self.clean_steps = 0;
                // Stay finite in f32 (the scaled loss is f32): 2^64 is plenty.
                self.scale = (self.scale * 2.0).min(2f64.powi(64));
            }
            ScaleDecision::Step
        } else {
            self.clean_steps = 0;
            self.skipped += 1;
            // Never below 1: at that point the overflow is not the scale's doing.
            self.scale = (self.scale / 2.0).max(1.0);
            ScaleDecision::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_and_skips_on_overflow() {
        let mut s = DynamicLossScaler::f16();
        assert_eq!(s.scale(), 65536.0);
        assert_eq!(s.update(false), ScaleDecision::Skip);
        assert_eq!(s.scale(), 32768.0);
        assert_eq!(s.update(false), ScaleDecision::Skip);
        assert_eq!(s.scale(), 16384.0);
        assert_eq!(s.skipped_steps(), 2);
        assert_eq!(s.update(true), ScaleDecision::Step);
        assert_eq!(s.scale(), 16384.0);
    }

    #[test]
    fn grows_after_interval_of_clean_steps() {
        let mut s = DynamicLossScaler::f16();
        for _ in 0..1999 {
            assert_eq!(s.update(true), ScaleDecision::Step);
        }
        assert_eq!(s.scale(), 65536.0);
        s.update(true);
        assert_eq!(s.scale(), 131072.0);
        // An overflow resets the clean-step count.
        for _ in 0..1000 {
            s.update(true);
        }
        s.update(false);
        assert_eq!(s.scale(), 65536.0);
        for _ in 0..1999 {
            s.update(true);
        }
        assert_eq!(s.scale(), 65536.0);
        s.update(true);
        assert_eq!(s.scale(), 131072.0);
    }

    #[test]
    fn small_interval_and_floor() {
        let mut s = DynamicLossScaler::new(2.0, 3);
        s.update(false);
        s.update(false);
        assert_eq!(s.scale(), 1.0);
        for _ in 0..3 {
            s.update(true);
        }
        assert_eq!(s.scale(), 2.0);
    }

    #[test]
    fn disabled_never_skips() {
        let mut s = DynamicLossScaler::disabled();
        assert_eq!(s.update(false), ScaleDecision::Step);
        assert_eq!(s.scale(), 1.0);
        assert_eq!(s.skipped_steps(), 0);
        assert!(!s.is_dynamic());
    }
}
