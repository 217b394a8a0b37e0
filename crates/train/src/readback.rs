//! Logits kept on the device until a batch of them can be read back in one transfer.
//!
//! Reading a tensor back to the host waits for every kernel queued before it. A training loop
//! that reads each step's logits (for its running loss and accuracy) therefore drains the GPU's
//! queue once per step, and the GPU idles while the host queues the next step. Gathering the
//! logits here and reading them every few dozen batches (or every fraction of a second, so a
//! progress bar stays live) lets the host queue ahead; on a CPU backend, where each step takes
//! longer than the wait, it reads after every batch as before.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use std::time::{Duration, Instant};

/// Row-major `[rows, classes]` logits tensors, each with a caller's tag (its labels, its step),
/// waiting to be read back together.
pub struct PendingLogits<B: Backend, T> {
    tensors: Vec<Tensor<B, 2>>,
    /// Each tensor's tag, its rows and how many of them (the first) are kept.
    tags: Vec<(T, usize, usize)>,
    max_batches: usize,
    max_wait: Duration,
    oldest: Option<Instant>,
}

impl<B: Backend, T> PendingLogits<B, T> {
    /// A queue that is [`due`](Self::due) once it holds `max_batches` tensors or its oldest
    /// tensor has waited `max_wait`.
    pub fn new(max_batches: usize, max_wait: Duration) -> Self {
        PendingLogits {
            tensors: Vec::new(),
            tags: Vec::new(),
            max_batches: max_batches.max(1),
            max_wait,
            oldest: None,
        }
    }

    /// The training loop's policy: read every 64 batches, or once the oldest has waited 0.5 s
    /// (which keeps a progress bar live on a fast GPU).
    pub fn for_training() -> Self {
        Self::new(64, Duration::from_millis(500))
    }

    /// Queue one batch's logits (`[rows, classes]`, any float dtype) whose first `kept` rows
    /// are read back: the rest are filler ([`crate::Batch::filler`]), dropped on the host
    /// rather than sliced off on the device (a kernel of its own, for one batch a split).
    pub fn push(&mut self, logits: Tensor<B, 2>, kept: usize, tag: T) {
        let rows = logits.dims()[0];
        assert!(kept <= rows, "{kept} rows kept of a batch of {rows}");
        self.oldest.get_or_insert_with(Instant::now);
        self.tensors.push(logits);
        self.tags.push((tag, rows, kept));
    }

    /// Whether the queue should be read now.
    pub fn due(&self) -> bool {
        self.tensors.len() >= self.max_batches || self.oldest.is_some_and(|t| t.elapsed() >= self.max_wait)
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Read every waiting tensor back in one transfer; returns each batch's tag and the f32
    /// logits of its kept rows (row-major), in the order they were pushed.
    pub fn take(&mut self) -> Vec<(T, Vec<f32>)> {
        self.oldest = None;
        if self.tensors.is_empty() {
            return Vec::new();
        }
        let tensors = std::mem::take(&mut self.tensors);
        let classes = tensors[0].dims()[1];
        let all = if tensors.len() == 1 {
            tensors.into_iter().next().expect("one tensor")
        } else {
            Tensor::cat(tensors, 0)
        };
        let mut values = logits_to_vec(all).into_iter();
        self.tags
            .drain(..)
            .map(|(tag, rows, kept)| {
                let mut batch: Vec<f32> = values.by_ref().take(rows * classes).collect();
                batch.truncate(kept * classes);
                (tag, batch)
            })
            .collect()
    }
}

/// Read a float tensor back as f32 values (whatever its dtype): one device wait, counted by
/// [`bertlab_models::host_wait`].
pub fn logits_to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    bertlab_models::host_wait::read(t).convert::<f32>().to_vec::<f32>().expect("f32 data after convert")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn logits(values: &[f32]) -> Tensor<Flex, 2> {
        Tensor::from_data(TensorData::new(values.to_vec(), [values.len() / 2, 2]), &Default::default())
    }

    #[test]
    fn reads_batches_back_in_order_with_their_tags() {
        let mut q = PendingLogits::<Flex, &str>::new(3, Duration::from_secs(3600));
        assert!(!q.due() && q.is_empty());
        q.push(logits(&[1.0, 2.0]), 1, "a");
        q.push(logits(&[3.0, 4.0, 5.0, 6.0]), 2, "b");
        assert!(!q.due());
        q.push(logits(&[7.0, 8.0]), 1, "c");
        assert!(q.due());
        assert_eq!(q.len(), 3);
        let got = q.take();
        assert_eq!(got, vec![("a", vec![1.0, 2.0]), ("b", vec![3.0, 4.0, 5.0, 6.0]), ("c", vec![7.0, 8.0])]);
        assert!(q.is_empty() && !q.due() && q.take().is_empty());
        q.push(logits(&[9.0, 10.0]), 1, "d");
        assert_eq!(q.take(), vec![("d", vec![9.0, 10.0])]);
    }

    #[test]
    fn filler_rows_are_dropped_and_the_next_batch_stays_aligned() {
        let mut q = PendingLogits::<Flex, &str>::new(8, Duration::from_secs(3600));
        // A filled batch of 3 rows, 1 labelled, then a full one.
        q.push(logits(&[1.0, 2.0, 1.0, 2.0, 1.0, 2.0]), 1, "filled");
        q.push(logits(&[3.0, 4.0, 5.0, 6.0]), 2, "full");
        assert_eq!(q.take(), vec![("filled", vec![1.0, 2.0]), ("full", vec![3.0, 4.0, 5.0, 6.0])]);
    }

    #[test]
    fn a_zero_wait_reads_every_batch() {
        let mut q = PendingLogits::<Flex, u32>::new(64, Duration::ZERO);
        q.push(logits(&[0.5, -0.5]), 1, 7);
        assert!(q.due());
    }
}
