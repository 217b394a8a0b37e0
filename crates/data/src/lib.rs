#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod parquet_io;
pub mod rng;
mod source;
pub mod split;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use bertlab_hub::HubOptions;
use bertlab_hub::{RepoKind, RepoRef};
pub use source::FileIdentity;
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
    #[error("{path}: cannot read it: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A data path is a directory, a FIFO, a socket, a device or a dangling symbolic link.
    #[error("{path}: is {what}, not a regular file; a dataset is read from parquet files", path = path.display())]
    NotARegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        what: String,
    },
    /// The file's size or modification time changed while it was being read.
    #[error("{path}: changed while it was being read ({what}); wait until whatever writes it has finished, then run again", path = path.display())]
    ChangedWhileReading {
        /// The file.
        path: PathBuf,
        /// What changed.
        what: String,
    },
    /// The file's size or modification time differs from when it was read
    /// ([`FileIdentity::check_unchanged`]).
    #[error(transparent)]
    ChangedSinceRead(#[from] bertlab_run::identity::FileChanged),
    /// The file is not a readable parquet file.
    #[error("{path}: not a readable parquet file: {message}; if it was downloaded or copied, it may be truncated: fetch it again", path = path.display())]
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
    #[error("{path}: column `{column}` must be {want}, found {found}{hint}", path = path.display())]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
        /// The type wanted.
        want: &'static str,
        /// The type found.
        found: String,
        /// What to do, after a `; ` (or empty).
        hint: &'static str,
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
    /// An empty or blank text (the tokenizer would make it `[CLS] [SEP]`).
    #[error("{path}: row {row}: `text` is empty or only whitespace; a labelled review needs text: remove the row or fix the export", path = path.display())]
    EmptyText {
        /// The file.
        path: PathBuf,
        /// Row within the file (0-based).
        row: usize,
    },
    /// A file with no rows.
    #[error("{path}: the file is empty: it holds 0 rows, and every data file must hold labelled rows", path = path.display())]
    NoRows {
        /// The file.
        path: PathBuf,
    },
    /// A label that is not one of the class ids some file declares.
    #[error("{path}: row {row}: label {label} is not a class id: {declared_by} declares {n} classes, ids 0..{last} = {names}",
            path = path.display(), declared_by = declared_by.display(), n = names.len(),
            last = names.len().saturating_sub(1), names = abbreviate(names))]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Row within the file (0-based).
        row: usize,
        /// The label value.
        label: i128,
        /// The class names.
        names: Vec<String>,
        /// The file whose `huggingface` metadata declares them.
        declared_by: PathBuf,
    },
    /// Without declared class names: a label that cannot be a class id.
    #[error("{path}: row {row}: label {label} is not a class id: without ClassLabel names in the files' `huggingface` metadata, labels must be class ids 0..k-1 with k at most {max}; {FIX_LABELS}",
            path = path.display(), max = bertlab_run::MAX_CLASSES)]
    NotAClassId {
        /// The file.
        path: PathBuf,
        /// Row within the file (0-based).
        row: usize,
        /// The label value.
        label: i128,
    },
    /// Without declared class names: labels that skip class ids.
    #[error("{path}: row {row}: label {label} implies classes 0 to {label}, but no row has label {missing}; without ClassLabel names in the files' `huggingface` metadata, labels must be 0..k-1 with every class present (else the missing classes train as classes no row has); {FIX_LABELS}",
            path = path.display(), missing = abbreviate(missing))]
    MissingClasses {
        /// The file.
        path: PathBuf,
        /// Row within the file (0-based): the first with a label above a missing class.
        row: usize,
        /// The label value.
        label: i128,
        /// Class ids below `label` that no row has.
        missing: Vec<u32>,
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
    /// A `--source` that is neither `hub`, a Hub id nor a directory.
    #[error("--source {0:?}: expected `hub` (stanfordnlp/imdb), `hub:ORG/NAME[@REVISION]`, or a directory holding plain_text/*.parquet")]
    BadSource(String),
}

/// What to do about labels that are not class ids 0..k-1.
const FIX_LABELS: &str = "renumber the labels 0..k-1, or declare the class names as a ClassLabel \
    feature (datasets: `ds.cast_column(\"label\", ClassLabel(names=[...]))`, then save to parquet)";

impl DataError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }
}

/// At most eight items of a list, then how many there are in all.
fn abbreviate<T: fmt::Display>(items: &[T]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<String> = items.iter().take(SHOWN).map(ToString::to_string).collect();
    if items.len() > SHOWN {
        format!("{}, … ({} in all)", head.join(", "), items.len())
    } else {
        head.join(", ")
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
    /// The files the rows were read from, in order, with the identity of their content.
    pub sources: Vec<FileIdentity>,
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

    /// The rows `rows` (row ids into `self`), in that order (same sources).
    pub fn select(&self, rows: &[usize]) -> LabeledTexts {
        LabeledTexts {
            texts: rows.iter().map(|&r| self.texts[r].clone()).collect(),
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
            class_names: self.class_names.clone(),
            sources: self.sources.clone(),
        }
    }

    /// One identity of the data read: SHA-256 (hex) over the size and content hash of each
    /// source file, in order. It depends on the bytes only, not on where the files lie.
    pub fn content_digest(&self) -> String {
        bertlab_run::identity::files_digest(&self.sources)
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

/// Read parquet files (in parallel) and join their rows in the order given.
///
/// Class names come from the `ClassLabel` feature of the files' `huggingface` metadata; files
/// that declare names must agree, and every label of every file (declaring or not) must be an
/// id of those classes. Where no file declares names, labels must be 0..k-1 with every class
/// present and k at most [`bertlab_run::MAX_CLASSES`]; the names are then `"0"`, `"1"`, ….
pub fn load_files(files: &[PathBuf]) -> Result<LabeledTexts, DataError> {
    // Decoding is CPU-bound (snappy + UTF-8 validation): one thread per file.
    let parts: Vec<Result<parquet_io::ParquetRows, DataError>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            files.iter().map(|f| s.spawn(move || parquet_io::read_labeled_parquet(f))).collect();
        handles
            .into_iter()
            .zip(files)
            .map(|(h, f)| {
                // A reader that panics on a malformed file is a corrupt file to the user.
                h.join().unwrap_or_else(|_| {
                    Err(DataError::NotParquet {
                        path: f.clone(),
                        message: "the parquet reader failed on it (see the message above)".into(),
                    })
                })
            })
            .collect()
    });
    let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
    if parts.is_empty() {
        return Err(DataError::Empty { what: "the dataset (no files)".into() });
    }
    let class_names = match declared_class_names(&parts)? {
        Some((names, declared_by)) => {
            for part in &parts {
                let n = names.len() as i128;
                if let Some((row, &label)) =
                    part.labels.iter().enumerate().find(|(_, &l)| !(0..n).contains(&l))
                {
                    return Err(DataError::LabelOutOfRange {
                        path: part.source.path.clone(),
                        row,
                        label,
                        names: names.clone(),
                        declared_by: declared_by.to_path_buf(),
                    });
                }
            }
            names.clone()
        }
        None => undeclared_class_names(&parts)?,
    };
    let mut data = LabeledTexts { class_names, ..LabeledTexts::default() };
    for part in parts {
        data.texts.extend(part.texts);
        // Every label was checked to lie in 0..class_names.len() ≤ MAX_CLASSES.
        data.labels.extend(part.labels.iter().map(|&l| l as u32));
        data.sources.push(part.source);
    }
    Ok(data)
}

/// The class names the files declare, and the first file declaring them; an error when two
/// files declare different names.
fn declared_class_names(
    parts: &[parquet_io::ParquetRows],
) -> Result<Option<(&Vec<String>, &Path)>, DataError> {
    let mut declared: Option<(&Vec<String>, &Path)> = None;
    for part in parts {
        let Some(names) = &part.class_names else { continue };
        match declared {
            None => declared = Some((names, &part.source.path)),
            Some((first, by)) if first != names => {
                return Err(DataError::ClassNamesDiffer {
                    a: by.to_path_buf(),
                    a_names: first.clone(),
                    b: part.source.path.clone(),
                    b_names: names.clone(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(declared)
}

/// Class names `"0"`, `"1"`, … for files that declare none, after checking that the labels of
/// all of them together are 0..k-1 with every class present.
fn undeclared_class_names(parts: &[parquet_io::ParquetRows]) -> Result<Vec<String>, DataError> {
    let max = bertlab_run::MAX_CLASSES as i128;
    let mut present = Vec::new();
    for part in parts {
        for (row, &label) in part.labels.iter().enumerate() {
            if !(0..max).contains(&label) {
                return Err(DataError::NotAClassId { path: part.source.path.clone(), row, label });
            }
            let class = label as usize;
            if class >= present.len() {
                present.resize(class + 1, false);
            }
            present[class] = true;
        }
    }
    let missing: Vec<u32> = (0..present.len()).filter(|&c| !present[c]).map(|c| c as u32).collect();
    if let Some(&first_missing) = missing.first() {
        let (part, row, label) = parts
            .iter()
            .find_map(|part| {
                let (row, &label) =
                    part.labels.iter().enumerate().find(|(_, &l)| l > i128::from(first_missing))?;
                Some((part, row, label))
            })
            .expect("a class is missing below the largest label, which some row holds");
        let missing = missing.into_iter().filter(|&c| i128::from(c) < label).collect();
        return Err(DataError::MissingClasses { path: part.source.path.clone(), row, label, missing });
    }
    Ok((0..present.len()).map(|c| c.to_string()).collect())
}

#[cfg(test)]
mod tests;
