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
fn a_model_without_a_trained_head_is_refused() {
    let Some(shared) = shared() else { return };
    let encoder = shared.join("fixtures/tiny-bert");
    let out = bertlab(&["predict", "--model", encoder.to_str().unwrap(), "great film"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a fine-tuned classifier") && err.contains("tiny-bert"), "{err}");
}
