//! Batches of row ids: fixed padding to `max_len` (the notebook) or dynamic padding with length
//! buckets (bertlab's default).
//!
//! Dynamic padding pads each batch only to its longest row. Rows of similar length are grouped
//! so that little padding remains: each epoch the rows are shuffled, cut into pools of
//! [`POOL_BATCHES`] batches, sorted by length inside each pool and cut into batches, and the
//! batch order is shuffled again — so batches stay random across the epoch while rows inside a
//! batch have similar lengths. The padded length is rounded up to a multiple of `pad_multiple`
//! (32 by default, `RunSpec::pad_multiple`) to keep the number of distinct tensor shapes small
//! (kernels and autotune caches are per shape).
//!
//! For the same reason, when a split has more than one batch its last, partial batch is filled
//! to the batch size with filler rows ([`Batch::filler`]: copies of the batch's first row) that
//! count for nothing: the training loss and the logits read back cover the real rows only, so
//! loss, gradients and metrics are those of the real rows, while the device sees one more batch
//! of the usual shape instead of a new, smaller one (a new shape costs a GPU build kernel
//! compilation and autotuning).

use bertlab_data::rng::Pcg64;

/// How many batches one length-sorting pool holds.
pub const POOL_BATCHES: usize = 100;

pub use bertlab_run::{Padding, PaddingStats};

/// One batch: row ids (indices into the split's encoded rows), the length it is padded to, and
/// how many filler rows follow the real ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Row ids, in the order they go into the batch tensor.
    pub rows: Vec<usize>,
    /// Sequence length of the batch tensor.
    pub padded_len: usize,
    /// Rows after `rows` that fill a partial batch to the batch size: copies of its first row,
    /// outside the loss and the outputs.
    pub filler: usize,
}

impl Batch {
    /// The batch tensor's shape, `[rows + filler, padded_len]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows.len() + self.filler, self.padded_len]
    }
}

/// Builds the batches of a split from its token lengths.
#[derive(Debug, Clone)]
pub struct LengthBuckets {
    /// Rows per batch.
    pub batch_size: usize,
    /// Fixed or bucketed.
    pub padding: Padding,
    /// Padded lengths are rounded up to a multiple of this (bucket mode).
    pub pad_multiple: usize,
    /// Upper bound of every length (the tokenizer's truncation length).
    pub max_len: usize,
}

impl LengthBuckets {
    /// Batching of `batch_size` rows.
    pub fn new(batch_size: usize, padding: Padding, pad_multiple: usize, max_len: usize) -> Self {
        assert!(batch_size > 0, "batch size must be positive");
        LengthBuckets { batch_size, padding, pad_multiple: pad_multiple.max(1), max_len }
    }

    fn padded_len(&self, longest: usize) -> usize {
        self.padding.padded_len(longest, self.pad_multiple, self.max_len)
    }

    /// The batch of `rows`, of a split with `lengths`: filled to the batch size when the split
    /// has more than one batch (a split that fits one batch has one shape anyway).
    fn batch(&self, rows: Vec<usize>, lengths: &[usize]) -> Batch {
        let longest = rows.iter().map(|&r| lengths[r]).max().unwrap_or(0);
        let filler = if lengths.len() > self.batch_size { self.batch_size - rows.len() } else { 0 };
        Batch { padded_len: self.padded_len(longest), rows, filler }
    }

    /// The training batches of one epoch; every row appears exactly once. Randomness comes only
    /// from `rng`, so a seeded generator gives the same epochs on every run.
    pub fn epoch(&self, lengths: &[usize], rng: &mut Pcg64) -> Vec<Batch> {
        let order = rng.permutation(lengths.len());
        match self.padding {
            Padding::Fixed => {
                order.chunks(self.batch_size).map(|c| self.batch(c.to_vec(), lengths)).collect()
            }
            Padding::Bucket => {
                let mut batches = Vec::with_capacity(lengths.len().div_ceil(self.batch_size));
                for pool in order.chunks(self.batch_size * POOL_BATCHES) {
                    let mut pool = pool.to_vec();
                    // Stable sort: ties keep the shuffled order, so the result depends on the seed only.
                    pool.sort_by_key(|&r| std::cmp::Reverse(lengths[r]));
                    batches.extend(pool.chunks(self.batch_size).map(|c| self.batch(c.to_vec(), lengths)));
                }
                rng.shuffle(&mut batches);
                batches
            }
        }
    }

    /// Evaluation batches: deterministic, no shuffling. Bucket mode sorts all rows by length
    /// (the least padding possible); fixed mode keeps row order. Callers scatter the outputs
    /// back by row id.
    pub fn sequential(&self, lengths: &[usize]) -> Vec<Batch> {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        if self.padding == Padding::Bucket {
            order.sort_by_key(|&r| std::cmp::Reverse(lengths[r]));
        }
        order.chunks(self.batch_size).map(|c| self.batch(c.to_vec(), lengths)).collect()
    }
}

/// Count the real and padded tokens of `batches` (rows of `lengths` tokens); filler rows are
/// padding.
pub fn padding_stats(batches: &[Batch], lengths: &[usize]) -> PaddingStats {
    let mut s = PaddingStats::default();
    for b in batches {
        s.real_tokens += b.rows.iter().map(|&r| lengths[r] as u64).sum::<u64>();
        let [rows, len] = b.shape();
        s.padded_tokens += (rows * len) as u64;
    }
    s
}

/// The `input_ids` and `attention_mask` of one batch, row-major `[rows, padded_len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchArrays {
    /// Token ids, `pad_id` after each row's end.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub len: usize,
}

impl BatchArrays {
    /// Pack the rows of `batch`: `fill(row, out)` appends a row's ids to `out` (at most
    /// `batch.padded_len` of them), e.g. `|r, out| encoded.extend_row_into(r, out)`. Filler
    /// rows repeat the first row: a real sequence, so no row is wholly masked (whose attention
    /// softmax would have nothing to normalise).
    pub fn pack(batch: &Batch, pad_id: u32, mut fill: impl FnMut(usize, &mut Vec<i64>)) -> BatchArrays {
        let len = batch.padded_len;
        let [total, _] = batch.shape();
        let mut input_ids = Vec::with_capacity(total * len);
        let mut attention_mask = Vec::with_capacity(total * len);
        let filler_rows = batch.rows.first().into_iter().flat_map(|&r| std::iter::repeat_n(r, batch.filler));
        let mut packed = 0;
        for row in batch.rows.iter().copied().chain(filler_rows) {
            packed += 1;
            let start = input_ids.len();
            fill(row, &mut input_ids);
            let n = input_ids.len() - start;
            assert!(n <= len, "row {row} has {n} tokens but its batch is padded to {len}");
            input_ids.resize(start + len, pad_id as i64);
            attention_mask.extend(std::iter::repeat_n(1i64, n));
            attention_mask.extend(std::iter::repeat_n(0i64, len - n));
        }
        BatchArrays { input_ids, attention_mask, rows: packed, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(n: usize, seed: u64) -> Vec<usize> {
        let mut rng = Pcg64::new(seed);
        (0..n).map(|_| 3 + rng.interval(125) as usize).collect()
    }

    fn assert_each_row_once(batches: &[Batch], n: usize) {
        let mut seen = vec![0u32; n];
        for b in batches {
            for &r in &b.rows {
                seen[r] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "some row is missing or repeated");
    }

    #[test]
    fn every_row_exactly_once_per_epoch() {
        let lens = lengths(3_517, 1);
        for padding in [Padding::Fixed, Padding::Bucket] {
            let lb = LengthBuckets::new(16, padding, 8, 128);
            let mut rng = Pcg64::new(42);
            let e1 = lb.epoch(&lens, &mut rng);
            let e2 = lb.epoch(&lens, &mut rng);
            assert_each_row_once(&e1, lens.len());
            assert_each_row_once(&e2, lens.len());
            assert_ne!(e1, e2, "epochs must be shuffled differently");
            assert_eq!(e1.len(), 3_517usize.div_ceil(16));
            // Only one batch may be short.
            assert_eq!(e1.iter().filter(|b| b.rows.len() < 16).count(), 1);
            assert_each_row_once(&lb.sequential(&lens), lens.len());
            for b in &e1 {
                let longest = b.rows.iter().map(|&r| lens[r]).max().unwrap();
                assert!(b.padded_len >= longest && b.padded_len <= 128);
                if padding == Padding::Bucket {
                    assert!(b.padded_len % 8 == 0 && b.padded_len - longest < 8);
                } else {
                    assert_eq!(b.padded_len, 128);
                }
            }
        }
    }

    #[test]
    fn same_seed_same_batches() {
        let lens = lengths(1000, 2);
        let lb = LengthBuckets::new(32, Padding::Bucket, 8, 128);
        assert_eq!(lb.epoch(&lens, &mut Pcg64::new(7)), lb.epoch(&lens, &mut Pcg64::new(7)));
        assert_ne!(lb.epoch(&lens, &mut Pcg64::new(7)), lb.epoch(&lens, &mut Pcg64::new(8)));
    }

    #[test]
    fn bucketing_cuts_padding() {
        let lens = lengths(5000, 3);
        let mut rng = Pcg64::new(0);
        let fixed =
            padding_stats(&LengthBuckets::new(16, Padding::Fixed, 8, 128).epoch(&lens, &mut rng), &lens);
        let bucket =
            padding_stats(&LengthBuckets::new(16, Padding::Bucket, 8, 128).epoch(&lens, &mut rng), &lens);
        assert_eq!(fixed.real_tokens, bucket.real_tokens);
        // Every row padded to 128, and the last batch filled to 16 rows (5008 = 313 × 16).
        assert_eq!(fixed.padded_tokens, 5008 * 128);
        // Uniform lengths 3..=128 (mean ≈ 65.5): fixed pads ~2×, bucketing only to the next multiple of 8.
        assert!(fixed.padding_factor() > 1.9);
        assert!(bucket.padding_factor() < 1.1, "{}", bucket.padding_factor());
    }

    #[test]
    fn padded_len_rounding_and_cap() {
        let lb = LengthBuckets::new(2, Padding::Bucket, 64, 100);
        let lens = [3, 65, 100, 9];
        let b = lb.sequential(&lens);
        assert_eq!(b[0], Batch { rows: vec![2, 1], padded_len: 100, filler: 0 });
        assert_eq!(b[1], Batch { rows: vec![3, 0], padded_len: 64, filler: 0 });
    }

    #[test]
    fn pack_pads_and_masks() {
        let batch = Batch { rows: vec![1, 0], padded_len: 4, filler: 0 };
        let rows: Vec<Vec<u32>> = vec![vec![101, 7, 102], vec![101, 102]];
        let a = BatchArrays::pack(&batch, 0, |r, out| out.extend(rows[r].iter().map(|&id| id as i64)));
        assert_eq!(a.input_ids, vec![101, 102, 0, 0, 101, 7, 102, 0]);
        assert_eq!(a.attention_mask, vec![1, 1, 0, 0, 1, 1, 1, 0]);
        assert_eq!((a.rows, a.len), (2, 4));
        // Two filler rows: copies of the first row.
        let filled = Batch { filler: 2, ..batch };
        let a = BatchArrays::pack(&filled, 0, |r, out| out.extend(rows[r].iter().map(|&id| id as i64)));
        assert_eq!(a.input_ids, vec![101, 102, 0, 0, 101, 7, 102, 0, 101, 102, 0, 0, 101, 102, 0, 0]);
        assert_eq!(a.attention_mask, vec![1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0]);
        assert_eq!((a.rows, a.len), (4, 4));
    }

    #[test]
    fn padded_lengths_are_those_the_spec_plans() {
        let lens = lengths(3_000, 5);
        for (max_len, multiple) in [(128, 32), (100, 32), (128, 8), (512, 64)] {
            let spec = bertlab_run::RunSpec { max_len, pad_multiple: multiple, ..Default::default() };
            let planned = spec.padded_lengths();
            let lens: Vec<usize> = lens.iter().map(|&l| l.min(max_len)).collect();
            let lb = LengthBuckets::new(32, Padding::Bucket, multiple, max_len);
            for b in lb.epoch(&lens, &mut Pcg64::new(3)).iter().chain(&lb.sequential(&lens)) {
                assert!(planned.contains(&b.padded_len), "{} not in {planned:?}", b.padded_len);
                assert!(spec.planned_shapes().contains(&b.shape()), "{:?}", b.shape());
            }
        }
    }

    #[test]
    fn only_a_split_of_several_batches_fills_its_last_one() {
        let lens = lengths(37, 4);
        for padding in [Padding::Fixed, Padding::Bucket] {
            let lb = LengthBuckets::new(16, padding, 8, 128);
            for batches in [lb.epoch(&lens, &mut Pcg64::new(1)), lb.sequential(&lens)] {
                assert_each_row_once(&batches, lens.len());
                assert!(batches.iter().all(|b| b.shape()[0] == 16), "{batches:?}");
                assert_eq!(batches.iter().map(|b| b.filler).sum::<usize>(), 48 - 37);
            }
            let one = lb.sequential(&lens[..5]);
            assert_eq!((one.len(), one[0].filler, one[0].shape()[0]), (1, 0, 5));
        }
    }
}
