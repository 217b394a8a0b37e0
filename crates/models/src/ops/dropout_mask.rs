//! Dropout as a hash: a mask is a drop probability and a seed, and element `i` is kept when a
//! hash of `(seed, i)` clears the probability's threshold. Every path (the reference, the CPU
//! kernels, the CubeCL kernels, a backward pass recomputing the forward's mask) derives the same
//! mask from those two numbers, with nothing stored and no device RNG state to keep in step.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// One dropout call: drop probability and the seed its mask is a hash of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutMask {
    prob: f64,
    seed: u64,
}

impl DropoutMask {
    /// A mask dropping each element with probability `prob` (clamped to [0, 1]).
    pub fn new(prob: f64, seed: u64) -> DropoutMask {
        DropoutMask { prob: prob.clamp(0.0, 1.0), seed }
    }

    /// A fresh mask for one dropout call in training, its seed the next of the dropout seed
    /// sequence ([`seed_dropout`] makes a run reproducible; successive calls are independent);
    /// `None` when `prob` is 0 or the backend does not track gradients (inference), as
    /// `burn::nn::Dropout`. Drawn on the host: no read-back from the device.
    pub fn draw<B: Backend>(prob: f64, device: &B::Device) -> Option<DropoutMask> {
        if prob <= 0.0 || !B::ad_enabled(device) {
            return None;
        }
        Some(DropoutMask::new(prob, next_dropout_seed()))
    }

    /// The drop probability.
    pub fn prob(&self) -> f64 {
        self.prob
    }

    /// The seed of the mask's hash.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The multiplier of element `index` (row-major index in the tensor the mask applies to):
    /// 0 for a dropped element, `1/(1−p)` for a kept one.
    pub fn factor(&self, index: u64) -> f32 {
        HashMask::new(*self).factor(index)
    }

    /// The multipliers of a whole tensor, computed on the host (the reference path and tests).
    pub fn factors<B: Backend, const D: usize>(&self, shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n as u64).map(|i| self.factor(i)).collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// The state of the dropout seed sequence: a splitmix64 counter.
static DROPOUT_SEQUENCE: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Restart the sequence the seeds of [`DropoutMask::draw`] come from (process-wide), as
/// `B::seed` restarts a backend's RNG: the trainer calls both at each epoch's start, so a run
/// draws the same masks whatever the backend. The seeds live on the host, so drawing one waits
/// for nothing on the device.
pub fn seed_dropout(seed: u64) {
    DROPOUT_SEQUENCE.store(seed, Ordering::SeqCst);
}

/// The next seed of the sequence: splitmix64 (Steele, Lea and Flood), whose outputs are
/// independent enough for hash seeds.
fn next_dropout_seed() -> u64 {
    let mut z = DROPOUT_SEQUENCE.fetch_add(GOLDEN_GAMMA, Ordering::SeqCst).wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A [`DropoutMask`] prepared for per-element use by kernels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HashMask {
    pub(crate) seed: u64,
    /// An element is dropped when its 32 hash bits are below this.
    pub(crate) threshold: u32,
    /// `1/(1 − p)` for kept elements.
    pub(crate) scale: f32,
    /// `p = 1`: every element dropped.
    pub(crate) drop_all: bool,
}

impl HashMask {
    pub(crate) fn new(mask: DropoutMask) -> HashMask {
        let p = mask.prob;
        HashMask {
            seed: mask.seed,
            threshold: (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32,
            scale: if p >= 1.0 { 0.0 } else { (1.0 / (1.0 - p)) as f32 },
            drop_all: p >= 1.0,
        }
    }

    /// The multiplier of element `index`: 0 (dropped) or `1/(1 − p)`.
    #[inline(always)]
    pub(crate) fn factor(&self, index: u64) -> f32 {
        let kept = !self.drop_all && hash(self.seed, index) >= self.threshold;
        if kept {
            self.scale
        } else {
            0.0
        }
    }
}

/// Two rounds of the `lowbias32` integer hash (Wellons), keyed by both halves of the seed.
/// Bijective in the low 32 index bits for a fixed seed; only 32-bit multiplies, so it
/// vectorises on AVX2 as well as AVX-512.
#[inline(always)]
fn hash(seed: u64, index: u64) -> u32 {
    #[inline(always)]
    fn mix(mut x: u32) -> u32 {
        x ^= x >> 16;
        x = x.wrapping_mul(0x7feb_352d);
        x ^= x >> 15;
        x = x.wrapping_mul(0x846c_a68b);
        x ^= x >> 16;
        x
    }
    let first = mix((index as u32) ^ (seed as u32));
    mix(first ^ (seed >> 32) as u32 ^ ((index >> 32) as u32).wrapping_mul(0x9e37_79b9))
}
