//! End to end on a dataset that is not IMDB: four news topics with string labels under other
//! column names, made by the test as a parquet dataset in the Hub's `data/` layout, one CSV file
//! and a directory of JSON Lines files. `cargo xtask run` trains a head-less tiny DistilBERT on
//! each (given splits, the notebook's recipe, a validation split of the dataset's own) and writes
//! the report; `bertlab eval` and `bertlab predict --file` then run on a run's `best/`.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bertlab_tests::{build_binaries, workspace_root};
use serde_json::Value;

/// The classes, in the order bertlab must give them: sorted, as Python's `sorted` would.
const TOPICS: [&str; 4] = ["business", "sci/tech", "sports", "world"];

/// Words that mark each topic (all in bert-base-uncased's vocabulary), and filler shared by all.
const WORDS: [&[&str]; 4] = [
    &["market", "shares", "profit", "bank", "stocks", "investors", "trade", "economy"],
    &["software", "computer", "internet", "science", "researchers", "space", "chip", "data"],
    &["game", "team", "season", "coach", "players", "league", "match", "championship"],
    &["president", "government", "minister", "election", "war", "troops", "talks", "capital"],
];
const FILLER: [&str; 8] = ["the", "said", "on", "new", "after", "week", "a", "report"];

/// Rows per topic of each split of the made datasets.
const TRAIN_PER_TOPIC: usize = 30;
const VALIDATION_PER_TOPIC: usize = 5;
const TEST_PER_TOPIC: usize = 10;

/// A headline of `topic`: 6 topic words and 4 filler words, from a small deterministic generator.
fn headline(topic: usize, row: usize) -> String {
    let mut state = (topic as u64 + 1) * 1_000_003 + row as u64 * 7919;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n
    };
    let mut words: Vec<&str> = Vec::new();
    for i in 0..10 {
        if i % 5 == 2 || i % 5 == 4 {
            words.push(FILLER[next(FILLER.len())]);
        } else {
            words.push(WORDS[topic][next(WORDS[topic].len())]);
        }
    }
    words.join(" ")
}

/// `(headline, topic)` rows of one split, topics interleaved; `offset` keeps splits apart.
fn rows(per_topic: usize, offset: usize) -> Vec<(String, &'static str)> {
    (0..per_topic)
        .flat_map(|i| (0..TOPICS.len()).map(move |t| (headline(t, offset + i), TOPICS[t])))
        .collect()
}

/// A parquet file with `headline` and `topic` string columns and no `ClassLabel` metadata.
fn write_parquet(path: &Path, rows: &[(String, &str)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("headline", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
    ]));
    let texts: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str())));
    let topics: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1)));
    let batch = RecordBatch::try_new(schema.clone(), vec![texts, topics]).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// A CSV with a header `id,headline,topic` (headlines quoted, one with a comma inside).
fn write_csv(path: &Path, rows: &[(String, &str)]) {
    let mut text = String::from("id,headline,topic\n");
    for (i, (headline, topic)) in rows.iter().enumerate() {
        let headline = if i == 0 { format!("{headline}, again") } else { headline.clone() };
        text.push_str(&format!("{i},\"{headline}\",{topic}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn write_jsonl(path: &Path, rows: &[(String, &str)]) {
    let text: String = rows
        .iter()
        .map(|(headline, topic)| format!("{}\n", serde_json::json!({"headline": headline, "topic": topic})))
        .collect();
    std::fs::write(path, text).unwrap();
}

fn bertlab(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run bertlab")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every `record.json` under `out`, by the name of its run directory.
fn records(out: &Path) -> BTreeMap<String, (PathBuf, Value)> {
    let mut found = BTreeMap::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "record.json") {
                let name = dir.file_name().unwrap().to_string_lossy().into_owned();
                found.insert(name, (dir.clone(), json_file(&path)));
            }
        }
    }
    found
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|n| n.as_u64().unwrap()).collect()
}

#[test]
fn four_topics_from_parquet_csv_and_jsonl_train_evaluate_predict_and_report() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        if std::env::var("BERTLAB_REQUIRE_SHARED").is_ok_and(|v| v == "1") {
            panic!("BERTLAB_REQUIRE_SHARED=1 but the shared fixtures were not found (set BERTLAB_SHARED)");
        }
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let (xtask, bin) = build_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    // The parquet dataset: data/train and data/test (no validation: carved from train).
    let parquet_dir = root.join("news-parquet");
    write_parquet(&parquet_dir.join("data/train-00000-of-00001.parquet"), &rows(TRAIN_PER_TOPIC, 0));
    write_parquet(&parquet_dir.join("data/test-00000-of-00001.parquet"), &rows(TEST_PER_TOPIC, 1000));
    // One CSV of every row: the notebook's recipe splits it.
    let csv = root.join("news.csv");
    write_csv(&csv, &rows(TRAIN_PER_TOPIC + TEST_PER_TOPIC, 0));
    // JSON Lines with the dataset's own validation split.
    let jsonl_dir = root.join("news-jsonl");
    std::fs::create_dir_all(&jsonl_dir).unwrap();
    write_jsonl(&jsonl_dir.join("train.jsonl"), &rows(TRAIN_PER_TOPIC, 0));
    write_jsonl(&jsonl_dir.join("validation.jsonl"), &rows(VALIDATION_PER_TOPIC, 500));
    write_jsonl(&jsonl_dir.join("test.jsonl"), &rows(TEST_PER_TOPIC, 1000));

    let model = shared.join("fixtures/tiny-distilbert");
    let pipeline = root.join("news-e2e.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"title = "Four news topics from parquet, CSV and JSON Lines"

[models]
tiny = "{model}"

[defaults]
model = "tiny"
text_column = "headline"
label_column = "topic"
seed = 7
epochs = 10
patience = 10
lr = 3e-3
batch = 16
max_len = 16
eval_batch = 64
optimizer = "adamw"

[[problem]]
id = "topics"
title = "Topic classification, three file formats"
runs = [
  {{ source = "{parquet}", splits = "given" }},
  {{ source = "{csv}", splits = "notebook" }},
  {{ source = "{jsonl}", splits = "given" }},
]
"#,
            model = model.display(),
            parquet = parquet_dir.display(),
            csv = csv.display(),
            jsonl = jsonl_dir.display(),
        ),
    )
    .unwrap();

    let out = root.join("results");
    let run = Command::new(&xtask)
        .arg("run")
        .arg(&pipeline)
        .args(["--backend", "cpu", "--out"])
        .arg(&out)
        .arg("--bertlab")
        .arg(&bin)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .expect("run xtask");
    assert!(run.status.success(), "xtask run failed:\n{}", String::from_utf8_lossy(&run.stderr));

    let records = records(&out);
    assert_eq!(records.len(), 3, "one record per run: {:?}", records.keys());
    let mut by_source = BTreeMap::new();
    for (dir, record) in records.values() {
        assert_eq!(record["status"], "completed", "{record}");
        let data = &record["data"];
        assert_eq!(strings(&data["class_names"]), TOPICS, "{data}");
        let counts = &data["class_counts"];
        let (train, val, test) =
            (numbers(&counts["train"]), numbers(&counts["val"]), numbers(&counts["test"]));
        assert_eq!(train.iter().sum::<u64>(), data["train"].as_u64().unwrap());
        assert_eq!(val.iter().sum::<u64>(), data["val"].as_u64().unwrap());
        assert_eq!(test.iter().sum::<u64>(), data["test"].as_u64().unwrap());
        // Stratified: every topic is in every split.
        assert!(train.iter().chain(&val).chain(&test).all(|&c| c > 0), "{counts}");
        let t = &record["test"];
        assert_eq!(t["per_class"].as_array().unwrap().len(), 4, "{t}");
        let confusion: Vec<Vec<u64>> = t["confusion"].as_array().unwrap().iter().map(numbers).collect();
        assert_eq!(confusion.len(), 4);
        assert!(confusion.iter().all(|row| row.len() == 4));
        for (class, row) in confusion.iter().enumerate() {
            assert_eq!(row.iter().sum::<u64>(), test[class], "true {} rows of the confusion", TOPICS[class]);
        }
        let accuracy = t["accuracy"].as_f64().unwrap();
        let correct: u64 = (0..4).map(|c| confusion[c][c]).sum();
        assert!((accuracy - correct as f64 / data["test"].as_f64().unwrap()).abs() < 1e-12, "{t}");
        for key in ["macro_f1", "weighted_f1", "loss"] {
            assert!(t[key].as_f64().unwrap().is_finite(), "{key}: {t}");
        }
        // The exported model names its classes as the data does.
        let config = json_file(&dir.join("best/config.json"));
        assert_eq!(config["num_labels"].as_u64(), Some(4), "{config}");
        for (i, topic) in TOPICS.iter().enumerate() {
            assert_eq!(config["id2label"][i.to_string()], *topic, "{config}");
            assert_eq!(config["label2id"][topic], i, "{config}");
        }
        let source = record["spec"]["source"].as_str().unwrap().to_string();
        by_source.insert(source, (dir.clone(), record.clone()));
    }

    // Which rows each way of splitting used.
    let (parquet_run, parquet_record) = &by_source[&parquet_dir.display().to_string()];
    let d = &parquet_record["data"];
    // Given splits: the whole test split; validation carved from train (12.5 %, stratified).
    assert_eq!(d["test"], 4 * TEST_PER_TOPIC as u64, "{d}");
    assert_eq!(d["val"], 15, "{d}");
    assert_eq!(d["train"], 4 * TRAIN_PER_TOPIC as u64 - 15, "{d}");
    let d = &by_source[&csv.display().to_string()].1["data"];
    // The notebook's recipe on 160 rows: 80/20, then 87.5/12.5.
    assert_eq!(
        (d["train"].as_u64(), d["val"].as_u64(), d["test"].as_u64()),
        (Some(112), Some(16), Some(32)),
        "{d}"
    );
    let d = &by_source[&jsonl_dir.display().to_string()].1["data"];
    assert_eq!(
        (d["train"].as_u64(), d["val"].as_u64(), d["test"].as_u64()),
        (Some(120), Some(20), Some(40)),
        "{d}"
    );

    // The tiny model learns the topics (measured: 100 % on every test split, chance is 25 %).
    for (source, (_, record)) in &by_source {
        let accuracy = record["test"]["accuracy"].as_f64().unwrap();
        eprintln!("{source}: test accuracy {accuracy}, macro F1 {}", record["test"]["macro_f1"]);
        assert!(accuracy >= 0.9, "{source}: test accuracy {accuracy}");
    }

    // The report: per-class table with the topic names, macro F1 in the CSV.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for topic in TOPICS {
        assert!(report.contains(topic), "report.md lacks {topic}:\n{report}");
    }
    assert!(report.to_lowercase().contains("macro"), "{report}");
    let csv_out = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv_out.lines().next().unwrap().contains("test_macro_f1"), "{csv_out}");

    // `bertlab eval` on the parquet run's best/: its source, columns and splits from the record.
    let best = parquet_run.join("best");
    let best = best.to_str().unwrap();
    let eval = ok(bertlab(&bin, &["eval", "--model", best, "--json"]), "eval");
    let metrics: Value = serde_json::from_str(&eval).unwrap();
    assert_eq!(metrics["n"], 4 * TEST_PER_TOPIC as u64, "{metrics}");
    assert_eq!(metrics["accuracy"], parquet_record["test"]["accuracy"], "eval repeats the run's test");
    assert_eq!(metrics["confusion"], parquet_record["test"]["confusion"]);
    // ... and on another source with other column names, given explicitly.
    let eval = ok(
        bertlab(
            &bin,
            &[
                "eval",
                "--model",
                best,
                "--source",
                jsonl_dir.to_str().unwrap(),
                "--splits",
                "given",
                "--split",
                "val",
                "--json",
            ],
        ),
        "eval on the JSON Lines validation split",
    );
    let metrics: Value = serde_json::from_str(&eval).unwrap();
    assert_eq!(metrics["n"], 4 * VALIDATION_PER_TOPIC as u64, "{metrics}");
    // A label column that is not there: the error lists the columns present.
    let out_err = bertlab(&bin, &["eval", "--model", best, "--label-column", "category"]);
    assert_eq!(out_err.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out_err.stderr);
    assert!(err.contains("category") && err.contains("headline") && err.contains("topic"), "{err}");

    // `bertlab predict --file`: a CSV of headlines to CSV predictions.
    let to_label = root.join("to-label.csv");
    write_csv(&to_label, &rows(3, 2000));
    let predictions = root.join("predictions.csv");
    ok(
        bertlab(
            &bin,
            &[
                "predict",
                "--model",
                best,
                "--file",
                to_label.to_str().unwrap(),
                "--text-column",
                "headline",
                "--max-len",
                "16",
                "--output",
                predictions.to_str().unwrap(),
            ],
        ),
        "predict --file",
    );
    let text = std::fs::read_to_string(&predictions).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    for topic in TOPICS {
        assert!(header.contains(topic), "{header}");
    }
    let body: Vec<&str> = lines.collect();
    assert_eq!(body.len(), 12, "{text}");
    let mut right = 0;
    for (i, line) in body.iter().enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 3 + 4, "{header}\n{line}");
        let label = fields[1];
        assert!(TOPICS.contains(&label), "{line}");
        let probabilities: Vec<f64> = fields[3..].iter().map(|p| p.parse().unwrap()).collect();
        let sum: f64 = probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{line}");
        let probability: f64 = fields[2].parse().unwrap();
        assert!(probabilities.iter().all(|&p| p <= probability), "{line}");
        if label == TOPICS[i % 4] {
            right += 1;
        }
    }
    eprintln!("predict --file: {right} of 12 right");
    assert!(right >= 10, "{right} of 12 predictions right:\n{text}");
}
