//! `bertlab train` end to end against PyTorch's plain fine-tuning loop, in one command.
//!
//! Issue 16's fine-tune: all-MiniLM-L6-v2 with a fresh 2-class head on IMDB (the shared parquet
//! copy), `--subset 0.05 --seed 11`, 128 tokens, 1 epoch of AdamW (lr 5e-5) at batch 16 with a
//! validation pass, then the test split at batch 64. bertlab runs the real binary; PyTorch runs
//! `scripts/torch_finetune.py` (HF tokenizer, `AutoModelForSequenceClassification`, AdamW, eager,
//! 2 threads) on the same rows, which this bench writes from bertlab's split. Sides alternate
//! for `BENCH_ROUNDS` rounds (default 1); the table gives each side's best.
//!
//! ```bash
//! BENCH_PYTHON=/tmp/venv-torch/bin/python cargo bench -p bertlab --bench finetune
//! ```
//!
//! `BENCH_PYTHON` is a Python with torch and transformers (default `python3`); without them the
//! PyTorch side is skipped and the reason printed. `BENCH_SUBSET`, `BENCH_SEED` change the rows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use bertlab_data::{DataOptions, DatasetSource, RunSplits};
use bertlab_hub::HubOptions;
use bertlab_run::SplitMode;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bertlab");

/// Seconds of each phase of one fine-tune.
#[derive(Debug, Clone, Copy)]
struct Phases {
    /// Process start to exit, as the bench saw it.
    wall: f64,
    /// Model and data loading plus tokenization (bertlab: data, tokenize, model load; PyTorch:
    /// load and tokenize, interpreter start-up and imports included in `wall` only).
    prepare: f64,
    /// The training epoch's steps.
    train: f64,
    /// The validation pass after the epoch.
    val: f64,
    /// The test pass.
    test: f64,
    /// Test accuracy.
    accuracy: f64,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn number(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for key in path {
        v = if let Ok(i) = key.parse::<usize>() { &v[i] } else { &v[*key] };
    }
    v.as_f64().unwrap_or_else(|| panic!("no number at {path:?}"))
}

fn run_bertlab(model: &Path, source: &Path, subset: f64, seed: u64, out: &Path) -> Phases {
    let started = Instant::now();
    let status = Command::new(BIN)
        .args(["train", "--model"])
        .arg(model)
        .arg("--source")
        .arg(source)
        .args(["--subset", &subset.to_string(), "--seed", &seed.to_string()])
        .args(["--max-len", "128", "--epochs", "1", "--batch", "16", "--eval-batch", "64"])
        .args(["--optimizer", "adamw", "--lr", "5e-5", "--quiet", "--overwrite", "--fresh", "--out"])
        .arg(out)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .status()
        .expect("run bertlab train");
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success(), "bertlab train failed ({status})");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("record.json")).unwrap()).unwrap();
    let t = &record["timings"];
    Phases {
        wall,
        prepare: number(t, &["data_seconds"])
            + number(t, &["tokenize_seconds"])
            + number(t, &["model_load_seconds"]),
        train: number(&record, &["epochs", "0", "train_seconds"]),
        val: number(&record, &["epochs", "0", "val_seconds"]),
        test: number(t, &["test_seconds"]),
        accuracy: number(&record, &["test", "accuracy"]),
    }
}

fn run_torch(python: &str, script: &Path, model: &Path, rows: &Path, seed: u64) -> Result<Phases, String> {
    let started = Instant::now();
    let out = Command::new(python)
        .arg(script)
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(rows)
        .args(["--max-len", "128", "--batch", "16", "--eval-batch", "64", "--epochs", "1", "--lr", "5e-5"])
        .args(["--seed", &seed.to_string(), "--threads", "2"])
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{python} {} failed: {}", script.display(), stderr.lines().last().unwrap_or("")));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.lines().last().unwrap_or("")).map_err(|e| e.to_string())?;
    eprintln!(
        "  PyTorch {} / transformers {}, {} threads",
        v["torch"].as_str().unwrap_or("?"),
        v["transformers"].as_str().unwrap_or("?"),
        v["threads"]
    );
    Ok(Phases {
        wall,
        prepare: number(&v, &["load_seconds"]) + number(&v, &["tokenize_seconds"]),
        train: number(&v, &["train_seconds"]),
        val: number(&v, &["val_seconds"]),
        test: number(&v, &["test_seconds"]),
        accuracy: number(&v, &["test_accuracy"]),
    })
}

/// The run's rows as JSON Lines for the PyTorch side: the split bertlab trains on, row for row.
fn write_rows(source: &Path, subset: f64, seed: u64, path: &Path) -> (usize, usize, usize) {
    let splits = DatasetSource::LocalDir(source.to_path_buf())
        .load_splits(&DataOptions::default(), &HubOptions::default())
        .expect("load the shared IMDB copy");
    let split = RunSplits::new(&splits, SplitMode::Notebook, subset, seed).expect("split");
    let data = splits.into_joined();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for (name, rows) in [("train", &split.train), ("val", &split.val), ("test", &split.test)] {
        for &r in rows.iter() {
            let line = serde_json::json!({"split": name, "text": data.texts[r], "label": data.labels[r]});
            writeln!(out, "{line}").unwrap();
        }
    }
    out.flush().unwrap();
    (split.train.len(), split.val.len(), split.test.len())
}

fn best(runs: &[Phases]) -> Phases {
    let min = |f: fn(&Phases) -> f64| runs.iter().map(f).fold(f64::INFINITY, f64::min);
    Phases {
        wall: min(|p| p.wall),
        prepare: min(|p| p.prepare),
        train: min(|p| p.train),
        val: min(|p| p.val),
        test: min(|p| p.test),
        accuracy: runs[0].accuracy,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run only when benched.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let subset: f64 = env_or("BENCH_SUBSET", 0.05);
    let seed: u64 = env_or("BENCH_SEED", 11);
    let rounds: usize = env_or("BENCH_ROUNDS", 1).max(1);
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let model = shared.join("models/all-MiniLM-L6-v2");
    let source = shared.join("data/hf-imdb");
    let script: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/torch_finetune.py");
    let work = tempfile::tempdir().unwrap();
    let rows = work.path().join("rows.jsonl");
    let (train, val, test) = write_rows(&source, subset, seed, &rows);
    eprintln!(
        "fine-tune: all-MiniLM-L6-v2, IMDB --subset {subset} --seed {seed} ({train} train, {val} val, {test} test \
         rows), 128 tokens, 1 epoch AdamW batch 16, eval batch 64; {rounds} round(s)"
    );

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut torch_skipped = None;
    for round in 0..rounds {
        let p = run_bertlab(&model, &source, subset, seed, &work.path().join("run"));
        eprintln!("  round {round}: bertlab {:.1} s (train {:.1} s)", p.wall, p.train);
        ours.push(p);
        if torch_skipped.is_none() {
            match run_torch(&python, &script, &model, &rows, seed) {
                Ok(p) => {
                    eprintln!("  round {round}: PyTorch {:.1} s (train {:.1} s)", p.wall, p.train);
                    theirs.push(p);
                }
                Err(e) => torch_skipped = Some(e),
            }
        }
    }
    let ours = best(&ours);
    println!();
    println!("| side | wall s | prepare s | train s | val s | test s | test acc | end to end vs PyTorch | train vs PyTorch | test vs PyTorch |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, p: &Phases, base: Option<&Phases>| {
        let ratio = |f: fn(&Phases) -> f64| base.map_or("—".into(), |b| format!("{:.2}×", f(b) / f(p)));
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.4} | {} | {} | {} |",
            p.wall,
            p.prepare,
            p.train,
            p.val,
            p.test,
            p.accuracy,
            ratio(|p| p.wall),
            ratio(|p| p.train),
            ratio(|p| p.test)
        );
    };
    match (&torch_skipped, theirs.is_empty()) {
        (Some(reason), true) => {
            row("bertlab", &ours, None);
            println!("\nPyTorch skipped: {reason}");
        }
        _ => {
            let theirs = best(&theirs);
            row("bertlab", &ours, Some(&theirs));
            row("PyTorch eager (plain HF loop)", &theirs, Some(&theirs));
            println!("\nRatios are PyTorch seconds / bertlab seconds: above 1× bertlab is faster.");
        }
    }
}
