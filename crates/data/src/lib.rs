#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod parquet_io;
pub mod rng;
pub mod split;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use bertlab_hub::HubOptions;
use bertlab_hub::{RepoKind, RepoRef};
pub use split::{train_test_split, NotebookSplit, SplitSize, TrainTest};

/// The Hub dataset the notebook loads with `load_dataset("imdb")`.
pub const IMDB_DATASET_ID: &str = "stanfordnlp/imdb";
/// The dataset config whose parquet files hold the labelled reviews.
pub const IMDB_CONFIG: &str = "plain_text";
/// Pinned revision: "Convert dataset to Parquet", the first commit with the parquet layout.
pub const IMDB_REVISION: &str = "e6281661ce1c48d982bc483cf8a173c1bbeb5d31";

/// Everything that can go wrong loading or splitting a dataset; each names what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable parquet file.
    #[error("{path}: not a readable parquet file: {message}", path = path.display())]
    NotParquet {
        /// The file.
        path: PathBuf,
        /// What the parquet reader said.
        message: String,
    },
    /// The `huggingface` schema metadata is malformed.
    #[error("{path}: {message}", path = path.display())]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A required column is absent.
    #[error("{path}: no `{column}` column (columns: {found})", path = path.display(), found = found.join(", "))]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// `text` or `label`.
        column: &'static str,
        /// The columns that are there.
        found: Vec<String>,
    },
    /// A column has the wrong type.
    #[error("{path}: column `{column}` must be {want}, found {found}", path = path.display())]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
        /// The type wanted.
        want: &'static str,
        /// The type found.
        found: String,
    },
    /// A null where a value is required.
    #[error("{path}: row {row}: `{column}` is null", path = path.display())]
    NullValue {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
        /// Row within the file (0-based).
        row: usize,
    },
    /// A label that is not one of the class ids.
    #[error("{path}: row {row}: label {label} is not a class id (classes 0..{n}: {names})",
            path = path.display(), n = names.len(), names = names.join(", "))]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Row within the file (0-based).
        row: usize,
        /// The label value.
        label: i64,
        /// The class names.
        names: Vec<String>,
    },
    /// The train and test files disagree about the class names.
    #[error("{a} declares classes [{an}] but {b} declares [{bn}]", a = a.display(), b = b.display(), an = a_names.join(", "), bn = b_names.join(", "))]
    ClassNamesDiffer {
        /// First file.
        a: PathBuf,
        /// Its names.
        a_names: Vec<String>,
        /// Second file.
        b: PathBuf,
        /// Its names.
        b_names: Vec<String>,
    },
    /// Nothing to work with.
    #[error("{what} is empty")]
    Empty {
        /// What is empty.
        what: String,
    },
    /// The dataset directory lacks the expected parquet files.
    #[error("{dir}: no `{pattern}` file (expected the Hub layout `<config>/train-*.parquet` and `<config>/test-*.parquet`, e.g. shared/data/hf-imdb)", dir = dir.display())]
    NoParquetFiles {
        /// The directory searched.
        dir: PathBuf,
        /// The pattern that matched nothing.
        pattern: String,
    },
    /// A fraction outside (0, 1] (or (0, 1) for `train_size`/`test_size`).
    #[error("{name} = {value} is out of range: it must be a fraction in (0, 1]")]
    BadFraction {
        /// `subset`, `train_size` or `test_size`.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A split that cannot hold what it must.
    #[error("cannot split: {what}")]
    SplitTooSmall {
        /// Why.
        what: String,
    },
    /// A Hub file could not be resolved.
    #[error(transparent)]
    Hub(#[from] bertlab_hub::HubError),
    /// A parquet file could not be written.
    #[error("{path}: cannot write parquet: {message}", path = path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the parquet writer or the file system said.
        message: String,
    },
    /// A `--source` that is neither `hub`, a Hub id nor a directory.
    #[error("--source {0:?}: expected `hub` (stanfordnlp/imdb), `hub:ORG/NAME[@REVISION]`, or a directory holding plain_text/*.parquet")]
    BadSource(String),
}

impl DataError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }
}

/// One of the dataset's two labelled splits on the Hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// `train` (24,998 IMDB rows in the shared copy).
    Train,
    /// `test` (24,996 IMDB rows in the shared copy).
    Test,
}

impl Split {
    /// `train` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            other => Err(format!("split {other:?}: expected `train` or `test`")),
        }
    }
}

/// Texts with integer class labels and the class names (e.g. `neg`, `pos`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabeledTexts {
    /// The texts, in row order.
    pub texts: Vec<String>,
    /// Class id of each text, an index into `class_names`.
    pub labels: Vec<u32>,
    /// Class names, index = class id.
    pub class_names: Vec<String>,
}

impl LabeledTexts {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Rows per class, index = class id.
    pub fn class_counts(&self) -> Vec<usize> {
        class_counts(&self.labels, self.class_names.len())
    }

    /// The rows `rows` (row ids into `self`), in that order.
    pub fn select(&self, rows: &[usize]) -> LabeledTexts {
        LabeledTexts {
            texts: rows.iter().map(|&r| self.texts[r].clone()).collect(),
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
            class_names: self.class_names.clone(),
        }
    }

    fn append(&mut self, other: LabeledTexts) {
        self.texts.extend(other.texts);
        self.labels.extend(other.labels);
    }
}

/// Rows per class for `labels` with `num_classes` classes.
pub fn class_counts(labels: &[u32], num_classes: usize) -> Vec<usize> {
    let mut counts = vec![0; num_classes.max(labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0))];
    for &l in labels {
        counts[l as usize] += 1;
    }
    counts
}

/// Where the labelled reviews come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSource {
    /// A Hub dataset in the parquet layout, downloaded into the HF cache.
    Hub {
        /// Dataset id, e.g. `stanfordnlp/imdb`.
        id: String,
        /// Config folder holding the parquet files, e.g. `plain_text`.
        config: String,
        /// Pinned revision.
        revision: String,
    },
    /// A directory in the Hub layout: `<dir>/plain_text/{train,test}-*.parquet` (or the parquet
    /// files directly in `<dir>`).
    LocalDir(PathBuf),
}

impl Default for DatasetSource {
    fn default() -> Self {
        DatasetSource::Hub {
            id: IMDB_DATASET_ID.into(),
            config: IMDB_CONFIG.into(),
            revision: IMDB_REVISION.into(),
        }
    }
}

impl fmt::Display for DatasetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetSource::Hub { id, revision, .. } => write!(f, "hub:{id}@{revision}"),
            DatasetSource::LocalDir(dir) => write!(f, "{}", dir.display()),
        }
    }
}

impl DatasetSource {
    /// `hub` (the pinned IMDB), `hub:ORG/NAME[@REV]`, or a local directory.
    pub fn parse(spec: &str) -> Result<DatasetSource, DataError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(DataError::BadSource(spec.into()));
        }
        if spec == "hub" || spec == IMDB_DATASET_ID || spec == "imdb" {
            return Ok(DatasetSource::default());
        }
        if let Some(rest) = spec.strip_prefix("hub:") {
            let (id, revision) = match rest.split_once('@') {
                Some((id, rev)) => (id, rev.to_string()),
                None if rest == IMDB_DATASET_ID => (rest, IMDB_REVISION.to_string()),
                None => (rest, "main".to_string()),
            };
            if id.split('/').count() != 2 || id.split('/').any(str::is_empty) {
                return Err(DataError::BadSource(spec.into()));
            }
            return Ok(DatasetSource::Hub { id: id.into(), config: IMDB_CONFIG.into(), revision });
        }
        Ok(DatasetSource::LocalDir(PathBuf::from(spec)))
    }

    /// Paths of the parquet files of `split`, in shard order (resolving or downloading them).
    pub fn split_files(&self, split: Split, hub: &HubOptions) -> Result<Vec<PathBuf>, DataError> {
        match self {
            DatasetSource::Hub { id, config, revision } => {
                let repo = RepoRef::hub(id.clone(), RepoKind::Dataset, revision.clone());
                let file = format!("{config}/{}-00000-of-00001.parquet", split.name());
                Ok(vec![repo.file(&file, hub)?])
            }
            DatasetSource::LocalDir(dir) => {
                if !dir.is_dir() {
                    return Err(DataError::io(
                        dir,
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
                    ));
                }
                let prefix = format!("{}-", split.name());
                for candidate in [dir.join(IMDB_CONFIG), dir.to_path_buf()] {
                    let Ok(entries) = std::fs::read_dir(&candidate) else { continue };
                    let mut files: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| {
                            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                            name.starts_with(&prefix) && name.ends_with(".parquet")
                        })
                        .collect();
                    if !files.is_empty() {
                        files.sort();
                        return Ok(files);
                    }
                }
                Err(DataError::NoParquetFiles {
                    dir: dir.clone(),
                    pattern: format!("{IMDB_CONFIG}/{prefix}*.parquet"),
                })
            }
        }
    }

    /// One labelled split (all its shards, in order).
    pub fn load_split(&self, split: Split, hub: &HubOptions) -> Result<LabeledTexts, DataError> {
        let files = self.split_files(split, hub)?;
        load_files(&files)
    }

    /// Train rows then test rows, joined as the notebook does before splitting.
    pub fn load(&self, hub: &HubOptions) -> Result<LabeledTexts, DataError> {
        let mut files = self.split_files(Split::Train, hub)?;
        files.extend(self.split_files(Split::Test, hub)?);
        load_files(&files)
    }
}

/// Write `data` as one parquet file in the Hub's format (`text`, `label` and the `ClassLabel`
/// names in the `huggingface` schema metadata), atomically; [`load_files`] reads it back as is.
/// Two such files, `<dir>/plain_text/train-00000-of-00001.parquet` and `test-…`, make a
/// directory that `DatasetSource::LocalDir(dir)` loads, e.g. a small sample of IMDB.
pub fn write_parquet(path: &Path, data: &LabeledTexts) -> Result<(), DataError> {
    parquet_io::write_labeled_parquet(path, data)
}

/// Read parquet files (in parallel) and join their rows in the order given.
pub fn load_files(files: &[PathBuf]) -> Result<LabeledTexts, DataError> {
    // Decoding is CPU-bound (snappy + UTF-8 validation): one thread per file.
    let parts: Vec<Result<parquet_io::ParquetRows, DataError>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            files.iter().map(|f| s.spawn(move || parquet_io::read_labeled_parquet(f))).collect();
        handles.into_iter().map(|h| h.join().expect("parquet reader thread panicked")).collect()
    });
    let mut joined: Option<(LabeledTexts, PathBuf, bool)> = None;
    for (path, part) in files.iter().zip(parts) {
        let part = part?;
        let declared = part.class_names.is_some();
        let names = part.class_names.clone().unwrap_or_else(|| {
            let max = part.labels.iter().copied().max().unwrap_or(-1);
            (0..=max.max(0)).map(|i| i.to_string()).collect()
        });
        if let Some((acc, first, first_declared)) = &joined {
            if declared && *first_declared && acc.class_names != names {
                return Err(DataError::ClassNamesDiffer {
                    a: first.clone(),
                    a_names: acc.class_names.clone(),
                    b: path.clone(),
                    b_names: names,
                });
            }
        }
        let labels = validate_labels(path, &part.labels, &names, declared)?;
        let texts = LabeledTexts { texts: part.texts, labels, class_names: names };
        match &mut joined {
            None => joined = Some((texts, path.clone(), declared)),
            Some((acc, _, acc_declared)) => {
                if texts.class_names.len() > acc.class_names.len() && !*acc_declared {
                    acc.class_names = texts.class_names.clone();
                }
                acc.append(texts);
            }
        }
    }
    let data = joined.map(|(d, _, _)| d).unwrap_or_default();
    if data.is_empty() {
        let what = match files {
            [] => "the dataset (no files)".to_string(),
            [f] => format!("{}", f.display()),
            fs => format!("the dataset ({} files, first {})", fs.len(), fs[0].display()),
        };
        return Err(DataError::Empty { what });
    }
    Ok(data)
}

fn validate_labels(
    path: &Path,
    labels: &[i64],
    names: &[String],
    declared: bool,
) -> Result<Vec<u32>, DataError> {
    let limit = if declared { names.len() as i64 } else { i64::from(u32::MAX) };
    labels
        .iter()
        .enumerate()
        .map(|(row, &label)| {
            if (0..limit).contains(&label) {
                Ok(label as u32)
            } else {
                Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    row,
                    label,
                    names: names.to_vec(),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
