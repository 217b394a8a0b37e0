//! Classification metrics: accuracy, precision/recall/F1 per class and their macro and weighted
//! averages, the positive class's (binary tasks, as the notebook), confusion matrix.
//!
//! Conventions follow the notebook (`evaluate.load("f1")`, i.e. sklearn with the positive class
//! `1`) and its `confusion_matrix_np` helper: rows are the true class, columns the predicted one,
//! so for two classes the matrix reads `[[TN, FP], [FN, TP]]`. A ratio whose denominator is zero
//! is 0, as sklearn returns with its default `zero_division="warn"`.

use serde::{Deserialize, Serialize};

/// The class whose precision, recall and F1 are reported (`pos` in IMDB).
pub const POSITIVE_CLASS: u32 = 1;

/// The most classes a dataset or a classifier may have; more is refused when the data or the
/// config is read, before anything is sized by it.
///
/// Why 10,000: every evaluation builds a `k × k` [`ConfusionMatrix`] of `u64` and a record
/// stores it, so at this bound that is already 10⁸ cells (800 MB in memory, hundreds of MB of
/// JSON); a label of 10¹² read as a class id would ask for 8·10²⁴ bytes and abort. Single-label
/// text classification sets in common use are far smaller (IMDB 2, banking77 77, CLINC150 151);
/// the label sets of tens of thousands (medical codes, product taxonomies) are multi-label,
/// which bertlab's softmax head does not model anyway.
pub const MAX_CLASSES: usize = 10_000;

/// A `k × k` confusion matrix: `counts[true][predicted]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Row = true class, column = predicted class.
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// Count `(truth, prediction)` pairs over `num_classes` classes (grown to fit any label seen).
    ///
    /// # Panics
    /// When `truth` and `predicted` differ in length.
    pub fn new(truth: &[u32], predicted: &[u32], num_classes: usize) -> ConfusionMatrix {
        assert_eq!(
            truth.len(),
            predicted.len(),
            "confusion matrix: {} labels but {} predictions",
            truth.len(),
            predicted.len()
        );
        let seen = truth.iter().chain(predicted).map(|&c| c as usize + 1).max().unwrap_or(0);
        let k = num_classes.max(seen);
        let mut counts = vec![vec![0u64; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            counts[t as usize][p as usize] += 1;
        }
        ConfusionMatrix { counts }
    }

    /// Number of classes (rows).
    pub fn num_classes(&self) -> usize {
        self.counts.len()
    }

    /// Number of examples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Examples on the diagonal.
    pub fn correct(&self) -> u64 {
        (0..self.counts.len()).map(|i| self.counts[i][i]).sum()
    }

    /// Fraction predicted correctly (0 when empty).
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    /// TP / (TP + FP) for `class` (0 when nothing was predicted as `class`).
    pub fn precision(&self, class: u32) -> f64 {
        let c = class as usize;
        if c >= self.counts.len() {
            return 0.0;
        }
        let predicted: u64 = self.counts.iter().map(|row| row[c]).sum();
        ratio(self.counts[c][c], predicted)
    }

    /// TP / (TP + FN) for `class` (0 when `class` never occurs).
    pub fn recall(&self, class: u32) -> f64 {
        let c = class as usize;
        if c >= self.counts.len() {
            return 0.0;
        }
        ratio(self.counts[c][c], self.counts[c].iter().sum())
    }

    /// F1 of `class`: 2·TP / (2·TP + FP + FN), the harmonic mean of precision and recall
    /// (0 when TP + FP + FN = 0, as sklearn).
    pub fn f1(&self, class: u32) -> f64 {
        let c = class as usize;
        if c >= self.counts.len() {
            return 0.0;
        }
        let tp = self.counts[c][c];
        let fp: u64 = self.counts.iter().map(|row| row[c]).sum::<u64>() - tp;
        let fn_: u64 = self.counts[c].iter().sum::<u64>() - tp;
        ratio(2 * tp, 2 * tp + fp + fn_)
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Precision, recall and F1 of one class (sklearn's, zero when undefined), and its support.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// TP / (TP + FP).
    pub precision: f64,
    /// TP / (TP + FN).
    pub recall: f64,
    /// 2·TP / (2·TP + FP + FN).
    pub f1: f64,
    /// Rows of the class.
    pub support: u64,
}

/// The test metrics of a run. For two classes `f1`, `precision` and `recall` are the positive
/// class's (label 1, as the notebook's `evaluate.load("f1")`); for more, they are the macro
/// averages (sklearn's `average="macro"`), as `macro_f1` is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Number of examples.
    pub n: u64,
    /// Fraction correct.
    pub accuracy: f64,
    /// F1 of the positive class (label 1) for two classes, else the macro F1.
    pub f1: f64,
    /// Precision of the positive class for two classes, else the macro average.
    pub precision: f64,
    /// Recall of the positive class for two classes, else the macro average.
    pub recall: f64,
    /// Mean of the classes' F1.
    #[serde(default)]
    pub macro_f1: f64,
    /// Mean of the classes' F1 weighted by their support.
    #[serde(default)]
    pub weighted_f1: f64,
    /// Each class's scores, index = class id.
    #[serde(default)]
    pub per_class: Vec<ClassScores>,
    /// Mean softmax cross-entropy (when logits were available).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Rows true, columns predicted: `[[TN, FP], [FN, TP]]` for two classes.
    pub confusion: Vec<Vec<u64>>,
}

impl ClassificationMetrics {
    /// Metrics of `predicted` against `truth` with `num_classes` classes.
    pub fn new(truth: &[u32], predicted: &[u32], num_classes: usize) -> ClassificationMetrics {
        let cm = ConfusionMatrix::new(truth, predicted, num_classes);
        let k = cm.num_classes();
        let per_class: Vec<ClassScores> = (0..k as u32)
            .map(|c| ClassScores {
                precision: cm.precision(c),
                recall: cm.recall(c),
                f1: cm.f1(c),
                support: cm.counts[c as usize].iter().sum(),
            })
            .collect();
        let mean = |f: fn(&ClassScores) -> f64| per_class.iter().map(f).sum::<f64>() / k.max(1) as f64;
        let total = cm.total();
        let weighted_f1 = if total == 0 {
            0.0
        } else {
            per_class.iter().map(|c| c.f1 * c.support as f64).sum::<f64>() / total as f64
        };
        let binary = k == 2;
        ClassificationMetrics {
            n: total,
            accuracy: cm.accuracy(),
            f1: if binary { cm.f1(POSITIVE_CLASS) } else { mean(|c| c.f1) },
            precision: if binary { cm.precision(POSITIVE_CLASS) } else { mean(|c| c.precision) },
            recall: if binary { cm.recall(POSITIVE_CLASS) } else { mean(|c| c.recall) },
            macro_f1: mean(|c| c.f1),
            weighted_f1,
            per_class,
            loss: None,
            confusion: cm.counts,
        }
    }

    /// Attach the mean loss.
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = Some(loss);
        self
    }
}

/// Arg-max of each row of row-major `logits` with `num_classes` columns (first maximum wins,
/// like numpy's `argmax`).
pub fn argmax_rows(logits: &[f32], num_classes: usize) -> Vec<u32> {
    assert!(
        num_classes > 0 && logits.len().is_multiple_of(num_classes),
        "argmax_rows: {} logits are not rows of {num_classes}",
        logits.len()
    );
    logits
        .chunks_exact(num_classes)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                // `>` keeps the first maximum; a NaN is never selected over a number.
                if v > row[best] || row[best].is_nan() && !v.is_nan() {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// Softmax of each row (computed in f64, returned as f32 probabilities).
pub fn softmax_rows(logits: &[f32], num_classes: usize) -> Vec<f32> {
    assert!(
        num_classes > 0 && logits.len().is_multiple_of(num_classes),
        "softmax_rows: {} logits are not rows of {num_classes}",
        logits.len()
    );
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(num_classes) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        out.extend(exps.iter().map(|e| (e / sum) as f32));
    }
    out
}

/// Per-row softmax cross-entropy of row-major `logits` against `labels` (f64, numerically
/// stable log-sum-exp).
pub fn cross_entropy_rows(logits: &[f32], labels: &[u32], num_classes: usize) -> Vec<f64> {
    assert_eq!(
        logits.len(),
        labels.len() * num_classes,
        "cross_entropy_rows: {} logits for {} labels × {num_classes} classes",
        logits.len(),
        labels.len()
    );
    logits
        .chunks_exact(num_classes)
        .zip(labels)
        .map(|(row, &label)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            lse - row[label as usize] as f64
        })
        .collect()
}

/// The largest |a − b| over two equally long slices, for checks against reference outputs:
/// `+∞` when any value (either side) is NaN or infinite, so that a broken model can never pass a
/// tolerance (a plain `fold(0.0, f32::max)` skips NaN).
///
/// # Panics
/// When the lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "max_abs_diff: {} values against {}", a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| if x.is_finite() && y.is_finite() { (x - y).abs() } else { f32::INFINITY })
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_confusion_is_tn_fp_fn_tp() {
        // truth:     0 0 0 1 1 1 1
        // predicted: 0 1 0 1 0 1 1   → TN 2, FP 1, FN 1, TP 3
        let truth = [0, 0, 0, 1, 1, 1, 1];
        let pred = [0, 1, 0, 1, 0, 1, 1];
        let m = ClassificationMetrics::new(&truth, &pred, 2);
        assert_eq!(m.confusion, vec![vec![2, 1], vec![1, 3]]);
        assert_eq!(m.n, 7);
        assert_eq!(m.accuracy, 5.0 / 7.0);
        assert_eq!(m.precision, 3.0 / 4.0);
        assert_eq!(m.recall, 3.0 / 4.0);
        assert_eq!(m.f1, 6.0 / 8.0);
    }

    #[test]
    fn f1_matches_sklearn_on_asymmetric_case() {
        // sklearn.metrics.f1_score([1,1,1,1,0,0], [1,0,0,0,1,0]) = 0.3333…: TP 1, FP 1, FN 3.
        let m = ClassificationMetrics::new(&[1, 1, 1, 1, 0, 0], &[1, 0, 0, 0, 1, 0], 2);
        assert_eq!(m.confusion, vec![vec![1, 1], vec![3, 1]]);
        assert_eq!(m.precision, 0.5);
        assert_eq!(m.recall, 0.25);
        assert_eq!(m.f1, 2.0 / 6.0);
        assert_eq!(m.accuracy, 2.0 / 6.0);
    }

    #[test]
    fn undefined_ratios_are_zero() {
        // Never predicts the positive class: precision 0/0, F1 = 0 (sklearn's zero_division).
        let m = ClassificationMetrics::new(&[0, 1, 1], &[0, 0, 0], 2);
        assert_eq!(m.precision, 0.0);
        assert_eq!(m.recall, 0.0);
        assert_eq!(m.f1, 0.0);
        // No positives anywhere: every ratio is 0/0.
        let m = ClassificationMetrics::new(&[0, 0], &[0, 0], 2);
        assert_eq!((m.precision, m.recall, m.f1, m.accuracy), (0.0, 0.0, 0.0, 1.0));
        let empty = ClassificationMetrics::new(&[], &[], 2);
        assert_eq!(empty.confusion, vec![vec![0, 0], vec![0, 0]]);
        assert_eq!(empty.accuracy, 0.0);
    }

    #[test]
    fn multi_class_averages_match_sklearn() {
        // sklearn.metrics.f1_score(t, p, average=None / "macro" / "weighted") with
        // t = [0,0,1,1,1,2,2,2,2,3], p = [0,1,1,1,2,2,2,2,0,0]:
        // per class F1 [0.4, 2/3, 0.75, 0.0], macro 0.4541666…, weighted 0.58.
        let t = [0, 0, 1, 1, 1, 2, 2, 2, 2, 3];
        let p = [0, 1, 1, 1, 2, 2, 2, 2, 0, 0];
        let m = ClassificationMetrics::new(&t, &p, 4);
        let f1: Vec<f64> = m.per_class.iter().map(|c| c.f1).collect();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        for (got, want) in f1.iter().zip([0.4, 2.0 / 3.0, 0.75, 0.0]) {
            assert!(close(*got, want), "{f1:?}");
        }
        let macro_f1 = (0.4 + 2.0 / 3.0 + 0.75) / 4.0;
        assert!(close(m.macro_f1, macro_f1) && close(m.f1, macro_f1), "{}", m.macro_f1);
        assert!(close(m.weighted_f1, 0.58), "{}", m.weighted_f1);
        assert_eq!(m.per_class.iter().map(|c| c.support).collect::<Vec<_>>(), vec![2, 3, 4, 1]);
        // precision of class 0: 1 TP of 3 predicted; recall 1 of 2.
        assert!(close(m.per_class[0].precision, 1.0 / 3.0) && close(m.per_class[0].recall, 0.5));
        // Binary runs keep the positive class's scores, and gain the averages.
        let b = ClassificationMetrics::new(&[0, 0, 1, 1], &[0, 1, 1, 1], 2);
        assert_eq!(b.f1, 0.8);
        assert!(close(b.macro_f1, (2.0 / 3.0 + 0.8) / 2.0), "{}", b.macro_f1);
    }

    #[test]
    fn three_classes() {
        let truth = [0, 1, 2, 2, 1, 0, 2];
        let pred = [0, 2, 2, 1, 1, 0, 2];
        let cm = ConfusionMatrix::new(&truth, &pred, 3);
        assert_eq!(cm.counts, vec![vec![2, 0, 0], vec![0, 1, 1], vec![0, 1, 2]]);
        assert_eq!(cm.accuracy(), 5.0 / 7.0);
        assert_eq!(cm.precision(2), 2.0 / 3.0);
        assert_eq!(cm.recall(2), 2.0 / 3.0);
        assert_eq!(cm.f1(1), 2.0 / 4.0);
        // A label beyond num_classes grows the matrix instead of panicking.
        assert_eq!(ConfusionMatrix::new(&[3], &[0], 2).num_classes(), 4);
    }

    #[test]
    fn argmax_softmax_and_cross_entropy() {
        let logits = [1.0, 2.0, 3.0, 3.0, -1.0, 0.5];
        assert_eq!(argmax_rows(&logits, 2), vec![1, 0, 1]);
        assert_eq!(argmax_rows(&[f32::NAN, 1.0], 2), vec![1]);
        let p = softmax_rows(&[0.0, 0.0, (3.0f32).ln(), 0.0], 2);
        assert_eq!(p, vec![0.5, 0.5, 0.75, 0.25]);
        let ce = cross_entropy_rows(&[0.0, 0.0, (3.0f32).ln(), 0.0], &[1, 0], 2);
        assert!((ce[0] - 2f64.ln()).abs() < 1e-12);
        assert!((ce[1] - (4.0f64 / 3.0).ln()).abs() < 1e-7);
    }

    #[test]
    fn max_abs_diff_fails_on_non_finite_values() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
        assert_eq!(max_abs_diff(&[], &[]), 0.0);
        assert_eq!(max_abs_diff(&[f32::NAN, 2.0], &[1.0, 2.0]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[1.0], &[f32::NAN]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[f32::INFINITY], &[f32::INFINITY]), f32::INFINITY);
        assert!(max_abs_diff(&[f32::NAN; 4], &[0.0; 4]) > 1e-3, "an all-NaN output must fail");
    }
}
