//! `cargo xtask` against a stand-in `bertlab` (a shell script that writes records in the
//! `record.json` layout): out-of-memory retries, failures, concurrency over `--gpus`, Slurm
//! scripts and dry runs, without training anything.
#![cfg(unix)]

use bertlab_pipeline::report::{RenderOptions, Report};
use bertlab_pipeline::ResultsStore;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A `bertlab` that "trains" by writing a record: val accuracy grows with max_len, the one shape
/// met is `batch × max_len`; it exits 3 (out of memory) when `batch > FAKE_OOM_ABOVE`, 1 when
/// `max_len == FAKE_FAIL_LEN`, and logs start/end times, devices, batch and `--warmed-shapes`
/// to `FAKE_LOG`.
const FAKE: &str = r#"#!/usr/bin/env bash
set -eu
if [ "$1" = "train" ] && [ "$2" = "--help" ]; then echo "Usage: bertlab train"; exit 0; fi
# `data split --json`: the notebook's split sizes of a 200-row dataset at --subset (ids 0, 1, …).
if [ "$1" = "data" ] && [ "$2" = "split" ]; then
  sub=1; prev=""
  for a in "$@"; do if [ "$prev" = "--subset" ]; then sub=$a; fi; prev=$a; done
  awk -v s="$sub" 'function ceil(x) { return x == int(x) ? x : int(x) + 1 }
    function ids(n,   i, t) { t = ""; for (i = 0; i < n; i++) t = t (i ? ", " : "") i; return "[" t "]" }
    BEGIN { pool = int(s * 200); test = ceil(0.2 * pool); val = ceil(0.125 * (pool - test));
            printf "{\"pool\": %d, \"train\": %s, \"val\": %s, \"test\": %s}\n", pool, ids(pool - test - val), ids(val), ids(test) }'
  exit 0
fi
spec="$3"
get() { sed -n "s/^$1 = \"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$spec"; }
out=$(get out); batch=$(get batch); max_len=$(get max_len); lr=$(get lr); device=$(get device)
subset=$(get subset); model=$(get model)
warmed=-; prev=""
for a in "$@"; do if [ "$prev" = "--warmed-shapes" ]; then warmed=$a; fi; prev=$a; done
# A complete record (schema 1) of this spec: status, error, epochs, val accuracy, test metrics.
record() {
  cat <<REC
{"schema_version": 1, "status": "$1", $2
 "spec": {"model": "$model", "source": "x", "subset": $subset, "max_len": $max_len, "lr": $lr, "batch": $batch,
          "epochs": 1, "out": "$out", "device": "$device"},
 "environment": {"backend": "fake", "device": "$device", "precision": "f32", "bertlab_version": "0.1.0",
                 "burn_version": "0.21.0", "git_commit": null, "seed": 42, "host_threads": 2, "hostname": null,
                 "platform": "linux-x86_64", "started_at": "2025-01-01T00:00:00Z"},
 "data": {"source": "x", "total_rows": 160, "pool": 160, "train": 100, "val": 20, "test": 40,
          "class_names": ["neg", "pos"], "train_truncated": 0, "train_padding": {"real_tokens": 1000, "padded_tokens": 1200}},
 "epochs": $3, "best_epoch": 1, "stopped_early": false, "restored_epoch": 1, "val_acc_at_min_val_loss": $4,
 "test": $5, "shapes": [[$batch, $max_len]],
 "timings": {"data_seconds": 0.0, "tokenize_seconds": 0.0, "model_load_seconds": 0.0, "fit_seconds": 1.5,
             "test_seconds": 0.1, "elapsed_seconds": 1.6, "export_seconds": 0.0, "total_seconds": 2.0},
 "peak_rss_bytes": null, "best_dir": null}
REC
}
echo "start $(date +%s.%N) $device $batch $warmed" >> "$FAKE_LOG"
sleep "${FAKE_SLEEP:-0}"
if [ -n "${FAKE_OOM_ABOVE:-}" ] && [ "$batch" -gt "$FAKE_OOM_ABOVE" ]; then
  echo "error: CUDA out of memory" >&2; echo "end $(date +%s.%N) $device" >> "$FAKE_LOG"; exit 3
fi
if [ "$max_len" = "${FAKE_FAIL_LEN:-none}" ]; then
  record failed "\"error\": \"shape mismatch at max_len $max_len\"," "[]" null null > "$out/failed-record.json"
  echo "end $(date +%s.%N) $device" >> "$FAKE_LOG"; exit 1
fi
acc=$(awk -v m="$max_len" -v s="$subset" 'BEGIN { printf "%.4f", 0.60 + m / 2000 + s / 10 }')
epoch="{\"epoch\": 1, \"train_loss\": 0.5, \"train_acc\": 0.7, \"val_loss\": 0.4, \"val_acc\": $acc, \"lr\": $lr,
  \"steps\": 4, \"skipped_steps\": 0, \"loss_scale\": 1.0, \"train_seconds\": 1.0, \"val_seconds\": 0.5,
  \"train_seq_per_s\": 100.0, \"train_tokens_per_s\": 1000.0, \"train_padded_tokens_per_s\": 1200.0}"
test="{\"n\": 40, \"accuracy\": $acc, \"f1\": $acc, \"precision\": 0.5, \"recall\": 0.5, \"confusion\": [[10, 10], [10, 10]]}"
record completed "" "[$epoch]" "$acc" "$test" > "$out/.record.tmp"
mv "$out/.record.tmp" "$out/record.json"
echo "end $(date +%s.%N) $device" >> "$FAKE_LOG"
"#;

const PIPELINE: &str = r#"
title = "fake"
[models]
small = "MODEL_DIR"
[defaults]
model = "small"
source = "DATA_DIR"
epochs = 1
[[problem]]
id = "sweep"
answer = "a1a"
runs = [ { max_len = 128, lr = 2e-5, batch = 32 }, { max_len = 256, lr = 1e-5, batch = 16 },
         { max_len = 512, lr = 5e-6, batch = 8 }, { max_len = 64, lr = 5e-6, batch = 8 } ]
[[problem]]
id = "data"
answer = "a2a"
from_best = "sweep"
runs = [ { subset = 0.5 }, { subset = 1.0 } ]
"#;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    fake: PathBuf,
    pipeline: PathBuf,
    log: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let fake = dir.join("bertlab");
    std::fs::write(&fake, FAKE).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["model", "data"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let text = PIPELINE
        .replace("MODEL_DIR", &dir.join("model").display().to_string())
        .replace("DATA_DIR", &dir.join("data").display().to_string());
    let pipeline = dir.join("fake.toml");
    std::fs::write(&pipeline, text).unwrap();
    let log = dir.join("fake.log");
    Setup { _tmp: tmp, dir, fake, pipeline, log }
}

fn xtask(s: &Setup, out: &str, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("run").arg(&s.pipeline).args(["--out"]).arg(s.dir.join(out)).arg("--bertlab").arg(&s.fake);
    cmd.args(extra).env("FAKE_LOG", &s.log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&stderr);
    (status.success(), text)
}

fn report(dir: &Path) -> String {
    Report::from_store(&ResultsStore::new(dir)).markdown(RenderOptions::default())
}

#[test]
fn out_of_memory_halves_the_batch_and_later_problems_inherit_the_recorded_batch() {
    let s = setup();
    let (ok, log) = xtask(&s, "oom", &["--backend", "cpu"], &[("FAKE_OOM_ABOVE", "8")]);
    assert!(ok, "{log}");
    assert!(log.contains("out of memory at batch 32: retrying with batch 16"), "{log}");
    assert!(log.contains("out of memory at batch 16: retrying with batch 8"), "{log}");
    let md = report(&s.dir.join("oom"));
    assert!(md.contains("| 8 (OOM at 32) |") && md.contains("| 8 (OOM at 16) |"), "{md}");
    // Best: max_len 512 (planned batch 8, no retry); problem "data" inherits 512/5e-6/8.
    assert!(md.contains("`max_len`, `lr`, `batch` taken from the best run"), "{md}");
    assert!(md.contains("Shared by every run: model small"), "{md}");
    assert!(md.contains("max_len 512, lr 5e-6, batch 8,"), "{md}");
    // The planned batch stays in planned.json; the run spec holds the batch that ran.
    let sweep = s.dir.join("oom/fake/sweep");
    let run = std::fs::read_dir(&sweep)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("len128"))
        .unwrap();
    assert!(std::fs::read_to_string(run.join("run.toml")).unwrap().contains("\nbatch = 8\n"));
    assert!(std::fs::read_to_string(run.join("planned.json")).unwrap().contains("\"batch\": 32"));
    assert!(s.dir.join("oom/report.md").is_file() && s.dir.join("oom/results.csv").is_file());
}

#[test]
fn a_failed_run_fails_the_sweep_and_blocks_what_depends_on_it() {
    let s = setup();
    let (ok, log) = xtask(&s, "fail", &["--backend", "cpu"], &[("FAKE_FAIL_LEN", "256")]);
    assert!(!ok, "{log}");
    assert!(
        log.contains("FAILED fake/sweep/small-len256") && log.contains("shape mismatch at max_len 256"),
        "{log}"
    );
    assert!(log.contains("fake/data: cannot start: it needs the best run of fake/sweep"), "{log}");
    let md = report(&s.dir.join("fail"));
    assert!(md.contains("failed: shape mismatch at max_len 256"), "{md}");
    assert!(md.contains("(provisional: not every run has completed)"), "{md}");
    // Fixed, the rerun trains only the failed run and the dependent problem (whose subset-1.0
    // run is the sweep's best configuration again: its record is reused, not retrained).
    let (ok, log) = xtask(&s, "fail", &["--backend", "cpu"], &[]);
    assert!(ok, "{log}");
    assert_eq!(log.matches("] training ").count(), 1 + 1, "{log}");
    assert_eq!(log.matches("] reused ").count(), 1, "{log}");
}

#[test]
fn each_run_is_told_the_shapes_earlier_runs_met_so_the_pipeline_warms_each_once() {
    let s = setup();
    let (ok, log) = xtask(&s, "warm", &["--backend", "cpu"], &[]);
    assert!(ok, "{log}");
    let warmed: Vec<String> = std::fs::read_to_string(&s.log)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("start "))
        .map(|l| l.split_whitespace().nth(4).unwrap().to_string())
        .collect();
    // The sweep's runs in order (32 × 128, 16 × 256, 8 × 512, 8 × 64), then problem "data"'s
    // subset 0.5 with the best run's 8 × 512 (its subset 1.0 is the best run itself: reused).
    assert_eq!(
        warmed,
        ["-", "32x128", "16x256,32x128", "8x512,16x256,32x128", "8x64,8x512,16x256,32x128"],
        "{log}"
    );
}

#[test]
fn gpus_run_concurrently_one_run_per_device() {
    let s = setup();
    let (ok, log) = xtask(&s, "gpus", &["--backend", "cuda", "--gpus", "0,1"], &[("FAKE_SLEEP", "0.5")]);
    assert!(ok, "{log}");
    let events: Vec<(f64, bool, String)> = std::fs::read_to_string(&s.log)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].parse().unwrap(), f[0] == "start", f[2].to_string())
        })
        .collect();
    let mut sorted = events.clone();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut running, mut most) = (0i32, 0);
    for (_, start, _) in &sorted {
        running += if *start { 1 } else { -1 };
        most = most.max(running);
    }
    assert_eq!(most, 2, "two GPUs, two runs at a time: {events:?}");
    for device in ["cuda:0", "cuda:1"] {
        assert!(events.iter().any(|e| e.1 && e.2 == device), "{device} unused: {events:?}");
    }
    let (ok, log) = xtask(&s, "gpus-cpu", &["--backend", "cpu", "--gpus", "0"], &[]);
    assert!(!ok && log.contains("--gpus [0]: needs the cuda backend"), "{log}");
}

#[test]
fn slurm_scripts_run_each_task_and_report_merges_their_records() {
    let s = setup();
    let (ok, log) = xtask(&s, "slurm", &["--emit", "slurm"], &[]);
    assert!(ok, "{log}");
    assert!(log.contains("fake/data: not emitted yet"), "{log}");
    let script = s.dir.join("slurm/fake/slurm/sweep.sbatch");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array=0-3") && text.contains("#SBATCH --gres=gpu:1"), "{text}");
    assert!(!s.log.exists(), "emitting trains nothing");
    // Play Slurm: run every array task; task 1 runs out of memory at 16 and retries at 8.
    for task in 0..4 {
        let st = Command::new("bash")
            .arg(&script)
            .env("SLURM_ARRAY_TASK_ID", task.to_string())
            .env("FAKE_LOG", &s.log)
            .env("FAKE_OOM_ABOVE", "8")
            .output()
            .unwrap();
        // Task 0 (batch 32) retries twice; every task ends with a record.
        assert!(st.status.success(), "task {task}: {}", String::from_utf8_lossy(&st.stderr));
    }
    // The dependent problem can be emitted now.
    let (ok, log) = xtask(&s, "slurm", &["--emit", "slurm"], &[]);
    assert!(ok && log.contains("fake/data: 2 array tasks"), "{log}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    let out = cmd.args(["report", "--out"]).arg(s.dir.join("slurm")).output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a1a = 0.9560"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(s.dir.join("slurm/report.md")).unwrap();
    assert!(md.contains("| 8 (OOM at 32) |"), "{md}");
    assert!(md.contains("2 runs: 0 completed, 2 not run yet"), "{md}");
    // A task whose run already has a record exits at once.
    let again = Command::new("bash").arg(&script).env("SLURM_ARRAY_TASK_ID", "0").output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("already done"));
}

#[test]
fn dry_run_shows_dependencies_and_estimates_without_training() {
    let s = setup();
    let (ok, out) = xtask(&s, "dry", &["--backend", "cpu", "--dry-run", "--subset", "0.5"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("fake/data") && out.contains("depends on the best of fake/sweep"), "{out}");
    assert!(
        out.contains("1 of pool 0.5 = 0.5") && out.contains("est. time") && out.contains("padded tok."),
        "{out}"
    );
    assert!(!out.contains("Batch shapes"), "the CPU build compiles no kernels: {out}");
    // The data is a local folder: its rows are counted (`bertlab data split`: the stand-in's
    // 200 rows, a pool of 100 at 0.5), not assumed to be IMDB's.
    assert!(out.contains(" 70/10/20 ") && !out.contains("IMDB's"), "{out}");
    // A GPU plan lists the shapes whose kernels the pipeline compiles: the sweep's 32 × (32…128),
    // 16 × (32…256) and 8 × (32…512) at multiples of 32 (8 × 64's are among the last), and the
    // waiting problem's provisional configuration, one of those.
    let (ok, out) = xtask(&s, "dry", &["--backend", "cuda", "--dry-run"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("compiles and tunes kernels for, each once for the pipeline"), "{out}");
    assert!(out.contains("  small f32: 28 — 8×32 8×64 8×96 8×128 8×160 "), "{out}");
    assert!(out.contains(" 8×512 16×32 ") && out.contains(" 16×256 32×32 32×64 32×96 32×128\n"), "{out}");
    assert!(!s.log.exists() && !s.dir.join("dry").join("fake").exists(), "a dry run writes nothing");
}

#[test]
fn an_unreadable_record_is_moved_aside_never_deleted_and_the_run_trained_again() {
    let s = setup();
    let (ok, log) = xtask(&s, "damaged", &["--backend", "cpu"], &[]);
    assert!(ok, "{log}");
    let sweep = s.dir.join("damaged/fake/sweep");
    let run = std::fs::read_dir(&sweep).unwrap().flatten().map(|e| e.path()).find(|p| p.is_dir()).unwrap();
    // A damaged record (a disk filled up mid-write on another tool's watch) and a model that
    // goes with it.
    std::fs::write(run.join("record.json"), "{\"schema_version\": 1, \"status\": \"comp").unwrap();
    std::fs::create_dir_all(run.join("best")).unwrap();
    std::fs::write(run.join("best/model.safetensors"), "weights").unwrap();
    let (ok, log) = xtask(&s, "damaged", &["--backend", "cpu"], &[]);
    assert!(ok, "{log}");
    assert!(log.contains("record.json: not a run record") && log.contains("moved aside"), "{log}");
    assert!(run.join("record.json.unreadable-1").is_file(), "the damaged record is kept");
    assert_eq!(std::fs::read(run.join("best/model.safetensors")).unwrap(), b"weights");
    assert!(bertlab_pipeline::RunRecord::read(&run.join("record.json")).unwrap().is_completed());
}

#[test]
fn one_xtask_per_results_directory() {
    let s = setup();
    let mut first = Command::new(env!("CARGO_BIN_EXE_xtask"));
    first
        .arg("run")
        .arg(&s.pipeline)
        .args(["--backend", "cpu", "--out"])
        .arg(s.dir.join("busy"))
        .arg("--bertlab")
        .arg(&s.fake)
        .env("FAKE_LOG", &s.log)
        .env("FAKE_SLEEP", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut first = first.spawn().unwrap();
    let lock = s.dir.join("busy/.xtask.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !lock.exists() || std::fs::read_to_string(&lock).unwrap().trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the first xtask never took its lock");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (ok, log) = xtask(&s, "busy", &["--backend", "cpu"], &[]);
    let _ = first.kill();
    first.wait().unwrap();
    assert!(!ok);
    assert!(log.contains("another cargo xtask") && log.contains(&format!("pid {}", first.id())), "{log}");
    // A killed xtask leaves no stale lock: the next one runs. The OS lets go of the lock when
    // the last descriptor of it closes; a child the killed xtask was starting at that instant
    // holds one until its exec closes it (the descriptor is close-on-exec), a window of
    // microseconds that a loaded machine stretches (CI saw it): allow it 2 s, well under the
    // 5 s the orphaned fake run lives, so a lock held by a running child still fails here.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let (ok, log) = loop {
        let (ok, log) = xtask(&s, "busy", &["--backend", "cpu"], &[]);
        if ok || !log.contains("another cargo xtask") || std::time::Instant::now() > deadline {
            break (ok, log);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(ok, "{log}");
}
