//! The one way bertlab's training path waits for the device, counted.
//!
//! Reading a tensor back to the host (and `Backend::sync`) waits for every kernel queued
//! before it: on a GPU the queue drains and the device idles while the host prepares the next
//! work. Issue 24's goal is no such wait in a steady-state training step, so the waits must be
//! countable. CubeCL 0.10 logs kernel launches and compilations but neither read-backs nor
//! syncs, and Burn has no hook for them either, so bertlab counts them itself: every read-back
//! and sync of a training step goes through [`read`] or [`sync`] (the step state the trainer
//! settles with the logits, the logits `PendingLogits` reads, the timed step's phase syncs), and [`count`] is how many there have been in this process.
//! `bertlab bench step-profile` reports the count per step.
//!
//! What this does not see: waits inside Burn or CubeCL themselves (autotuning times its
//! candidates, which happens on a shape's first steps, not in the steady state) and reads
//! outside the step (checkpoints, exports, the end-of-epoch sync), which do not go through
//! here.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::{BasicOps, Tensor, TensorData};

static WAITS: AtomicU64 = AtomicU64::new(0);

/// Device→host waits through [`read`] and [`sync`] since the process started.
pub fn count() -> u64 {
    WAITS.load(Ordering::Relaxed)
}

/// Read `tensor` back to the host (one wait for the device), counted.
pub fn read<B: Backend, const D: usize, K: BasicOps<B>>(tensor: Tensor<B, D, K>) -> TensorData {
    WAITS.fetch_add(1, Ordering::Relaxed);
    tensor.into_data()
}

/// Wait until the device has run everything queued on `device`, counted.
pub fn sync<B: Backend>(device: &B::Device) {
    WAITS.fetch_add(1, Ordering::Relaxed);
    // A failed sync surfaces at the next read-back, which the callers check.
    B::sync(device).ok();
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Int;

    #[test]
    fn reads_and_syncs_are_counted() {
        let device = Default::default();
        let before = count();
        let t = Tensor::<Flex, 1>::from_floats([1.0, 2.0], &device);
        assert_eq!(read(t).to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
        let ids = Tensor::<Flex, 1, Int>::from_ints([3, 4], &device);
        assert_eq!(read(ids).iter::<i64>().collect::<Vec<_>>(), vec![3, 4]);
        sync::<Flex>(&device);
        // (other tests of this crate may read concurrently: at least these three)
        assert!(count() >= before + 3);
    }
}
