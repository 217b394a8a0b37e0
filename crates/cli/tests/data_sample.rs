//! `bertlab data sample`: a subset's pool written as a small dataset in the Hub layout, which
//! `--source` reads back as the same rows (scripts/device-prepare.sh carries one to the GPU).

use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{shared, BIN};

fn bertlab(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).env("HF_HUB_OFFLINE", "1").output().expect("run bertlab");
    assert!(
        out.status.success(),
        "bertlab {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn a_sample_holds_the_pool_of_its_subset() {
    let Some(shared) = shared() else { return };
    let source = shared.join("data/hf-imdb");
    let source = source.to_str().unwrap();
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("data-sample-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let written = stdout(&bertlab(&["data", "sample", "--source", source, "--subset", "0.01", "--out", out]));
    assert!(written.contains("499 rows") && written.contains("[250, 249]"), "{written}");
    for split in ["train", "test"] {
        assert!(dir.join(format!("plain_text/{split}-00000-of-00001.parquet")).is_file(), "{split}");
    }

    // The whole sample is the pool: its own split at subset 1 has the sizes of the subset's.
    let summary = stdout(&bertlab(&["data", "summary", "--source", out, "--subset", "1"]));
    assert!(summary.contains("Pool after SUBSET_FRAC=1: 499 (of 499)"), "{summary}");
    assert!(summary.contains("Classes: neg, pos"), "{summary}");
    let whole = stdout(&bertlab(&["data", "summary", "--source", source, "--subset", "0.01"]));
    let sizes = |s: &str| s.lines().find(|l| l.starts_with("Train:")).unwrap().to_string();
    assert_eq!(sizes(&summary), sizes(&whole));

    // Same rows: the pool's rows of the whole dataset, in row order, train rows first.
    let split: Value = serde_json::from_str(&stdout(&bertlab(&[
        "data", "split", "--source", source, "--subset", "0.01", "--json",
    ])))
    .unwrap();
    let mut pool: Vec<usize> = ["train", "val", "test"]
        .iter()
        .flat_map(|k| split[*k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize))
        .collect();
    pool.sort_unstable();
    let hub = bertlab_data::HubOptions::default();
    let all = bertlab_data::DatasetSource::LocalDir(shared.join("data/hf-imdb")).load(&hub).unwrap();
    let sample = bertlab_data::DatasetSource::LocalDir(dir.clone()).load(&hub).unwrap();
    let want = all.select(&pool);
    assert_eq!(sample.texts, want.texts);
    assert_eq!(sample.labels, want.labels);
    assert_eq!(sample.class_names, want.class_names);
    // A sample is never written over the files it is drawn from (at a subset below 1 they
    // would be lost): refused as a flag's value, the sample as it was.
    let before = std::fs::read(dir.join("plain_text/train-00000-of-00001.parquet")).unwrap();
    let again = Command::new(BIN)
        .args(["data", "sample", "--source", out, "--subset", "0.5", "--out", out])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("a file of --source"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("plain_text/train-00000-of-00001.parquet")).unwrap(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rows_out_writes_each_splits_rows_in_order() {
    let Some(shared) = shared() else { return };
    let source = shared.join("data/hf-imdb");
    let source = source.to_str().unwrap();
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("rows-out-{}.jsonl", std::process::id()));
    let split: Value = serde_json::from_str(&stdout(&bertlab(&[
        "data",
        "split",
        "--source",
        source,
        "--subset",
        "0.01",
        "--json",
        "--rows-out",
        file.to_str().unwrap(),
    ])))
    .unwrap();
    let hub = bertlab_data::HubOptions::default();
    let all = bertlab_data::DatasetSource::LocalDir(shared.join("data/hf-imdb")).load(&hub).unwrap();
    let lines: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The split's rows, split by split in the order `data split` lists them: the text and the
    // class id of each row id.
    let want: Vec<(&str, usize)> = ["train", "val", "test"]
        .iter()
        .flat_map(|k| split[*k].as_array().unwrap().iter().map(move |v| (*k, v.as_u64().unwrap() as usize)))
        .collect();
    assert_eq!(lines.len(), want.len());
    assert_eq!(want.iter().filter(|(k, _)| *k == "train").count(), 349);
    for (line, (name, row)) in lines.iter().zip(&want) {
        assert_eq!(line["split"], *name);
        assert_eq!(line["text"], all.texts[*row].as_str());
        assert_eq!(line["label"].as_u64(), Some(all.labels[*row] as u64));
    }
    let _ = std::fs::remove_file(&file);
}
