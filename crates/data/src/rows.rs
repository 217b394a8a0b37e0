//! The rows of data files in any format, and the class names and ids of their labels.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::source::FileIdentity;
use crate::{DataError, DataOptions, LabeledTexts, RowUnit};

/// How a data file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Format {
    /// Apache Parquet, as `datasets` and the Hub write it.
    Parquet,
    /// Comma-separated values with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// One JSON object per line.
    JsonLines,
}

impl Format {
    /// The format a file name says, if it says one bertlab reads.
    pub fn of_name(name: &str) -> Option<Format> {
        let (_, extension) = name.rsplit_once('.')?;
        match extension.to_ascii_lowercase().as_str() {
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "tsv" => Some(Format::Tsv),
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            _ => None,
        }
    }

    /// [`Format::of_name`] of the path's file name.
    pub fn of_path(path: &Path) -> Option<Format> {
        Format::of_name(path.file_name()?.to_str()?)
    }

    /// As messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "CSV",
            Format::Tsv => "TSV",
            Format::JsonLines => "JSON Lines",
        }
    }
}

/// Labels as a file stores them.
#[derive(Debug)]
pub(crate) enum Labels {
    /// Class ids; every integer width fits `i128` exactly, so an error can quote any label.
    Ints(Vec<i128>),
    /// Class names.
    Strings(Vec<String>),
}

/// The rows of one data file, before its labels become class ids.
#[derive(Debug)]
pub(crate) struct FileRows {
    pub texts: Vec<String>,
    pub labels: Labels,
    /// `ClassLabel` names from a parquet file's `huggingface` schema metadata, if any.
    pub class_names: Option<Vec<String>>,
    /// The file and the identity of the bytes parsed.
    pub source: FileIdentity,
    /// The line each row starts on (text formats); `None`: rows are counted from 0 (parquet).
    pub lines: Option<Vec<usize>>,
}

impl FileRows {
    /// Where row `i` lies, as the user finds it.
    pub fn place(&self, i: usize) -> (RowUnit, usize) {
        match &self.lines {
            Some(lines) => (RowUnit::Line, lines[i]),
            None => (RowUnit::Row, i),
        }
    }

    fn path(&self) -> &Path {
        &self.source.path
    }
}

/// Give every part class ids under one set of class names, then join consecutive parts into
/// groups of `group_sizes` parts (a dataset's splits).
///
/// Class names: those the files declare (`ClassLabel`), which every file's labels must then be
/// ids or names of; else, for string labels, the sorted distinct labels of all parts; else
/// (integer labels) `"0"`…`"k-1"`, with every class present in some part.
pub(crate) fn assemble(
    parts: &mut [FileRows],
    group_sizes: &[usize],
    options: &DataOptions,
) -> Result<Vec<LabeledTexts>, DataError> {
    debug_assert_eq!(group_sizes.iter().sum::<usize>(), parts.len());
    let class_names = class_names(parts, options)?;
    let ids: HashMap<&str, u32> =
        class_names.iter().enumerate().map(|(i, n)| (n.as_str(), i as u32)).collect();
    let mut labels = Vec::with_capacity(parts.len());
    for part in parts.iter() {
        // Every label was checked above: an id below class_names.len() ≤ MAX_CLASSES, or a name.
        labels.push(match &part.labels {
            Labels::Ints(values) => values.iter().map(|&l| l as u32).collect::<Vec<u32>>(),
            Labels::Strings(values) => values.iter().map(|l| ids[l.as_str()]).collect(),
        });
    }
    let mut groups = Vec::with_capacity(group_sizes.len());
    let mut next = parts.iter_mut().zip(labels);
    for &size in group_sizes {
        let mut data = LabeledTexts { class_names: class_names.clone(), ..LabeledTexts::default() };
        for (part, labels) in next.by_ref().take(size) {
            data.texts.extend(std::mem::take(&mut part.texts));
            data.labels.extend(labels);
            data.sources.push(part.source.clone());
        }
        groups.push(data);
    }
    Ok(groups)
}

fn class_names(parts: &[FileRows], options: &DataOptions) -> Result<Vec<String>, DataError> {
    if let Some((names, declared_by)) = declared_class_names(parts)? {
        check_declared(parts, names, declared_by)?;
        return Ok(names.clone());
    }
    let ints = parts.iter().find(|p| matches!(p.labels, Labels::Ints(_)));
    let strings = parts.iter().find(|p| matches!(p.labels, Labels::Strings(_)));
    match (ints, strings) {
        (Some(ints), Some(strings)) => Err(DataError::MixedLabelTypes {
            ints: ints.path().to_path_buf(),
            strings: strings.path().to_path_buf(),
        }),
        (None, Some(_)) => string_class_names(parts, options),
        _ => undeclared_class_names(parts),
    }
}

/// The class names the files declare, and the first file declaring them; an error when two
/// files declare different names.
fn declared_class_names(parts: &[FileRows]) -> Result<Option<(&Vec<String>, &Path)>, DataError> {
    let mut declared: Option<(&Vec<String>, &Path)> = None;
    for part in parts {
        let Some(names) = &part.class_names else { continue };
        match declared {
            None => declared = Some((names, part.path())),
            Some((first, by)) if first != names => {
                return Err(DataError::ClassNamesDiffer {
                    a: by.to_path_buf(),
                    a_names: first.clone(),
                    b: part.path().to_path_buf(),
                    b_names: names.clone(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(declared)
}

/// Every label of every file, declaring or not, must be an id or a name of the declared classes.
fn check_declared(parts: &[FileRows], names: &[String], declared_by: &Path) -> Result<(), DataError> {
    let n = names.len() as i128;
    let known: HashSet<&str> = names.iter().map(String::as_str).collect();
    for part in parts {
        let bad = match &part.labels {
            Labels::Ints(values) => values.iter().position(|l| !(0..n).contains(l)),
            Labels::Strings(values) => values.iter().position(|l| !known.contains(l.as_str())),
        };
        let Some(i) = bad else { continue };
        let (unit, row) = part.place(i);
        let (path, names, declared_by) =
            (part.path().to_path_buf(), names.to_vec(), declared_by.to_path_buf());
        return Err(match &part.labels {
            Labels::Ints(values) => {
                DataError::LabelOutOfRange { path, row, unit, label: values[i], names, declared_by }
            }
            Labels::Strings(values) => {
                DataError::UnknownLabel { path, row, unit, label: values[i].clone(), names, declared_by }
            }
        });
    }
    Ok(())
}

/// The sorted distinct string labels of all parts (Python's `sorted(set(labels))`: UTF-8 byte
/// order is code point order).
fn string_class_names(parts: &[FileRows], options: &DataOptions) -> Result<Vec<String>, DataError> {
    let mut names: Vec<&str> = parts
        .iter()
        .flat_map(|p| match &p.labels {
            Labels::Strings(values) => values.as_slice(),
            Labels::Ints(_) => &[],
        })
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.dedup();
    check_number_spellings(parts, &names)?;
    if names.len() > bertlab_run::MAX_CLASSES {
        return Err(DataError::TooManyClasses {
            column: options.label_column.clone(),
            count: names.len(),
            path: parts[0].path().to_path_buf(),
        });
    }
    Ok(names.into_iter().map(str::to_owned).collect())
}

/// String labels (a text file's are always strings) that are one number spelled two ways, `1`
/// and `1.0`, are refused: each spelling would be a class of its own.
fn check_number_spellings(parts: &[FileRows], names: &[&str]) -> Result<(), DataError> {
    let number = |s: &str| s.trim().parse::<f64>().ok().filter(|x| x.is_finite()).map(f64::to_bits);
    let mut spelled: HashMap<u64, &str> = HashMap::new();
    let mut clash = false;
    for name in names {
        if let Some(x) = number(name) {
            clash |= spelled.insert(x, name).is_some();
        }
    }
    if !clash {
        return Ok(());
    }
    // Name the first row whose spelling differs from the first row's of that number.
    let mut first: HashMap<u64, &str> = HashMap::new();
    for part in parts {
        let Labels::Strings(values) = &part.labels else { continue };
        for (i, label) in values.iter().enumerate() {
            let Some(x) = number(label) else { continue };
            let seen = *first.entry(x).or_insert(label.as_str());
            if seen != label {
                let (unit, row) = part.place(i);
                return Err(DataError::LabelSpellings {
                    path: part.path().to_path_buf(),
                    row,
                    unit,
                    label: label.clone(),
                    first: seen.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// A part's integer labels (none where they are strings).
fn ints(part: &FileRows) -> &[i128] {
    match &part.labels {
        Labels::Ints(values) => values,
        Labels::Strings(_) => &[],
    }
}

/// Class names `"0"`, `"1"`, … for files that declare none, after checking that the labels of
/// all of them together are 0..k-1 with every class present.
fn undeclared_class_names(parts: &[FileRows]) -> Result<Vec<String>, DataError> {
    let max = bertlab_run::MAX_CLASSES as i128;
    let mut present = Vec::new();
    for part in parts {
        for (i, &label) in ints(part).iter().enumerate() {
            if !(0..max).contains(&label) {
                let (unit, row) = part.place(i);
                return Err(DataError::NotAClassId { path: part.path().to_path_buf(), row, unit, label });
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
        let (part, i, label) = parts
            .iter()
            .find_map(|part| {
                let (i, &label) =
                    ints(part).iter().enumerate().find(|(_, &l)| l > i128::from(first_missing))?;
                Some((part, i, label))
            })
            .expect("a class is missing below the largest label, which some row holds");
        let missing = missing.into_iter().filter(|&c| i128::from(c) < label).collect();
        let (unit, row) = part.place(i);
        return Err(DataError::MissingClasses { path: part.path().to_path_buf(), row, unit, label, missing });
    }
    Ok((0..present.len()).map(|c| c.to_string()).collect())
}
