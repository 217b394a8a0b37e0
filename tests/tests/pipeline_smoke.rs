//! End to end: `cargo xtask smoke` (the three problems chained on the tiny shared fixtures and the
//! shared IMDB parquet) produces the report, the CSV and the plots from the run records; a sweep
//! killed with SIGKILL resumes, training only the runs without a record, and ends with the same
//! report (timings aside) as an uninterrupted one.
#![cfg(unix)]

use bertlab_pipeline::report::{csv_columns, RenderOptions, Report};
use bertlab_pipeline::{answer_line, ResultsStore};
use bertlab_tests::{build_binaries, workspace_root};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Runs of `pipelines/smoke.toml`: 4 + 2 + 2.
const SMOKE_RUNS: usize = 8;

/// The plots the smoke report must have (what each problem varies decides which).
const PLOTS: [&str; 6] = [
    "smoke-problem1-learning-curves.svg",
    "smoke-problem1-val-acc-by-config.svg",
    "smoke-problem2-learning-curves.svg",
    "smoke-problem2-acc-time-vs-subset.svg",
    "smoke-problem3-learning-curves.svg",
    "smoke-problem3-acc-vs-time-by-model.svg",
];

/// Wall-clock columns of results.csv.
const TIMING_COLUMNS: [&str; 7] = [
    "seconds_per_epoch",
    "fit_seconds",
    "elapsed_seconds",
    "total_seconds",
    "train_seq_per_s",
    "train_padded_tokens_per_s",
    "peak_rss_mb",
];

fn xtask(xtask: &Path, bertlab: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(xtask);
    cmd.args(["smoke", "--backend", "cpu", "--out"])
        .arg(out)
        .arg("--bertlab")
        .arg(bertlab)
        .current_dir(workspace_root())
        .stdin(Stdio::null());
    cmd
}

fn run_to_end(cmd: &mut Command) -> String {
    let Output { status, stderr, .. } = cmd.output().expect("running xtask");
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert!(status.success(), "xtask smoke failed ({status}):\n{stderr}");
    stderr
}

/// Every `record.json` under `out` with its bytes and modification time.
fn records(out: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut found = BTreeMap::new();
    for p in dirs(out).iter().flat_map(|p| dirs(p)).flat_map(|q| dirs(&q)) {
        let r = p.join("record.json");
        if let (Ok(bytes), Ok(meta)) = (std::fs::read(&r), std::fs::metadata(&r)) {
            found.insert(r, (bytes, meta.modified().expect("mtime")));
        }
    }
    found
}

fn dirs(p: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

/// results.csv without the wall-clock columns.
fn csv_without_timings(text: &str) -> Vec<Vec<String>> {
    let drop: Vec<usize> = csv_columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| TIMING_COLUMNS.contains(&c.as_str()))
        .map(|(i, _)| i)
        .collect();
    text.lines()
        .map(|l| {
            l.split(',').enumerate().filter(|(i, _)| !drop.contains(i)).map(|(_, f)| f.to_string()).collect()
        })
        .collect()
}

/// Processes whose command line mentions `needle` (to catch orphaned trainings).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

fn check_outputs(out: &Path) -> Report {
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    let report = Report::from_store(&ResultsStore::new(out));
    // The report on disk is exactly the one derived from the records now on disk.
    assert_eq!(md, report.markdown(RenderOptions::default()));
    let answers = report.answers();
    let names: Vec<&str> = answers.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(names, vec!["a1a", "a2a", "a3a"]);
    for (name, _, value) in &answers {
        assert!((0.0..=1.0).contains(value), "{name} = {value}");
        assert!(md.contains(&answer_line(name, *value)), "{name} missing from report.md");
    }
    for stage in &report.stages {
        assert_eq!(stage.counts(), (stage.runs.len(), 0, 0), "{}: every run completed", stage.key);
        // The best of a problem is the run with the highest val acc at min val loss.
        let best = stage.best().expect("a best run");
        let best_acc = stage.runs[best].completed().unwrap().val_acc_at_min_val_loss().unwrap();
        for r in &stage.runs {
            assert!(r.completed().unwrap().val_acc_at_min_val_loss().unwrap() <= best_acc);
        }
    }
    // Problem 2 carries problem 1's best configuration, as recorded.
    let p1 = &report.stages[0];
    let best1 = &p1.runs[p1.best().unwrap()];
    for r in &report.stages[1].runs {
        assert_eq!((r.max_len(), r.lr(), r.batch()), (best1.max_len(), best1.lr(), best1.batch()));
    }
    assert!(md.contains("## smoke/problem1") && md.contains("## smoke/problem3"), "{md}");
    assert!(md.contains("Observations (generated from the records)"), "{md}");

    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], csv_columns().join(","));
    assert_eq!(lines.len(), 1 + SMOKE_RUNS, "{csv}");
    let status = csv_columns().iter().position(|c| *c == "status").unwrap();
    assert!(lines[1..].iter().all(|l| l.split(',').nth(status) == Some("completed")), "{csv}");

    for plot in PLOTS {
        let svg =
            std::fs::read_to_string(out.join("plots").join(plot)).unwrap_or_else(|e| panic!("{plot}: {e}"));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{plot}");
        assert!(svg.trim_end().ends_with("</svg>"), "{plot}");
        assert!(svg.contains("font-weight=\"bold\"") && svg.contains("accuracy"), "{plot}: title and axes");
        assert!(!svg.contains("NaN"), "{plot}");
        assert!(md.contains(&format!("(plots/{plot})")), "{plot} not linked from report.md");
    }
    report
}

#[test]
fn smoke_pipeline_reports_and_resumes_after_sigkill() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let started = Instant::now();
    let (xtask_bin, bertlab_bin) = build_binaries();
    let tmp = tempfile::tempdir().expect("temp dir");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));

    // 1. Uninterrupted.
    let log = run_to_end(xtask(&xtask_bin, &bertlab_bin, &a).env("BERTLAB_SHARED", &shared));
    assert_eq!(log.matches("] training ").count() + log.matches("] reused ").count(), SMOKE_RUNS, "{log}");
    let report_a = check_outputs(&a);
    assert_eq!(records(&a).len(), SMOKE_RUNS);

    // 2. Killed (SIGKILL to its process group) once the first run has its record.
    let mut child = xtask(&xtask_bin, &bertlab_bin, &b)
        .env("BERTLAB_SHARED", &shared)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawning xtask");
    let deadline = Instant::now() + Duration::from_secs(180);
    while records(&b).is_empty() {
        assert!(Instant::now() < deadline, "no record after 180 s");
        assert!(child.try_wait().unwrap().is_none(), "xtask ended before it could be killed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let b_text = b.display().to_string();
    assert!(processes_mentioning(&b_text).is_empty(), "orphans: {:?}", processes_mentioning(&b_text));
    let before = records(&b);
    assert!(before.len() < SMOKE_RUNS, "killed too late: every run finished");

    // 3. The rerun trains (or reuses) exactly the runs without a record, leaves the finished ones
    // untouched, and ends with the same report as the uninterrupted sweep.
    let log = run_to_end(xtask(&xtask_bin, &bertlab_bin, &b).env("BERTLAB_SHARED", &shared));
    let started_runs = log.matches("] training ").count() + log.matches("] reused ").count();
    assert_eq!(started_runs, SMOKE_RUNS - before.len(), "{log}");
    let after = records(&b);
    assert_eq!(after.len(), SMOKE_RUNS);
    for (path, old) in &before {
        assert_eq!(after.get(path), Some(old), "{} was rewritten", path.display());
    }
    let report_b = check_outputs(&b);
    let quiet = RenderOptions { timings: false };
    assert_eq!(report_a.markdown(quiet), report_b.markdown(quiet));
    let csv = |dir: &Path| csv_without_timings(&std::fs::read_to_string(dir.join("results.csv")).unwrap());
    assert_eq!(csv(&a), csv(&b));
    eprintln!("smoke pipeline test: {:.0} s", started.elapsed().as_secs_f64());
}
