//! Every way loading or splitting a dataset can fail, each naming the file, row, column or
//! setting at fault (a setting as its run-spec key, or as its flag through
//! [`NamesSettings::render`]).

use std::path::{Path, PathBuf};

use crate::Split;
use bertlab_run::format::abbreviate;
use bertlab_run::{NamesSettings, Setting, SettingStyle};

/// Where a row lies in its file, as the user finds it: parquet rows are counted from 0 (as
/// `pyarrow` and `datasets` index them), CSV and JSON Lines rows by the line they start on
/// (from 1, as editors number lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowUnit {
    /// A row index within a parquet file, from 0.
    #[default]
    Row,
    /// A line number within a text file, from 1.
    Line,
}

impl RowUnit {
    /// `row 3` or `line 4`.
    pub fn at(self, n: usize) -> String {
        match self {
            RowUnit::Row => format!("row {n}"),
            RowUnit::Line => format!("line {n}"),
        }
    }
}

/// Everything that can go wrong loading or splitting a dataset; each names what is at fault.
/// Its `Display` names settings as run-spec keys (`text_column`), [`NamesSettings::render`] as
/// either keys or flags (`--text-column`).
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
    #[error("{path}: is {what}, not a regular file; a dataset is read from parquet, CSV or JSON Lines files", path = path.display())]
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
    /// A line of a CSV or JSON Lines file that cannot be read as a row.
    #[error("{path}: line {line}: {message}", path = path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// What is wrong, and what to do.
        message: String,
    },
    /// A data file whose name says no format bertlab reads.
    #[error("{path}: not a data file bertlab reads: expected a name ending in .parquet, .csv, .tsv, .jsonl (or .json with one object per line)", path = path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
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
    #[error("{}", self.render(SettingStyle::Key))]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// `text` or `label`: what the column holds.
        role: &'static str,
        /// The columns that are there.
        found: Vec<String>,
    },
    /// A column has the wrong type.
    #[error("{path}: column `{column}` must be {want}, found {found}{hint}", path = path.display())]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The type wanted.
        want: &'static str,
        /// The type found.
        found: String,
        /// What to do, after a `; ` (or empty).
        hint: &'static str,
    },
    /// A null, missing or empty value where one is required.
    #[error("{path}: {place}: `{column}` is {what}; every row needs a text and a label: remove the row or fix the export",
            path = path.display(), place = unit.at(*row))]
    NullValue {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The row (parquet, from 0) or line (CSV, JSON Lines, from 1).
        row: usize,
        /// How `row` counts.
        unit: RowUnit,
        /// `null`, `null or missing` (JSON Lines) or `empty` (CSV).
        what: &'static str,
    },
    /// An empty or blank text (the tokenizer would make it `[CLS] [SEP]`).
    #[error("{path}: {place}: `{column}` is empty or only whitespace; a labelled example needs text: remove the row or fix the export",
            path = path.display(), place = unit.at(*row))]
    EmptyText {
        /// The file.
        path: PathBuf,
        /// The text column.
        column: String,
        /// The row (parquet, from 0) or line (CSV, JSON Lines, from 1).
        row: usize,
        /// How `row` counts.
        unit: RowUnit,
    },
    /// A file with no rows.
    #[error("{path}: the file is empty: it holds 0 rows, and every data file must hold labelled rows", path = path.display())]
    NoRows {
        /// The file.
        path: PathBuf,
    },
    /// A label that is not one of the class ids some file declares.
    #[error("{path}: {place}: label {label} is not a class id: {declared_by} declares {n} classes, ids 0..{last} = {names}",
            path = path.display(), place = unit.at(*row), declared_by = declared_by.display(), n = names.len(),
            last = names.len().saturating_sub(1), names = abbreviate(names))]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// The row (parquet, from 0) or line (CSV, JSON Lines, from 1).
        row: usize,
        /// How `row` counts.
        unit: RowUnit,
        /// The label value.
        label: i128,
        /// The class names.
        names: Vec<String>,
        /// The file whose `huggingface` metadata declares them.
        declared_by: PathBuf,
    },
    /// A string label that is not one of the class names some file declares.
    #[error("{path}: {place}: label {label:?} is not one of the {n} class names {declared_by} declares: {names}",
            path = path.display(), place = unit.at(*row), declared_by = declared_by.display(), n = names.len(),
            names = abbreviate(names))]
    UnknownLabel {
        /// The file.
        path: PathBuf,
        /// The row (parquet, from 0) or line (CSV, JSON Lines, from 1).
        row: usize,
        /// How `row` counts.
        unit: RowUnit,
        /// The label as written.
        label: String,
        /// The class names.
        names: Vec<String>,
        /// The file whose `huggingface` metadata declares them.
        declared_by: PathBuf,
    },
    /// Two spellings of one number as labels (`1` and `1.0`): they would be two classes.
    #[error("{path}: {place}: label {label:?} is the number {first:?} (another row's label) written another way: they would train as two classes; write each class one way",
            path = path.display(), place = unit.at(*row))]
    LabelSpellings {
        /// The file.
        path: PathBuf,
        /// The row (parquet, from 0) or line (CSV, JSON Lines, from 1).
        row: usize,
        /// How `row` counts.
        unit: RowUnit,
        /// The label as written there.
        label: String,
        /// The spelling met first.
        first: String,
    },
    /// Without declared class names: a label that cannot be a class id.
    #[error("{path}: {place}: label {label} is not a class id: without ClassLabel names in the files' `huggingface` metadata, labels must be class ids 0..k-1 with k at most {max}; {FIX_LABELS}",
            path = path.display(), place = unit.at(*row), max = bertlab_run::MAX_CLASSES)]
    NotAClassId {
        /// The file.
        path: PathBuf,
        /// The row (parquet, from 0) or line (CSV, JSON Lines, from 1).
        row: usize,
        /// How `row` counts.
        unit: RowUnit,
        /// The label value.
        label: i128,
    },
    /// Without declared class names: labels that skip class ids.
    #[error("{path}: {place}: label {label} implies classes 0 to {label}, but no row has label {missing}; without ClassLabel names in the files' `huggingface` metadata, labels must be 0..k-1 with every class present (else the missing classes train as classes no row has); {FIX_LABELS}",
            path = path.display(), place = unit.at(*row), missing = abbreviate(missing))]
    MissingClasses {
        /// The file.
        path: PathBuf,
        /// The first row with a label above a missing class (parquet, from 0; text files: its
        /// line, from 1).
        row: usize,
        /// How `row` counts.
        unit: RowUnit,
        /// The label value.
        label: i128,
        /// Class ids below `label` that no row has.
        missing: Vec<u32>,
    },
    /// Integer labels in one file, string labels in another, and no declared names to tie them.
    #[error("{ints} holds integer labels but {strings} holds string labels; the files of one dataset label their rows alike: class ids 0..k-1 everywhere, or class names everywhere",
            ints = ints.display(), strings = strings.display())]
    MixedLabelTypes {
        /// A file with integer labels.
        ints: PathBuf,
        /// A file with string labels.
        strings: PathBuf,
    },
    /// More distinct string labels than classes bertlab trains.
    #[error("{}", self.render(SettingStyle::Key))]
    TooManyClasses {
        /// The label column.
        column: String,
        /// How many distinct labels it holds.
        count: usize,
        /// The first file read.
        path: PathBuf,
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
    /// A dataset directory or Hub repository without data files in a layout bertlab knows.
    #[error("{place}: no data files in a layout bertlab knows: expected `data/{{split}}-*.parquet`, `<config>/{{split}}-*.parquet` (IMDB: `plain_text/train-*.parquet`), `{{split}}-*.parquet`, or `<config>/{{split}}/*.parquet` (a Hub `refs/convert/parquet` branch), with split train, validation (or valid, val, dev) or test; .csv, .tsv and .jsonl files are found the same way; {found}",
            found = if found.is_empty() { "it holds no files".to_string() } else { format!("it holds {}", abbreviate(found)) })]
    NoParquetFiles {
        /// The directory or repository searched.
        place: String,
        /// The files that are there.
        found: Vec<String>,
    },
    /// Data files found, but not one set of them: several configs, an unknown config, two
    /// spellings of one split, two formats.
    #[error("{place}: {message}")]
    Layout {
        /// The directory or repository searched.
        place: String,
        /// What is ambiguous or missing, and what to do.
        message: String,
    },
    /// A split the dataset does not have.
    #[error("{place}: no `{split}` split (splits found: {found})", found = found.join(", "))]
    NoSplit {
        /// The directory, repository or file.
        place: String,
        /// The split asked for.
        split: Split,
        /// The splits there are.
        found: Vec<String>,
    },
    /// `splits = "given"` on a dataset without a test split.
    #[error("{}", self.render(SettingStyle::Key))]
    NoTestSplit {
        /// The splits there are.
        found: Vec<&'static str>,
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
    /// A class with too few rows for a stratified split.
    #[error("{}", self.render(SettingStyle::Key))]
    ClassTooSmall {
        /// The rows being split, e.g. `the train split to a subset of 0.1`.
        rows: String,
        /// The class name.
        class: String,
        /// Its rows among those being split.
        count: usize,
    },
    /// `splits = "given"` with a class that only the validation or test split holds.
    #[error("{}", self.render(SettingStyle::Key))]
    ClassNotInTrain {
        /// The class name.
        class: String,
        /// `validation` or `test`.
        split: &'static str,
        /// Its rows there.
        count: usize,
    },
    /// A column option (`text_column`, `label_column`) that is empty.
    #[error("{}", self.render(SettingStyle::Key))]
    EmptyColumnName {
        /// The option.
        setting: Setting,
    },
    /// The text and the label column are one column.
    #[error("{}", self.render(SettingStyle::Key))]
    SameColumns {
        /// The column both name.
        column: String,
    },
    /// A dataset config (`dataset_config`) that is empty.
    #[error("{}", self.render(SettingStyle::Key))]
    EmptyConfig,
    /// A dataset config given for a single data file.
    #[error("{}", self.render(SettingStyle::Key))]
    ConfigOfOneFile {
        /// The file.
        path: PathBuf,
    },
    /// A dataset directory or Hub repository of several configs, and none chosen.
    #[error("{}", self.render(SettingStyle::Key))]
    SeveralConfigs {
        /// The directory or repository searched.
        place: String,
        /// Its configs (folders of data files).
        configs: Vec<String>,
    },
    /// A JSON Lines line whose text column is missing or not a string.
    #[error("{}", self.render(SettingStyle::Key))]
    TextNotAString {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// The text column.
        column: String,
        /// The line's fields when the column is missing (`None`: it is there, but not a string).
        fields: Option<Vec<String>>,
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
    /// A `source` that is neither `hub`, a Hub id nor a path.
    #[error(transparent)]
    BadSource(#[from] bertlab_run::BadSource),
    /// A `source` that names the Hub's IMDB (`imdb`, `hub`, …) where a folder of that name is.
    #[error("{}", self.render(SettingStyle::Key))]
    AmbiguousSource {
        /// The reference as written.
        reference: String,
    },
}

/// What to do about labels that are not class ids 0..k-1.
const FIX_LABELS: &str = "renumber the labels 0..k-1, or declare the class names as a ClassLabel \
    feature (datasets: `ds.cast_column(\"label\", ClassLabel(names=[...]))`, then save to parquet)";

impl NamesSettings for DataError {
    fn render(&self, style: SettingStyle) -> String {
        let notebook = style.with_text(Setting::splits, "notebook");
        match self {
            DataError::MissingColumn { path, column, role, found } => format!(
                "{}: no `{column}` column (columns: {}); name the {role} column with {}",
                path.display(),
                abbreviate(found),
                style.name(column_setting(role)),
            ),
            DataError::TooManyClasses { column, count, path } => format!(
                "`{column}` holds {count} distinct labels (the first in {}), above the limit of {} classes; is \
                 `{column}` the class column? Choose it with {}",
                path.display(),
                bertlab_run::MAX_CLASSES,
                style.name(Setting::label_column),
            ),
            DataError::NoTestSplit { found } => format!(
                "the dataset has no test split (its splits: {}); `{}` tests on the dataset's own test split: use \
                 `{notebook}` to split all its rows 70/10/20, or add a test split",
                found.join(", "),
                style.with_text(Setting::splits, "given"),
            ),
            DataError::ClassTooSmall { rows, class, count } => format!(
                "cannot split {rows}: class {class:?} has {count} row(s) there, and a stratified split needs at \
                 least 2 of every class; add rows of that class, use a larger {}, or remove the class",
                style.name(Setting::subset),
            ),
            DataError::ClassNotInTrain { class, split, count } => format!(
                "class {class:?} has no rows in the train split but {count} in the {split} split: a model cannot \
                 learn it from the train split; use `{notebook}` to split all rows together, or add train rows of it"
            ),
            DataError::EmptyColumnName { setting } => {
                format!("{} is empty: name a column of the data files", style.name(*setting))
            }
            DataError::SameColumns { column } => format!(
                "{} and {} are both `{column}`: the texts and the labels are two columns",
                style.name(Setting::text_column),
                style.name(Setting::label_column),
            ),
            DataError::EmptyConfig => format!(
                "{} is empty: name a config (a folder of the dataset's files), or leave it out",
                style.name(Setting::dataset_config)
            ),
            DataError::ConfigOfOneFile { path } => format!(
                "{config} chooses among the configs of a Hub dataset or a directory, but {} is one file: leave \
                 {config} out",
                path.display(),
                config = style.name(Setting::dataset_config),
            ),
            DataError::SeveralConfigs { place, configs } => format!(
                "{place}: the dataset has {} configs (folders of data files): {}; choose one with {}",
                configs.len(),
                abbreviate(configs),
                style.name(Setting::dataset_config),
            ),
            DataError::TextNotAString { path, line, column, fields } => {
                let what = match fields {
                    None => format!("`{column}` is not a string"),
                    Some(fields) => format!("no string `{column}` (fields: {})", fields.join(", ")),
                };
                format!(
                    "{}: line {line}: {what}; name the text column with {}",
                    path.display(),
                    style.name(Setting::text_column)
                )
            }
            DataError::BadSource(e) => e.render(style),
            DataError::AmbiguousSource { reference } => format!(
                "{}: names the Hub's IMDB, but a folder {reference} is here too: write ./{reference} for \
                 the folder, or hub:{} for the Hub's",
                style.with_text(Setting::source, reference),
                bertlab_run::IMDB_DATASET_ID
            ),
            _ => self.to_string(),
        }
    }
}

/// The setting that names the column of `role` (`text` or `label`).
fn column_setting(role: &str) -> Setting {
    if role == "text" {
        Setting::text_column
    } else {
        Setting::label_column
    }
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }
}
