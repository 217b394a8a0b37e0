#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;
mod layout;
mod parquet_io;
mod read;
pub mod rng;
mod rows;
mod source;
pub mod split;
mod text_io;
mod text_stream;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rows::Format;

pub use bertlab_hub::HubOptions;
use bertlab_hub::{RepoKind, RepoRef};
use bertlab_run::format::abbreviate;
use bertlab_run::Setting;
pub use bertlab_run::{SourceRef, SplitMode};
pub use error::{DataError, RowUnit};
pub use source::FileIdentity;
pub use split::{train_test_split, NotebookSplit, RunSplits, SplitSize, TrainTest};
pub use text_stream::{TextFormat, TextStream};

pub use bertlab_run::IMDB_DATASET_ID;
/// The dataset config whose parquet files hold the labelled reviews.
pub const IMDB_CONFIG: &str = "plain_text";
/// Pinned revision: "Convert dataset to Parquet", the first commit with the parquet layout.
pub const IMDB_REVISION: &str = "e6281661ce1c48d982bc483cf8a173c1bbeb5d31";

/// One of a dataset's labelled splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// `train` (24,998 IMDB rows in the shared copy).
    Train,
    /// `validation`; files named `valid`, `val` or `dev` are this split too.
    Validation,
    /// `test` (24,996 IMDB rows in the shared copy).
    Test,
}

impl Split {
    /// Every split, in the order [`DatasetSplits::joined`] joins them.
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// `train`, `validation` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }

    /// The split a file or folder of this name holds (`dev` → validation), if it is one.
    pub fn from_name(name: &str) -> Option<Split> {
        match name {
            "train" => Some(Split::Train),
            "validation" | "valid" | "val" | "dev" => Some(Split::Validation),
            "test" => Some(Split::Test),
            _ => None,
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
        Split::from_name(s).ok_or_else(|| {
            format!("split {s:?}: expected `train`, `validation` (or `valid`, `val`, `dev`) or `test`")
        })
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

    /// Rows per class among `rows` (row ids into `self`), index = class id.
    pub fn class_counts_of(&self, rows: &[usize]) -> Vec<usize> {
        let labels: Vec<u32> = rows.iter().map(|&r| self.labels[r]).collect();
        class_counts(&labels, self.class_names.len())
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

/// Whether `text` has nothing a BERT tokenizer keeps: only whitespace and control characters
/// (NUL, U+FFFD and the rest, which its normaliser drops), so that it would pack as `[CLS]
/// [SEP]`. A labelled row or a text to classify that is blank this way is refused.
pub fn is_blank_text(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || c.is_control() || c == '\u{fffd}')
}

/// Rows per class for `labels` with `num_classes` classes.
pub fn class_counts(labels: &[u32], num_classes: usize) -> Vec<usize> {
    let mut counts = vec![0; num_classes.max(labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0))];
    for &l in labels {
        counts[l as usize] += 1;
    }
    counts
}

/// How rows are read from a dataset's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOptions {
    /// The column (CSV header field, JSON key) holding the texts; default `text`.
    pub text_column: String,
    /// The column holding the labels, class ids or class names; default `label`.
    pub label_column: String,
    /// A Hub dataset's (or directory's) config, the folder of its files, when it has several;
    /// `default` is the config of the `data/` folder (or of files at the top).
    pub config: Option<String>,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions { text_column: "text".into(), label_column: "label".into(), config: None }
    }
}

impl DataOptions {
    /// The options a run's settings give (its columns and dataset config).
    pub fn of_spec(spec: &bertlab_run::RunSpec) -> DataOptions {
        DataOptions {
            text_column: spec.text_column.clone(),
            label_column: spec.label_column.clone(),
            config: spec.dataset_config.clone(),
        }
    }

    fn check(&self) -> Result<(), DataError> {
        let columns =
            [(Setting::text_column, &self.text_column), (Setting::label_column, &self.label_column)];
        for (setting, column) in columns {
            if column.trim().is_empty() {
                return Err(DataError::EmptyColumnName { setting });
            }
        }
        if self.text_column == self.label_column {
            return Err(DataError::SameColumns { column: self.text_column.clone() });
        }
        if self.config.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(DataError::EmptyConfig);
        }
        Ok(())
    }
}

/// A dataset's own splits; all share one `class_names`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetSplits {
    /// The `train` split.
    pub train: LabeledTexts,
    /// The `validation` split (files named `validation`, `valid`, `val` or `dev`), if any.
    pub validation: Option<LabeledTexts>,
    /// The `test` split, if any.
    pub test: Option<LabeledTexts>,
}

impl DatasetSplits {
    /// The class names, index = class id (the same in every split).
    pub fn class_names(&self) -> &[String] {
        &self.train.class_names
    }

    /// One split, if the dataset has it.
    pub fn split(&self, split: Split) -> Option<&LabeledTexts> {
        match split {
            Split::Train => Some(&self.train),
            Split::Validation => self.validation.as_ref(),
            Split::Test => self.test.as_ref(),
        }
    }

    /// The splits the dataset has, in joining order.
    pub fn present(&self) -> Vec<Split> {
        Split::ALL.into_iter().filter(|&s| self.split(s).is_some()).collect()
    }

    /// Rows in all splits.
    pub fn len(&self) -> usize {
        self.present().into_iter().filter_map(|s| self.split(s)).map(LabeledTexts::len).sum()
    }

    /// True when no split holds a row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The positions of `split`'s rows in [`DatasetSplits::joined`], if the dataset has it.
    pub fn rows_of(&self, split: Split) -> Option<std::ops::Range<usize>> {
        let mut start = 0;
        for s in Split::ALL {
            let Some(part) = self.split(s) else { continue };
            if s == split {
                return Some(start..start + part.len());
            }
            start += part.len();
        }
        None
    }

    /// The labels of [`DatasetSplits::joined`], without copying the texts.
    pub fn joined_labels(&self) -> Vec<u32> {
        self.present()
            .into_iter()
            .filter_map(|s| self.split(s))
            .flat_map(|p| p.labels.iter().copied())
            .collect()
    }

    /// train, then validation, then test rows, joined (the notebook's table: IMDB's
    /// train+test), with the source files of all of them in that order.
    pub fn joined(&self) -> LabeledTexts {
        self.clone().into_joined()
    }

    /// [`DatasetSplits::joined`] without copying the texts.
    pub fn into_joined(self) -> LabeledTexts {
        let DatasetSplits { train, validation, test } = self;
        let mut all = train;
        for part in [validation, test].into_iter().flatten() {
            all.texts.extend(part.texts);
            all.labels.extend(part.labels);
            all.sources.extend(part.sources);
        }
        all
    }
}

/// Where the labelled texts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSource {
    /// A Hub dataset, its data files found through its file list and downloaded into the HF
    /// cache.
    Hub {
        /// Dataset id, e.g. `stanfordnlp/imdb`.
        id: String,
        /// Branch, tag or commit, e.g. `main` or `refs/convert/parquet`.
        revision: String,
    },
    /// A directory of data files in a Hub layout, e.g. `<dir>/plain_text/{train,test}-*.parquet`
    /// or `<dir>/data/train-*.parquet`.
    LocalDir(PathBuf),
    /// One parquet, CSV, TSV or JSON Lines file: its rows are the `train` split.
    LocalFile(PathBuf),
}

impl Default for DatasetSource {
    fn default() -> Self {
        DatasetSource::Hub { id: IMDB_DATASET_ID.into(), revision: IMDB_REVISION.into() }
    }
}

impl fmt::Display for DatasetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetSource::Hub { id, revision } => write!(f, "hub:{id}@{revision}"),
            DatasetSource::LocalDir(path) | DatasetSource::LocalFile(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The split files a source resolved to.
struct Located {
    /// The directory, repository or file, for messages.
    place: String,
    /// The names of the splits found.
    found: Vec<String>,
    /// Each split's files, in shard order.
    splits: BTreeMap<Split, Vec<(PathBuf, Format)>>,
}

impl DatasetSource {
    /// `hub` (the pinned IMDB), `hub:ORG/NAME[@REV]`, a data file (an existing file, or a name
    /// ending in `.parquet`, `.csv`, `.tsv`, `.jsonl`, `.json`), or else a directory.
    pub fn parse(spec: &str) -> Result<DatasetSource, DataError> {
        Ok(match SourceRef::parse(spec)? {
            // `imdb` beside a folder `imdb/`: which one is meant is not for bertlab to guess.
            SourceRef::Imdb if std::path::Path::new(spec.trim()).is_dir() => {
                return Err(DataError::AmbiguousSource { reference: spec.trim().to_string() })
            }
            SourceRef::Imdb => DatasetSource::default(),
            SourceRef::Hub { id, revision } => {
                let revision = revision.unwrap_or_else(|| {
                    if id == IMDB_DATASET_ID { IMDB_REVISION } else { "main" }.to_string()
                });
                DatasetSource::Hub { id, revision }
            }
            SourceRef::Path(path) => {
                let is_file = match std::fs::metadata(&path) {
                    Ok(meta) => !meta.is_dir(),
                    Err(_) => Format::of_path(&path).is_some(),
                };
                if is_file {
                    DatasetSource::LocalFile(path)
                } else {
                    DatasetSource::LocalDir(path)
                }
            }
        })
    }

    /// Find the files of the `wanted` splits (downloading them from the Hub when needed).
    fn locate(&self, config: Option<&str>, wanted: &[Split], hub: &HubOptions) -> Result<Located, DataError> {
        let place = self.to_string();
        let (layout, base) = match self {
            DatasetSource::LocalFile(path) => {
                if config.is_some() {
                    return Err(DataError::ConfigOfOneFile { path: path.clone() });
                }
                let format =
                    Format::of_path(path).ok_or_else(|| DataError::UnknownFormat { path: path.clone() })?;
                let mut splits = BTreeMap::new();
                if wanted.contains(&Split::Train) {
                    splits.insert(Split::Train, vec![(path.clone(), format)]);
                }
                return Ok(Located { place, found: vec![Split::Train.name().to_string()], splits });
            }
            DatasetSource::LocalDir(dir) => {
                let files = layout::walk_dir(dir)?;
                (layout::discover(&files, config, &place)?, None)
            }
            DatasetSource::Hub { id, revision } => {
                let repo = RepoRef::hub(id.clone(), RepoKind::Dataset, revision.clone());
                let files = match known_files(id, revision) {
                    Some(files) => files,
                    None => repo.list_files(hub)?,
                };
                (layout::discover(&files, config, &place)?, Some(repo))
            }
        };
        let found = layout.splits.values().map(|(name, _)| name.clone()).collect();
        let mut splits = BTreeMap::new();
        for (split, (_, files)) in layout.splits {
            if !wanted.contains(&split) {
                continue;
            }
            let mut paths = Vec::with_capacity(files.len());
            for file in files {
                let path = match (&base, self) {
                    (Some(repo), _) => repo.file(&file.rel, hub)?,
                    (None, DatasetSource::LocalDir(dir)) => dir.join(&file.rel),
                    (None, _) => unreachable!("only a directory or the Hub is searched"),
                };
                paths.push((path, file.format));
            }
            splits.insert(split, paths);
        }
        Ok(Located { place, found, splits })
    }

    /// Paths of the data files of `split`, in shard order (resolving or downloading them), with
    /// the default [`DataOptions`].
    pub fn split_files(&self, split: Split, hub: &HubOptions) -> Result<Vec<PathBuf>, DataError> {
        let mut located = self.locate(None, &[split], hub)?;
        match located.splits.remove(&split) {
            Some(files) => Ok(files.into_iter().map(|(path, _)| path).collect()),
            None => Err(DataError::NoSplit { place: located.place, split, found: located.found }),
        }
    }

    /// One labelled split (all its shards, in order), read alone with the default
    /// [`DataOptions`]: without declared names, its class names come from its own labels
    /// ([`DatasetSource::load_splits`] gives every split the names of all of them).
    pub fn load_split(&self, split: Split, hub: &HubOptions) -> Result<LabeledTexts, DataError> {
        let options = DataOptions::default();
        let mut located = self.locate(None, &[split], hub)?;
        let Some(files) = located.splits.remove(&split) else {
            return Err(DataError::NoSplit { place: located.place, split, found: located.found });
        };
        let mut parts = read::read_all(&files, &options)?;
        Ok(rows::assemble(&mut parts, &[files.len()], &options)?.remove(0))
    }

    /// The dataset's train, validation and test splits, read with `options`. Class names are
    /// the ones the files declare (`ClassLabel`), else the sorted distinct string labels of all
    /// splits, else (integer labels) `"0"`…`"k-1"` with every class present in some split.
    pub fn load_splits(&self, options: &DataOptions, hub: &HubOptions) -> Result<DatasetSplits, DataError> {
        let mut located = self.locate_splits(options, hub)?;
        let present: Vec<Split> = located.splits.keys().copied().collect();
        let files: Vec<Vec<(PathBuf, Format)>> =
            present.iter().map(|s| located.splits.remove(s).expect("a key of the map")).collect();
        let counts: Vec<usize> = files.iter().map(Vec::len).collect();
        let all: Vec<(PathBuf, Format)> = files.into_iter().flatten().collect();
        let mut parts = read::read_all(&all, options)?;
        let mut by_split = rows::assemble(&mut parts, &counts, options)?.into_iter();
        let mut splits = DatasetSplits::default();
        for split in present {
            let data = by_split.next().expect("one LabeledTexts per split");
            match split {
                Split::Train => splits.train = data,
                Split::Validation => splits.validation = Some(data),
                Split::Test => splits.test = Some(data),
            }
        }
        Ok(splits)
    }

    /// The checked options' split files, a train split among them.
    fn locate_splits(&self, options: &DataOptions, hub: &HubOptions) -> Result<Located, DataError> {
        options.check()?;
        let located = self.locate(options.config.as_deref(), &Split::ALL, hub)?;
        if !located.splits.contains_key(&Split::Train) {
            return Err(DataError::NoSplit {
                place: located.place,
                split: Split::Train,
                found: located.found,
            });
        }
        Ok(located)
    }

    /// What [`load_splits`](Self::load_splits) finds before it reads a row, checked for a local
    /// source: the options, the file or the directory's layout (config and splits, a train split
    /// among them) and that every split file is there. The same errors as loading, without
    /// reading the data (a plan's check). Returns `false`, checking nothing, for a Hub source,
    /// whose file list needs the network or the cache.
    pub fn check_local(&self, options: &DataOptions) -> Result<bool, DataError> {
        if matches!(self, DatasetSource::Hub { .. }) {
            return Ok(false);
        }
        let located = self.locate_splits(options, &HubOptions { offline: true, ..HubOptions::default() })?;
        for (path, _) in located.splits.values().flatten() {
            std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        }
        Ok(true)
    }

    /// All rows, train then validation then test, joined as the notebook does before splitting
    /// (`load_splits(&DataOptions::default(), hub)?.into_joined()`).
    pub fn load(&self, hub: &HubOptions) -> Result<LabeledTexts, DataError> {
        Ok(self.load_splits(&DataOptions::default(), hub)?.into_joined())
    }
}

/// The data files of a Hub revision that cannot change, so that loading it needs no listing
/// request and works offline from a cache holding only these files.
fn known_files(id: &str, revision: &str) -> Option<Vec<String>> {
    (id == IMDB_DATASET_ID && revision == IMDB_REVISION).then(|| {
        ["test", "train", "unsupervised"]
            .iter()
            .map(|split| format!("{IMDB_CONFIG}/{split}-00000-of-00001.parquet"))
            .collect()
    })
}

/// Read parquet files of `text` and `label` columns (in parallel) and join their rows in the
/// order given.
///
/// Class names come from the `ClassLabel` feature of the files' `huggingface` metadata; files
/// that declare names must agree, and every label of every file (declaring or not) must be an
/// id of those classes. Where no file declares names, labels must be 0..k-1 with every class
/// present and k at most [`bertlab_run::MAX_CLASSES`]; the names are then `"0"`, `"1"`, ….
/// String labels are class names, sorted.
pub fn load_files(files: &[PathBuf]) -> Result<LabeledTexts, DataError> {
    let options = DataOptions::default();
    let files: Vec<(PathBuf, Format)> = files.iter().map(|f| (f.clone(), Format::Parquet)).collect();
    let mut parts = read::read_all(&files, &options)?;
    Ok(rows::assemble(&mut parts, &[files.len()], &options)?.remove(0))
}

/// Write `data` as one parquet file in the Hub's format (`text`, `label` and the `ClassLabel`
/// names in the `huggingface` schema metadata), atomically; [`load_files`] reads it back as is.
/// Two such files, `<dir>/plain_text/train-00000-of-00001.parquet` and `test-…`, make a
/// directory that `DatasetSource::LocalDir(dir)` loads, e.g. a small sample of IMDB.
pub fn write_parquet(path: &Path, data: &LabeledTexts) -> Result<(), DataError> {
    parquet_io::write_labeled_parquet(path, data)
}

#[cfg(test)]
mod tests;
