//! HF `datasets` `Dataset.train_test_split` (stratified or not), row for row, and the notebook's
//! three-call recipe (subset → 80/20 → 87.5/12.5).
//!
//! See `shared/SPLIT.md` for the algorithm; `crate::rng` supplies numpy's random stream.

use crate::rng::Pcg64;
use crate::{class_counts, DataError, DatasetSplits, Split, SplitMode};

/// How big one side of a split is, as HF `train_test_split` takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitSize {
    /// `test_size=p`: the test side holds `ceil(p·n)` rows, train the rest.
    TestFraction(f64),
    /// `train_size=q`: the train side holds `floor(q·n)` rows, test the rest.
    TrainFraction(f64),
}

impl SplitSize {
    /// `(n_train, n_test)` for `n` rows, with HF's rounding.
    pub fn sizes(self, n: usize) -> Result<(usize, usize), DataError> {
        let (p, name) = match self {
            SplitSize::TestFraction(p) => (p, "test_size"),
            SplitSize::TrainFraction(p) => (p, "train_size"),
        };
        if !(p > 0.0 && p < 1.0) {
            return Err(DataError::BadFraction { name, value: p });
        }
        let (n_train, n_test) = match self {
            SplitSize::TestFraction(p) => {
                let t = (p * n as f64).ceil() as usize;
                (n - t.min(n), t)
            }
            SplitSize::TrainFraction(q) => {
                let t = (q * n as f64).floor() as usize;
                (t, n - t.min(n))
            }
        };
        if n_train == 0 || n_test == 0 {
            return Err(DataError::SplitTooSmall {
                what: format!("{name}={p} of {n} rows gives {n_train} train and {n_test} test rows"),
            });
        }
        Ok((n_train, n_test))
    }
}

/// The two sides of one split, as positions into the input rows (in HF's output order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainTest {
    /// Rows of the `train` side, in the order HF returns them.
    pub train: Vec<usize>,
    /// Rows of the `test` side, in the order HF returns them.
    pub test: Vec<usize>,
}

/// `Dataset.train_test_split(size, seed=seed, stratify_by_column=…)` on rows with `labels`.
///
/// With `stratify = false` the labels are only counted for their length.
pub fn train_test_split(
    labels: &[u32],
    size: SplitSize,
    seed: u64,
    stratify: bool,
) -> Result<TrainTest, DataError> {
    split_rows(labels, size, seed, stratify, None)
}

/// The class names of the labels, and what rows are being split: for errors that name the
/// class by name, where the caller knows it.
struct Naming<'a> {
    class_names: &'a [String],
    rows: String,
}

/// [`train_test_split`], naming the class at fault by `naming` when given.
fn split_rows(
    labels: &[u32],
    size: SplitSize,
    seed: u64,
    stratify: bool,
    naming: Option<&Naming>,
) -> Result<TrainTest, DataError> {
    let n = labels.len();
    if n == 0 {
        return Err(DataError::Empty { what: "the rows to split".into() });
    }
    let (n_train, n_test) = size.sizes(n)?;
    let mut rng = Pcg64::new(seed);
    if !stratify {
        let p = rng.permutation(n);
        return Ok(TrainTest { test: p[..n_test].to_vec(), train: p[n_test..n_test + n_train].to_vec() });
    }

    // Classes in sorted order; each class's rows in ascending row order (a stable sort).
    let mut classes: Vec<u32> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut class_rows: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
    for (row, label) in labels.iter().enumerate() {
        let c = classes.binary_search(label).expect("label was collected above");
        class_rows[c].push(row);
    }
    let counts: Vec<u64> = class_rows.iter().map(|r| r.len() as u64).collect();
    if let Some((c, &count)) = counts.iter().enumerate().find(|(_, &k)| k < 2) {
        if let Some(naming) = naming {
            let id = classes[c] as usize;
            return Err(DataError::ClassTooSmall {
                rows: naming.rows.clone(),
                class: naming.class_names.get(id).cloned().unwrap_or_else(|| id.to_string()),
                count: count as usize,
            });
        }
        return Err(DataError::SplitTooSmall {
            what: format!(
                "class {} has {count} row(s); a stratified split needs at least 2 of every class",
                classes[c]
            ),
        });
    }
    for (side, k) in [("train", n_train), ("test", n_test)] {
        if k < classes.len() {
            return Err(DataError::SplitTooSmall {
                what: format!(
                    "the {side} side would hold {k} row(s), fewer than the {} classes it must hold",
                    classes.len()
                ),
            });
        }
    }

    let n_i = approximate_mode(&counts, n_train as u64, &mut rng);
    let remaining: Vec<u64> = counts.iter().zip(&n_i).map(|(c, n)| c - n).collect();
    let t_i = approximate_mode(&remaining, n_test as u64, &mut rng);

    let mut train = Vec::with_capacity(n_train);
    let mut test = Vec::with_capacity(n_test);
    for (c, rows) in class_rows.iter().enumerate() {
        let perm = rng.permutation(rows.len());
        let (a, b) = (n_i[c] as usize, t_i[c] as usize);
        train.extend(perm[..a].iter().map(|&p| rows[p]));
        test.extend(perm[a..a + b].iter().map(|&p| rows[p]));
    }
    rng.shuffle(&mut train);
    rng.shuffle(&mut test);
    Ok(TrainTest { train, test })
}

/// sklearn's `_approximate_mode` as vendored by HF: `k` draws spread over classes in proportion
/// to `counts`, remainders going to the largest fractional parts, ties broken at random.
fn approximate_mode(counts: &[u64], k: u64, rng: &mut Pcg64) -> Vec<u64> {
    let total: u64 = counts.iter().sum();
    // numpy computes `k * counts` in integers, then one float division.
    let continuous: Vec<f64> = counts.iter().map(|&c| (k * c) as f64 / total as f64).collect();
    let mut floored: Vec<u64> = continuous.iter().map(|x| x.floor() as u64).collect();
    let mut need = k as i64 - floored.iter().sum::<u64>() as i64;
    if need > 0 {
        let remainder: Vec<f64> = continuous.iter().zip(&floored).map(|(x, f)| x - *f as f64).collect();
        let mut values = remainder.clone();
        values.sort_by(|a, b| b.partial_cmp(a).expect("remainders are finite"));
        values.dedup();
        for value in values {
            let inds: Vec<usize> = (0..remainder.len()).filter(|&i| remainder[i] == value).collect();
            let add = inds.len().min(need as usize);
            for i in rng.choice_without_replacement(&inds, add) {
                floored[i] += 1;
            }
            need -= add as i64;
            if need == 0 {
                break;
            }
        }
    }
    floored
}

/// The notebook's stratified split of a labelled table into pool, train, validation and test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotebookSplit {
    /// Rows of the pool (the stratified subset, or every row at subset 1.0), HF order.
    pub pool: Vec<usize>,
    /// 70 % of the pool.
    pub train: Vec<usize>,
    /// 10 % of the pool.
    pub val: Vec<usize>,
    /// 20 % of the pool.
    pub test: Vec<usize>,
}

impl NotebookSplit {
    /// Split rows labelled `labels` (row ids index `labels`) as the notebook does:
    /// `pool = train_test_split(train_size=subset)["train"]` (skipped at subset 1.0),
    /// `a = pool.train_test_split(test_size=0.2)`, `b = a["train"].train_test_split(test_size=0.125)`;
    /// train = b.train, val = b.test, test = a.test. Each call starts a fresh `default_rng(seed)`.
    pub fn new(labels: &[u32], subset: f64, seed: u64) -> Result<NotebookSplit, DataError> {
        NotebookSplit::named(labels, subset, seed, None)
    }

    /// [`NotebookSplit::new`], naming a class with too few rows by its name.
    fn named(
        labels: &[u32],
        subset: f64,
        seed: u64,
        class_names: Option<&[String]>,
    ) -> Result<NotebookSplit, DataError> {
        check_subset(subset)?;
        let naming = |rows: String| class_names.map(|class_names| Naming { class_names, rows });
        let pool: Vec<usize> = if subset < 1.0 {
            let naming = naming(format!("all rows to a subset of {subset}"));
            split_rows(labels, SplitSize::TrainFraction(subset), seed, true, naming.as_ref())?.train
        } else {
            (0..labels.len()).collect()
        };
        let pick = |rows: &[usize]| -> Vec<u32> { rows.iter().map(|&r| labels[r]).collect() };
        let naming_a = naming("the pool 80/20 into train+validation and test".into());
        let a = split_rows(&pick(&pool), SplitSize::TestFraction(0.2), seed, true, naming_a.as_ref())?;
        let a_train: Vec<usize> = a.train.iter().map(|&i| pool[i]).collect();
        let test: Vec<usize> = a.test.iter().map(|&i| pool[i]).collect();
        let naming_b = naming("train+validation 87.5/12.5 into train and validation".into());
        let b = split_rows(&pick(&a_train), SplitSize::TestFraction(0.125), seed, true, naming_b.as_ref())?;
        let train = b.train.iter().map(|&i| a_train[i]).collect();
        let val = b.test.iter().map(|&i| a_train[i]).collect();
        Ok(NotebookSplit { pool, train, val, test })
    }
}

fn check_subset(subset: f64) -> Result<(), DataError> {
    if !(subset > 0.0 && subset <= 1.0) {
        return Err(DataError::BadFraction { name: "subset", value: subset });
    }
    Ok(())
}

/// The share of train+validation rows the notebook validates on (its 87.5/12.5 split), and
/// the share of a train split carved into validation where a dataset has none.
pub const CARVED_VALIDATION: f64 = 0.125;

/// Which rows a run trains, validates and tests on, as positions in
/// [`DatasetSplits::joined`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSplits {
    /// The rows `subset` drew: from all rows ([`SplitMode::Notebook`]) or from the train split
    /// ([`SplitMode::Given`]), in HF's order; every row of those at subset 1.0, in row order.
    pub pool: Vec<usize>,
    /// The rows trained on.
    pub train: Vec<usize>,
    /// The rows validated on after each epoch.
    pub val: Vec<usize>,
    /// The rows tested on.
    pub test: Vec<usize>,
}

impl From<NotebookSplit> for RunSplits {
    fn from(split: NotebookSplit) -> Self {
        let NotebookSplit { pool, train, val, test } = split;
        RunSplits { pool, train, val, test }
    }
}

impl RunSplits {
    /// The rows of a run on `splits`, the same on the same seed.
    ///
    /// - [`SplitMode::Notebook`]: [`NotebookSplit`] on all rows joined (for IMDB, the notebook's
    ///   rows exactly).
    /// - [`SplitMode::Given`]: the subset drawn stratified from the train split
    ///   (`train_test_split(train_size=subset)`, skipped at 1.0); validation is the dataset's, or
    ///   where it has none, carved from the drawn rows, stratified, with `test_size=0.125`; test
    ///   is the whole test split (a dataset without one is an error).
    pub fn new(
        splits: &DatasetSplits,
        mode: SplitMode,
        subset: f64,
        seed: u64,
    ) -> Result<RunSplits, DataError> {
        check_subset(subset)?;
        let class_names = splits.class_names();
        if mode == SplitMode::Notebook {
            return NotebookSplit::named(&splits.joined_labels(), subset, seed, Some(class_names))
                .map(Into::into);
        }
        let Some(test_rows) = splits.rows_of(Split::Test) else {
            return Err(DataError::NoTestSplit {
                found: splits.present().into_iter().map(Split::name).collect(),
            });
        };
        let train_labels = &splits.train.labels;
        let train_counts = class_counts(train_labels, class_names.len());
        for (split, part) in [(Split::Validation, &splits.validation), (Split::Test, &splits.test)] {
            let Some(part) = part else { continue };
            let counts = class_counts(&part.labels, class_names.len());
            if let Some(class) = (0..counts.len()).find(|&c| counts[c] > 0 && train_counts[c] == 0) {
                return Err(DataError::ClassNotInTrain {
                    class: class_names[class].clone(),
                    split: split.name(),
                    count: counts[class],
                });
            }
        }
        let naming = |rows: String| Naming { class_names, rows };
        let pool: Vec<usize> = if subset < 1.0 {
            let naming = naming(format!("the train split to a subset of {subset}"));
            split_rows(train_labels, SplitSize::TrainFraction(subset), seed, true, Some(&naming))?.train
        } else {
            (0..train_labels.len()).collect()
        };
        let (train, val) = match splits.rows_of(Split::Validation) {
            Some(val) => (pool.clone(), val.collect()),
            None => {
                let labels: Vec<u32> = pool.iter().map(|&r| train_labels[r]).collect();
                let naming = naming(format!(
                    "the train rows {}/{} into train and validation (the dataset has no validation split)",
                    100.0 * (1.0 - CARVED_VALIDATION),
                    100.0 * CARVED_VALIDATION
                ));
                let carved = split_rows(
                    &labels,
                    SplitSize::TestFraction(CARVED_VALIDATION),
                    seed,
                    true,
                    Some(&naming),
                )?;
                (
                    carved.train.iter().map(|&i| pool[i]).collect(),
                    carved.test.iter().map(|&i| pool[i]).collect(),
                )
            }
        };
        Ok(RunSplits { pool, train, val, test: test_rows.collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn shared_fixture(name: &str) -> Option<Value> {
        let Some(dir) = bertlab_test_support::shared_dir() else {
            eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
            return None;
        };
        let text = std::fs::read_to_string(dir.join("fixtures").join(name)).unwrap();
        Some(serde_json::from_str(&text).unwrap())
    }

    fn ids(v: &Value) -> Vec<usize> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
    }

    #[test]
    fn every_split_case_matches_hf_datasets() {
        let Some(fixture) = shared_fixture("split-cases.json") else { return };
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for (k, case) in cases.iter().enumerate() {
            let seed = case["seed"].as_u64().unwrap();
            let size = match (case.get("test_size"), case.get("train_size")) {
                (Some(p), _) => SplitSize::TestFraction(p.as_f64().unwrap()),
                (None, Some(q)) => SplitSize::TrainFraction(q.as_f64().unwrap()),
                _ => panic!("case {k} has no size"),
            };
            let (labels, stratify): (Vec<u32>, bool) = match &case["labels"] {
                Value::Null => (vec![0; case["n"].as_u64().unwrap() as usize], false),
                l => (l.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect(), true),
            };
            let got = train_test_split(&labels, size, seed, stratify).unwrap();
            assert_eq!(got.train, ids(&case["train"]), "case {k}: train rows");
            assert_eq!(got.test, ids(&case["test"]), "case {k}: test rows");
        }
    }

    #[test]
    fn imdb_notebook_splits_match_hf_datasets() {
        let Some(fixture) = shared_fixture("imdb-splits-seed42.json") else { return };
        let dir = bertlab_test_support::shared_dir().unwrap().join("data/hf-imdb");
        let data = crate::DatasetSource::LocalDir(dir).load(&Default::default()).unwrap();
        assert_eq!(data.len() as u64, fixture["rows"].as_u64().unwrap());
        let seed = fixture["seed"].as_u64().unwrap();
        for (subset, expected) in fixture["splits"].as_object().unwrap() {
            let split = NotebookSplit::new(&data.labels, subset.parse().unwrap(), seed).unwrap();
            assert_eq!(split.pool.len() as u64, expected["pool"].as_u64().unwrap(), "subset {subset}");
            assert_eq!(split.train, ids(&expected["train"]), "subset {subset}: train rows");
            assert_eq!(split.val, ids(&expected["val"]), "subset {subset}: val rows");
            assert_eq!(split.test, ids(&expected["test"]), "subset {subset}: test rows");
        }
    }

    #[test]
    fn sizes_follow_hf_rounding() {
        assert_eq!(SplitSize::TestFraction(0.2).sizes(12498).unwrap(), (9998, 2500));
        assert_eq!(SplitSize::TestFraction(0.125).sizes(9998).unwrap(), (8748, 1250));
        assert_eq!(SplitSize::TrainFraction(0.25).sizes(49994).unwrap(), (12498, 37496));
    }

    #[test]
    fn bad_requests_are_errors_that_say_why() {
        let err = NotebookSplit::new(&[0, 1, 0, 1], 1.5, 42).unwrap_err().to_string();
        assert!(err.contains("subset") && err.contains("1.5"), "{err}");
        let err = NotebookSplit::new(&[0, 1, 0, 1], 0.0, 42).unwrap_err().to_string();
        assert!(err.contains("subset"), "{err}");
        // A class with a single row cannot be stratified.
        let err =
            train_test_split(&[0, 0, 0, 1], SplitSize::TestFraction(0.5), 1, true).unwrap_err().to_string();
        assert!(err.contains("class 1 has 1 row"), "{err}");
        // Three classes cannot fit a 2-row test side.
        let labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2];
        let err = train_test_split(&labels, SplitSize::TestFraction(0.1), 1, true).unwrap_err().to_string();
        assert!(err.contains("test side would hold 2"), "{err}");
        let err = train_test_split(&[], SplitSize::TestFraction(0.1), 1, true).unwrap_err().to_string();
        assert!(err.contains("empty") || err.contains("no rows"), "{err}");
    }

    #[test]
    fn other_seeds_and_fractions_partition_the_pool() {
        let labels: Vec<u32> = (0..1000).map(|i| (i % 3 == 0) as u32).collect();
        for (subset, seed) in [(0.5, 0), (0.3, 7), (1.0, 123)] {
            let s = NotebookSplit::new(&labels, subset, seed).unwrap();
            let mut all: Vec<usize> = s.train.iter().chain(&s.val).chain(&s.test).copied().collect();
            all.sort_unstable();
            let mut pool = s.pool.clone();
            pool.sort_unstable();
            assert_eq!(all, pool);
            // Stratified: class shares stay within one row of the pool's.
            let share =
                |rows: &[usize]| rows.iter().filter(|&&r| labels[r] == 1).count() as f64 / rows.len() as f64;
            assert!((share(&s.test) - share(&s.pool)).abs() < 2.0 / s.test.len() as f64);
        }
    }
}
