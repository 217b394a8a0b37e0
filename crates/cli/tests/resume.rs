//! A run killed with SIGKILL in the middle of epoch 2 resumes after epoch 1 and ends
//! bit-identical (timings aside) to a run that was never interrupted; a finished run's
//! directory is protected; two trainings cannot share a `--out`.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bertlab_run::RunRecord;

mod common;
use common::{shared, BIN};

fn train_args(shared: &Path, out: &Path) -> Vec<String> {
    let fixture = shared.join("fixtures/tiny-distilbert-classifier");
    let data = shared.join("data/hf-imdb");
    [
        "train",
        "--model",
        fixture.to_str().unwrap(),
        "--source",
        data.to_str().unwrap(),
        "--subset",
        "0.06",
        "--max-len",
        "128",
        "--batch",
        "16",
        "--epochs",
        "3",
        "--patience",
        "5",
        "--lr",
        "1e-3",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(args: &[String]) -> Output {
    Command::new(BIN).args(args).env("HF_HUB_OFFLINE", "1").output().expect("run bertlab")
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bertlab failed ({}):\n{stderr}", out.status);
    stderr
}

/// The record without what differs between two runs of the same work: wall clock, the run
/// directory and the machine's memory.
fn comparable(dir: &Path) -> RunRecord {
    let mut r = RunRecord::read(&dir.join("record.json")).unwrap().without_timings();
    r.spec.out = PathBuf::new();
    r.best_dir = None;
    r
}

#[test]
fn a_run_killed_in_epoch_2_resumes_after_epoch_1_and_ends_bit_identical() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));

    // Uninterrupted.
    ok(&run(&train_args(&shared, &a)));
    let whole = comparable(&a);
    assert_eq!(whole.epochs.len(), 3);
    assert!(!a.join("checkpoint").exists(), "a completed run keeps no checkpoint");
    let epoch2 = Duration::from_secs_f64(whole.epochs[1].train_seconds);

    // Killed with SIGKILL a third into epoch 2 (its checkpoint after epoch 1 is written).
    let mut child = Command::new(BIN)
        .args(train_args(&shared, &b))
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = b.join("checkpoint/state.json");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !state.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        assert!(Instant::now() < deadline, "no checkpoint after 10 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(epoch2 / 3);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["epochs"].as_array().unwrap().len(), 1, "killed during epoch 2");
    assert!(!b.join("record.json").exists());

    // A checkpoint of other data (a data file whose content changed while the run was down:
    // here its recorded SHA-256 is another's) is refused, naming the file.
    let copy_checkpoint = |name: &str| {
        let to = tmp.path().join(name);
        std::fs::create_dir_all(to.join("checkpoint")).unwrap();
        for e in std::fs::read_dir(b.join("checkpoint")).unwrap().flatten() {
            std::fs::copy(e.path(), to.join("checkpoint").join(e.file_name())).unwrap();
        }
        to
    };
    let c = copy_checkpoint("c");
    // (edited as text: the state holds 128-bit integers that a JSON value does not keep)
    let sha = saved["data"]["files"][0]["sha256"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(c.join("checkpoint/state.json")).unwrap();
    assert!(text.contains(&sha));
    std::fs::write(c.join("checkpoint/state.json"), text.replace(&sha, &"0".repeat(64))).unwrap();
    let changed = run(&train_args(&shared, &c));
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert_eq!(changed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds other content than when the checkpoint was written"), "{stderr}");
    assert!(stderr.contains("train-00000-of-00001.parquet") && stderr.contains("--fresh"), "{stderr}");

    // An edited state (a validation loss no run writes) and a damaged tensor file (a NaN) are
    // refused, naming the file and what is wrong, not trained from.
    let d = copy_checkpoint("d");
    let state_d = d.join("checkpoint/state.json");
    let text = std::fs::read_to_string(&state_d).unwrap();
    let val_loss = format!("\"val_loss\": {}", saved["epochs"][0]["val_loss"]);
    assert!(text.contains(&val_loss), "{val_loss} in {text}");
    std::fs::write(&state_d, text.replace(&val_loss, "\"val_loss\": -5.0")).unwrap();
    let edited = run(&train_args(&shared, &d));
    let stderr = String::from_utf8_lossy(&edited.stderr);
    assert_eq!(edited.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("state.json: epochs[0].val_loss is -5") && stderr.contains("--fresh"),
        "{stderr}"
    );
    let e = copy_checkpoint("e");
    let model_file = e.join("checkpoint").join(saved["model_file"].as_str().unwrap());
    let mut bytes = std::fs::read(&model_file).unwrap();
    let at = bytes.len() - 4;
    bytes[at..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&model_file, bytes).unwrap();
    let damaged = run(&train_args(&shared, &e));
    let stderr = String::from_utf8_lossy(&damaged.stderr);
    assert_eq!(damaged.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("model-1.bin") && stderr.contains("holds NaN at element"), "{stderr}");

    // What a kill during an atomic write leaves is removed by the next run of the directory.
    let stale = [b.join(".record.json.tmp-4000000-0"), b.join("checkpoint/.model-2.bin.tmp-4000000-1")];
    for f in &stale {
        std::fs::write(f, b"half").unwrap();
    }

    // The same command resumes after epoch 1 and ends as the uninterrupted run did.
    let stderr = ok(&run(&train_args(&shared, &b)));
    assert!(stale.iter().all(|f| !f.exists()), "stale temporaries left");
    assert!(stderr.contains("Resuming after epoch 1 of 3"), "{stderr}");
    assert_eq!(comparable(&b), whole);
    let weights = |d: &Path| std::fs::read(d.join("best/model.safetensors")).unwrap();
    assert!(weights(&a) == weights(&b), "exported weights differ");
    assert!(!b.join("checkpoint").exists());

    // A finished run is never trained over by accident.
    let again = run(&train_args(&shared, &b));
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already holds a completed run") && stderr.contains("--overwrite"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(comparable(&b), whole, "the refused run left the record as it was");
}

#[test]
fn two_trainings_cannot_share_an_out_directory() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut first = Command::new(BIN)
        .args(train_args(&shared, &out))
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its lock is taken before anything else.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.join(".lock").exists() || std::fs::read_to_string(out.join(".lock")).unwrap().is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = run(&train_args(&shared, &out));
    let _ = first.kill();
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another bertlab train") && stderr.contains("is writing to --out"), "{stderr}");
}
