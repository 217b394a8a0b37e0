//! Finding a dataset's split files in a file list: a Hub repository's listing, or the files
//! below a local directory, laid out as the Hub lays them out.
//!
//! A data file (`.parquet`, `.csv`, `.tsv`, `.jsonl`, `.json`) belongs to a split by its name or
//! its folder, and to a config by the folder above that:
//!
//! | file                              | config       | split  |
//! |-----------------------------------|--------------|--------|
//! | `data/train-00000-of-00001.parquet` | `default`  | train  |
//! | `train-00000-of-00001.parquet`    | `default`    | train  |
//! | `plain_text/test-00000-of-00001.parquet` | `plain_text` | test |
//! | `plain_text/test/0000.parquet` (`refs/convert/parquet`) | `plain_text` | test |
//!
//! A split name is the folder's name, else the file name up to its first `-` (or its whole
//! stem): `train`; `validation`, `valid`, `val`, `dev`; `test`. Files of other splits (IMDB's
//! `unsupervised`) and other files (`README.md`) are passed over.

use std::collections::BTreeMap;
use std::path::Path;

use crate::rows::Format;
use crate::{abbreviate, DataError, Split};

/// One data file of a split, relative to the dataset's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataFile {
    /// Relative path with `/` separators.
    pub rel: String,
    /// How it is read.
    pub format: Format,
}

/// The split files of the chosen config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The config's name.
    pub config: String,
    /// Each split: its name as the files spell it, and its files in shard order.
    pub splits: BTreeMap<Split, (String, Vec<DataFile>)>,
}

/// The config of the `data/` folder, and of files at the top: what `datasets` calls it.
const DEFAULT_CONFIG: &str = "default";

/// The split files in `files` (sorted relative paths), of `config` or of the only config there.
pub(crate) fn discover(files: &[String], config: Option<&str>, place: &str) -> Result<Layout, DataError> {
    // config → folder → split → (name as spelt, files)
    type Splits = BTreeMap<Split, BTreeMap<String, Vec<DataFile>>>;
    let mut configs: BTreeMap<String, BTreeMap<String, Splits>> = BTreeMap::new();
    for rel in files {
        let parts: Vec<&str> = rel.split('/').collect();
        let (file_name, folders) = parts.split_last().expect("split yields at least one part");
        if parts.iter().any(|p| p.starts_with('.')) {
            continue;
        }
        let Some(format) = Format::of_name(file_name) else { continue };
        let stem = &file_name[..file_name.rfind('.').expect("a data file name has an extension")];
        let (folder, split_name) = match folders.split_last() {
            Some((parent, above)) if Split::from_name(parent).is_some() => (above.join("/"), *parent),
            _ => (folders.join("/"), stem.split('-').next().unwrap_or(stem)),
        };
        let Some(split) = Split::from_name(split_name) else { continue };
        let config = match folder.as_str() {
            "" | "data" => DEFAULT_CONFIG.to_string(),
            other => other.to_string(),
        };
        configs
            .entry(config)
            .or_default()
            .entry(folder)
            .or_default()
            .entry(split)
            .or_default()
            .entry(split_name.to_string())
            .or_default()
            .push(DataFile { rel: rel.clone(), format });
    }
    if configs.is_empty() {
        return Err(DataError::NoParquetFiles { place: place.to_string(), found: files.to_vec() });
    }
    let layout_error = |message: String| DataError::Layout { place: place.to_string(), message };
    let names: Vec<String> = configs.keys().cloned().collect();
    let chosen = match config {
        Some(wanted) => match configs.remove_entry(wanted) {
            Some(entry) => entry,
            None => {
                return Err(layout_error(format!(
                    "no config `{wanted}`; its configs (folders of data files): {}",
                    abbreviate(&names)
                )))
            }
        },
        None if configs.len() == 1 => configs.pop_first().expect("one config"),
        None => return Err(DataError::SeveralConfigs { place: place.to_string(), configs: names }),
    };
    let (config, mut folders) = chosen;
    if folders.len() > 1 {
        let shown: Vec<String> = folders
            .keys()
            .map(|f| if f.is_empty() { "the top folder".into() } else { format!("`{f}/`") })
            .collect();
        return Err(layout_error(format!(
            "the files of config `{config}` lie in both {}; keep one of them",
            shown.join(" and ")
        )));
    }
    let (_, by_split) = folders.pop_first().expect("a config has a folder");
    let mut splits = BTreeMap::new();
    for (split, mut spellings) in by_split {
        if spellings.len() > 1 {
            let shown: Vec<String> = spellings.keys().map(|s| format!("`{s}`")).collect();
            return Err(layout_error(format!(
                "config `{config}` has {split} files named {}: one split, spelt two ways; rename the \
                 files of one of them",
                shown.join(" and ")
            )));
        }
        let (name, files) = spellings.pop_first().expect("a split has a spelling");
        if let Some(other) = files.iter().find(|f| f.format != files[0].format) {
            return Err(layout_error(format!(
                "split `{name}` of config `{config}` holds both {} and {} files ({} and {}); keep one format",
                files[0].format.name(),
                other.format.name(),
                files[0].rel,
                other.rel
            )));
        }
        splits.insert(split, (name, files));
    }
    Ok(Layout { config, splits })
}

/// How deep below a dataset directory data files are looked for: deeper than any Hub layout,
/// and a bound on symbolic links that loop.
const MAX_DEPTH: usize = 8;

/// The files below `dir` as sorted relative paths, for [`discover`]. A path with a data file's
/// name is listed whatever it is (a directory, a FIFO, a dangling link), so that reading it
/// reports what it is instead of the split silently going missing; hidden files and folders
/// (`.cache/huggingface` of `huggingface-cli download --local-dir`) are skipped.
pub(crate) fn walk_dir(dir: &Path) -> Result<Vec<String>, DataError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(DataError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            ))
        }
        Err(e) => return Err(DataError::io(dir, e)),
    }
    fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) -> Result<(), DataError> {
        let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| DataError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let path = entry.path();
            if Format::of_name(&name).is_some() || !path.is_dir() {
                out.push(rel);
            } else if depth < MAX_DEPTH {
                walk(&path, &rel, depth + 1, out)?;
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, "", 0, &mut files)?;
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(files: &[&str], config: Option<&str>) -> Result<Vec<(Split, String, Vec<String>)>, String> {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        let layout = discover(&files, config, "DATASET").map_err(|e| e.to_string())?;
        Ok(layout
            .splits
            .into_iter()
            .map(|(split, (name, files))| (split, name, files.into_iter().map(|f| f.rel).collect()))
            .collect())
    }

    fn owned(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_hub_layout_is_found() {
        let data = find(
            &[
                ".gitattributes",
                "README.md",
                "data/test-00000-of-00001.parquet",
                "data/train-00000-of-00002.parquet",
                "data/train-00001-of-00002.parquet",
                "data/validation-00000-of-00001.parquet",
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            data,
            [
                (
                    Split::Train,
                    "train".into(),
                    owned(&["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"])
                ),
                (Split::Validation, "validation".into(), owned(&["data/validation-00000-of-00001.parquet"])),
                (Split::Test, "test".into(), owned(&["data/test-00000-of-00001.parquet"])),
            ]
        );
        // IMDB: one config folder, an `unsupervised` split passed over.
        let imdb = find(
            &[
                "plain_text/test-00000-of-00001.parquet",
                "plain_text/train-00000-of-00001.parquet",
                "plain_text/unsupervised-00000-of-00001.parquet",
            ],
            None,
        )
        .unwrap();
        assert_eq!(imdb.iter().map(|s| s.0).collect::<Vec<_>>(), [Split::Train, Split::Test]);
        // The top folder, with `dev` for validation and a whole-stem name.
        let top = find(&["dev-0.csv", "train.csv"], None).unwrap();
        assert_eq!(
            top,
            [
                (Split::Train, "train".into(), owned(&["train.csv"])),
                (Split::Validation, "dev".into(), owned(&["dev-0.csv"]))
            ]
        );
        // The parquet conversion branch: split folders of numbered shards.
        let converted = find(
            &["default/test/0000.parquet", "default/train/0000.parquet", "default/train/0001.parquet"],
            Some("default"),
        )
        .unwrap();
        assert_eq!(converted[0].2, owned(&["default/train/0000.parquet", "default/train/0001.parquet"]));
        assert_eq!(converted[1].0, Split::Test);
    }

    #[test]
    fn configs_are_chosen_or_asked_for() {
        let files = [
            "ag/test/0000.parquet",
            "ag/train/0000.parquet",
            "mnli/train/0000.parquet",
            "mnli/validation_matched/0000.parquet",
        ];
        let err = find(&files, None).unwrap_err();
        assert_eq!(
            err,
            "DATASET: the dataset has 2 configs (folders of data files): ag, mnli; choose one with \
             `dataset_config`"
        );
        let files_owned: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        let err = discover(&files_owned, None, "DATASET").unwrap_err();
        assert_eq!(
            bertlab_run::NamesSettings::render(&err, bertlab_run::SettingStyle::Flag),
            "DATASET: the dataset has 2 configs (folders of data files): ag, mnli; choose one with --config"
        );
        // `validation_matched` is not a split bertlab knows: mnli has train only.
        assert_eq!(find(&files, Some("mnli")).unwrap().len(), 1);
        let err = find(&files, Some("imdb")).unwrap_err();
        assert_eq!(err, "DATASET: no config `imdb`; its configs (folders of data files): ag, mnli");
        // `data/` is the `default` config.
        assert_eq!(find(&["data/train.jsonl"], Some("default")).unwrap()[0].2, owned(&["data/train.jsonl"]));
    }

    #[test]
    fn ambiguous_layouts_are_errors_that_say_what_to_keep() {
        let err = find(&["data/train.parquet", "train.parquet"], None).unwrap_err();
        assert_eq!(
            err,
            "DATASET: the files of config `default` lie in both the top folder and `data/`; keep one of them"
        );
        let err =
            find(&["data/train.parquet", "data/val.parquet", "data/validation.parquet"], None).unwrap_err();
        assert_eq!(
            err,
            "DATASET: config `default` has validation files named `val` and `validation`: one split, \
             spelt two ways; rename the files of one of them"
        );
        let err = find(&["train-0.csv", "train-1.parquet"], None).unwrap_err();
        assert_eq!(
            err,
            "DATASET: split `train` of config `default` holds both CSV and parquet files (train-0.csv \
             and train-1.parquet); keep one format"
        );
        let err = find(&["README.md", "notes/unsupervised.parquet"], None).unwrap_err();
        assert!(
            err.starts_with(
                "DATASET: no data files in a layout bertlab knows: expected `data/{split}-*.parquet`"
            ),
            "{err}"
        );
        assert!(err.ends_with("it holds README.md, notes/unsupervised.parquet"), "{err}");
        let err = find(&[], None).unwrap_err();
        assert!(err.ends_with("; it holds no files"), "{err}");
    }
}
