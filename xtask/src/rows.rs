//! Split sizes of a local dataset, counted before its runs by `bertlab data split --json` (the
//! data crate's own reading and recipe; xtask reads no data files itself), so that a plan's
//! tokens and times are those of the data rather than IMDB's assumed in their place.

use bertlab_pipeline::estimate::SplitSizes;
use bertlab_run::{RunSpec, SourceRef};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Counts the splits of local datasets with a `bertlab` binary, once per data selection.
#[derive(Default)]
pub struct RowCounter {
    /// The binary, once known (given with `--bertlab`, or built).
    bertlab: OnceLock<PathBuf>,
    /// Sizes by the `bertlab data split` arguments that counted them (`None`: it could not).
    counted: Mutex<HashMap<Vec<String>, Option<SplitSizes>>>,
}

impl RowCounter {
    /// Count with `bertlab` from now on (the first binary given is kept).
    pub fn use_bertlab(&self, bertlab: &Path) {
        let _ = self.bertlab.set(bertlab.to_path_buf());
    }

    /// The sizes of `spec`'s splits when its source (resolved) is a local file or directory and a
    /// binary is known; `None` otherwise, or when bertlab cannot read the data (the run itself
    /// then says why).
    pub fn count(&self, spec: &RunSpec) -> Option<SplitSizes> {
        let bertlab = self.bertlab.get()?;
        match SourceRef::parse(&spec.source) {
            Ok(SourceRef::Path(path)) if path.exists() => {}
            _ => return None,
        }
        let args = split_args(spec);
        if let Some(sizes) = self.counted.lock().expect("row counts lock").get(&args) {
            return *sizes;
        }
        let out = Command::new(bertlab).args(&args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok();
        let sizes = out.filter(|o| o.status.success()).and_then(|o| parse_split_json(&o.stdout));
        self.counted.lock().expect("row counts lock").insert(args, sizes);
        sizes
    }
}

/// `bertlab data split --json` with `spec`'s data selection: the source, columns, config and
/// split recipe that decide the sizes.
fn split_args(spec: &RunSpec) -> Vec<String> {
    let mut args: Vec<String> =
        ["data", "split", "--json", "--source", &spec.source].map(String::from).to_vec();
    args.extend([
        "--text-column".into(),
        spec.text_column.clone(),
        "--label-column".into(),
        spec.label_column.clone(),
    ]);
    if let Some(config) = &spec.dataset_config {
        args.extend(["--config".into(), config.clone()]);
    }
    args.extend([
        "--splits".into(),
        spec.splits.to_string(),
        "--subset".into(),
        spec.subset.to_string(),
        "--seed".into(),
        spec.seed.to_string(),
    ]);
    args
}

/// `{"pool": N, "train": [ids], "val": [ids], "test": [ids]}` as sizes.
fn parse_split_json(text: &[u8]) -> Option<SplitSizes> {
    let value: serde_json::Value = serde_json::from_slice(text).ok()?;
    let len = |key: &str| value[key].as_array().map(Vec::len);
    Some(SplitSizes {
        pool: value["pool"].as_u64()? as usize,
        train: len("train")?,
        val: len("val")?,
        test: len("test")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_the_whole_data_selection_and_the_answer_parses() {
        let spec = RunSpec {
            source: "/data/reviews".into(),
            dataset_config: Some("en".into()),
            subset: 0.25,
            seed: 7,
            ..RunSpec::default()
        };
        assert_eq!(
            split_args(&spec).join(" "),
            "data split --json --source /data/reviews --text-column text --label-column label --config en \
             --splits notebook --subset 0.25 --seed 7"
        );
        let sizes = parse_split_json(br#"{"pool": 7, "train": [0, 1, 2, 3], "val": [4], "test": [5, 6]}"#);
        assert_eq!(sizes, Some(SplitSizes { pool: 7, train: 4, val: 1, test: 2 }));
        assert_eq!(parse_split_json(b"error: no such file"), None);
        assert_eq!(parse_split_json(br#"{"pool": 7, "train": [0]}"#), None);
    }

    #[test]
    fn only_local_data_is_counted_and_only_with_a_binary() {
        let dir = tempfile::tempdir().unwrap();
        let counter = RowCounter::default();
        let local = RunSpec { source: dir.path().display().to_string(), ..RunSpec::default() };
        assert_eq!(counter.count(&local), None, "no binary yet");
        // A binary that cannot count (`false`) leaves the sizes unknown, and is asked once.
        counter.use_bertlab(Path::new("false"));
        assert_eq!(counter.count(&local), None);
        assert_eq!(counter.counted.lock().unwrap().len(), 1);
        assert_eq!(counter.count(&RunSpec { source: "hub".into(), ..RunSpec::default() }), None);
        assert_eq!(counter.counted.lock().unwrap().len(), 1, "the Hub's data is not read for a plan");
    }
}
