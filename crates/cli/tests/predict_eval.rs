//! `bertlab predict` and `bertlab eval` on the shared fine-tuned tiny classifier: logits and
//! probabilities against HF transformers' logits, metrics consistent with the split, and a plain encoder refused.

use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{shared, BIN};

fn bertlab(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("HF_HUB_OFFLINE", "1").output().expect("run bertlab")
}

fn stdout_ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The texts behind the fixture's input ids (decoded with its tokenizer).
const TEXTS: [&str; 3] = [
    "i love this movie, it was amazing!",
    "the plot was terrible and the acting was slow. not even really.",
    "bad",
];

#[test]
fn predict_matches_transformers_probabilities() {
    let Some(shared) = shared() else { return };
    let model = shared.join("fixtures/tiny-bert-classifier");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("expected.json")).unwrap()).unwrap();
    let mut args = vec!["predict", "--model", model.to_str().unwrap(), "--max-len", "16", "--json"];
    args.extend(TEXTS);
    let stdout = stdout_ok(&bertlab(&args), "predict");
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), TEXTS.len(), "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["text"], TEXTS[i]);
        let logits: Vec<f64> =
            expected["logits"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        let want: Vec<f64> = logits.iter().map(|l| (l - max).exp() / z).collect();
        let got: Vec<f64> =
            line["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "text {i}: {got:?} vs transformers {want:?}");
        }
        let raw: Vec<f64> = line["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(raw.len(), logits.len(), "{line}");
        for (g, w) in raw.iter().zip(&logits) {
            assert!((g - w).abs() < 1e-5, "text {i}: logits {raw:?} vs transformers {logits:?}");
        }
        let best = if want[0] >= want[1] { 0 } else { 1 };
        assert_eq!(line["probability"].as_f64().unwrap(), got[best], "text {i}");
        assert!(line["label"].is_string(), "{line}");
    }
}

#[test]
fn eval_reports_metrics_of_the_split() {
    let Some(shared) = shared() else { return };
    let model = shared.join("fixtures/tiny-bert-classifier");
    let source = shared.join("data/hf-imdb");
    let args = [
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--source",
        source.to_str().unwrap(),
        "--subset",
        "0.01",
        "--seed",
        "42",
        "--max-len",
        "32",
        "--json",
    ];
    let stdout = stdout_ok(&bertlab(&args), "eval");
    let metrics: Value = serde_json::from_str(&stdout).unwrap();
    // Subset 0.01 of 49,994 rows: pool 499, test = 20 % of the pool.
    let confusion: Vec<u64> = metrics["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .collect();
    assert_eq!(confusion.iter().sum::<u64>(), 100, "{stdout}");
    assert_eq!(metrics["n"], 100);
    let accuracy = metrics["accuracy"].as_f64().unwrap();
    assert!((accuracy - (confusion[0] + confusion[3]) as f64 / 100.0).abs() < 1e-12, "{stdout}");
    assert!(metrics["loss"].as_f64().unwrap().is_finite(), "{stdout}");
    // Same command, same numbers.
    assert_eq!(stdout_ok(&bertlab(&args), "eval again"), stdout);
}

#[test]
fn the_header_names_how_the_rows_were_drawn_where_they_were() {
    let Some(shared) = shared() else { return };
    let model = shared.join("fixtures/tiny-bert-classifier");
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample");
    let source = shared.join("data/hf-imdb");
    let (model, sample, source) =
        (model.to_str().unwrap(), sample.to_str().unwrap(), source.to_str().unwrap());
    stdout_ok(
        &bertlab(&["data", "sample", "--source", source, "--subset", "0.002", "--out", sample]),
        "sample",
    );
    let eval = |split: &str| {
        let args = ["eval", "--model", model, "--source", sample, "--split", split, "--max-len", "16"];
        stdout_ok(&bertlab(&args), split)
    };
    // The run's test rows are drawn by the splits, the subset and the seed.
    let test = eval("test");
    let header = test.lines().next().unwrap();
    assert!(header.contains("rows, notebook splits, subset 1, seed 42, max_len 16):"), "{test}");
    // The dataset's own test split is taken whole: none of them applies.
    let hub = eval("hub-test");
    let header = hub.lines().next().unwrap();
    assert!(header.contains("rows, max_len 16):"), "{hub}");
    assert!(!header.contains("subset") && !header.contains("seed"), "{hub}");
}

#[test]
fn a_model_without_a_trained_head_is_refused() {
    let Some(shared) = shared() else { return };
    let encoder = shared.join("fixtures/tiny-bert");
    let out = bertlab(&["predict", "--model", encoder.to_str().unwrap(), "great film"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a fine-tuned classifier") && err.contains("tiny-bert"), "{err}");
}

/// transformers' probabilities of `TEXTS` under the fixture (softmax of its logits).
fn expected_probabilities(model: &std::path::Path) -> Vec<Vec<f64>> {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("expected.json")).unwrap()).unwrap();
    (0..TEXTS.len())
        .map(|i| {
            let logits: Vec<f64> =
                expected["logits"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            logits.iter().map(|l| (l - max).exp() / z).collect()
        })
        .collect()
}

#[test]
fn predict_file_reads_stdin_lines_and_jsonl_and_writes_jsonl_and_csv() {
    use std::io::Write;
    let Some(shared) = shared() else { return };
    let model = shared.join("fixtures/tiny-bert-classifier");
    let want = expected_probabilities(&model);
    let close = |got: &[f64], i: usize| {
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(&want[i]) {
            assert!((g - w).abs() < 1e-5, "text {i}: {got:?} vs transformers {:?}", want[i]);
        }
    };

    // One text per line on standard input (a blank line skipped), JSON Lines on standard output.
    let mut child = Command::new(BIN)
        .args(["predict", "--model", model.to_str().unwrap(), "--max-len", "16", "--file", "-"])
        .env("HF_HUB_OFFLINE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = format!("{}\n\n{}\n{}\n", TEXTS[0], TEXTS[1], TEXTS[2]);
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = stdout_ok(&out, "predict --file -");
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["row"], i + 1, "{line}");
        let p = &line["probabilities"];
        close(&[p["LABEL_0"].as_f64().unwrap(), p["LABEL_1"].as_f64().unwrap()], i);
        let best = if want[i][0] >= want[i][1] { "LABEL_0" } else { "LABEL_1" };
        assert_eq!(line["label"], best, "{line}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 texts classified") && stderr.contains("texts/s"), "{stderr}");

    // JSON Lines with the texts under another key, to a CSV file.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("reviews.jsonl");
    let rows: String =
        TEXTS.iter().map(|t| format!("{}\n", serde_json::json!({"id": 7, "review": t}))).collect();
    std::fs::write(&input, rows).unwrap();
    let output = dir.path().join("labels.csv");
    let args = [
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--max-len",
        "16",
        "--file",
        input.to_str().unwrap(),
        "--text-column",
        "review",
        "--output",
        output.to_str().unwrap(),
    ];
    stdout_ok(&bertlab(&args), "predict --file reviews.jsonl");
    let csv = std::fs::read_to_string(&output).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("row,label,probability,p:LABEL_0,p:LABEL_1"), "{csv}");
    let body: Vec<&str> = lines.collect();
    assert_eq!(body.len(), 3, "{csv}");
    for (i, line) in body.iter().enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], (i + 1).to_string());
        let probs: Vec<f64> = fields[3..].iter().map(|v| v.parse().unwrap()).collect();
        close(&probs, i);
    }
    // A key that is not there: the error names the file, the line and the key.
    let args = [
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--file",
        input.to_str().unwrap(),
        "--text-column",
        "text",
    ];
    let out = bertlab(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reviews.jsonl") && err.contains("text"), "{err}");
}
