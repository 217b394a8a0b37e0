//! The distribution of token lengths over a corpus, to choose `max_len`.

/// Summary of untruncated token lengths (`[CLS]` and `[SEP]` included).
///
/// Percentiles interpolate linearly between the two nearest ranks, like numpy's default
/// `np.percentile`, so they match what a Python notebook reports for the same lengths.
#[derive(Debug, Clone, PartialEq)]
pub struct LengthStats {
    sorted: Vec<usize>,
    mean: f64,
}

impl LengthStats {
    /// Summarise `lengths`; `None` when empty.
    pub fn from_lengths(lengths: &[usize]) -> Option<LengthStats> {
        if lengths.is_empty() {
            return None;
        }
        let mut sorted = lengths.to_vec();
        sorted.sort_unstable();
        let mean = sorted.iter().map(|&n| n as f64).sum::<f64>() / sorted.len() as f64;
        Some(LengthStats { sorted, mean })
    }

    /// Number of texts.
    pub fn count(&self) -> usize {
        self.sorted.len()
    }

    /// Mean length.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Shortest length.
    pub fn min(&self) -> usize {
        self.sorted[0]
    }

    /// Longest length.
    pub fn max(&self) -> usize {
        self.sorted[self.sorted.len() - 1]
    }

    /// The `p`-th percentile (`0.0..=100.0`), linearly interpolated.
    pub fn percentile(&self, p: f64) -> f64 {
        let p = p.clamp(0.0, 100.0);
        let rank = p / 100.0 * (self.sorted.len() - 1) as f64;
        let lo = rank.floor() as usize;
        let hi = rank.ceil() as usize;
        let frac = rank - lo as f64;
        self.sorted[lo] as f64 + (self.sorted[hi] as f64 - self.sorted[lo] as f64) * frac
    }

    /// The median (50th percentile).
    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }

    /// Fraction of texts longer than `n` ids, i.e. truncated at `max_len = n`.
    pub fn share_over(&self, n: usize) -> f64 {
        let at_most = self.sorted.partition_point(|&len| len <= n);
        (self.sorted.len() - at_most) as f64 / self.sorted.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        // np.percentile([2, 3, 5, 9, 100], [50, 90, 99]) == [5.0, 63.6, 96.36]
        let s = LengthStats::from_lengths(&[9, 2, 100, 5, 3]).unwrap();
        assert_eq!(s.median(), 5.0);
        assert!((s.percentile(90.0) - 63.6).abs() < 1e-9);
        assert!((s.percentile(99.0) - 96.36).abs() < 1e-9);
        assert_eq!(s.mean(), 23.8);
        assert_eq!((s.min(), s.max(), s.count()), (2, 100, 5));
        assert_eq!(s.share_over(5), 0.4);
        assert_eq!(s.share_over(100), 0.0);
        assert_eq!(s.share_over(1), 1.0);
        assert!(LengthStats::from_lengths(&[]).is_none());
    }
}
