//! The smoke pipeline submitted to a real (one-node) Slurm cluster from one command: its arrays
//! train, the chain plans and submits each next problem from the records, the last job writes
//! the report — and the answers and records equal a local run's. Needs Debian's `slurm-wlm` and
//! `munge` and root (slurmd); skips without them unless `BERTLAB_REQUIRE_SLURM=1` (CI).
#![cfg(unix)]

use bertlab_pipeline::RunRecord;
use bertlab_tests::slurm::{unavailable, SlurmCluster};
use bertlab_tests::{build_binaries, workspace_root};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every record under `out`, by `pipeline/problem/run-id`, without what differs between two
/// runs of the same work (wall clock, paths under `out`).
fn records(out: &Path) -> BTreeMap<String, RunRecord> {
    let mut found = BTreeMap::new();
    let dirs = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    };
    for pipeline in dirs(out) {
        for problem in dirs(&pipeline) {
            for run in dirs(&problem) {
                let Ok(r) = RunRecord::read(&run.join("record.json")) else { continue };
                let mut r = r.without_timings();
                r.spec.out = PathBuf::new();
                r.spec.cache_dir = None;
                r.best_dir = None;
                let key = run.strip_prefix(out).unwrap().display().to_string();
                found.insert(key, r);
            }
        }
    }
    found
}

/// The graded answers of the report (`a1a = 0.7000`; each appears in the summary and under its
/// problem).
fn answers(out: &Path) -> std::collections::BTreeSet<String> {
    let md = std::fs::read_to_string(out.join("report.md")).unwrap_or_default();
    md.lines().filter(|l| l.starts_with('a') && l.contains(" = ")).map(str::to_string).collect()
}

fn xtask(bin: &Path, bertlab: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["smoke", "--backend", "cpu", "--out"])
        .arg(out)
        .arg("--bertlab")
        .arg(bertlab)
        .args(extra)
        .current_dir(workspace_root())
        .stdin(Stdio::null());
    cmd
}

#[test]
fn the_smoke_pipeline_submitted_to_slurm_equals_a_local_run() {
    if let Some(why) = unavailable() {
        assert!(
            std::env::var("BERTLAB_REQUIRE_SLURM").as_deref() != Ok("1"),
            "BERTLAB_REQUIRE_SLURM=1 but {why}"
        );
        eprintln!("skipping: {why}");
        return;
    }
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let (xtask_bin, bertlab) = build_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let (local, submitted) = (tmp.path().join("local"), tmp.path().join("slurm"));

    let out = xtask(&xtask_bin, &bertlab, &local, &[]).env("BERTLAB_SHARED", &shared).output().unwrap();
    assert!(out.status.success(), "local smoke failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let cluster = SlurmCluster::start();
    let started = Instant::now();
    let out = xtask(&xtask_bin, &bertlab, &submitted, &["--submit", "--slurm", "time=00:30:00"])
        .env("BERTLAB_SHARED", &shared)
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "submitting failed:\n{log}");
    assert!(log.contains("smoke/problem1: submitted job array"), "{log}");
    // The submit command returns at once; the chain runs on.
    let deadline = started + Duration::from_secs(1200);
    while !(submitted.join("report.md").is_file() && cluster.queued().is_empty()) {
        assert!(Instant::now() < deadline, "the chain did not finish in 20 minutes:\n{}", cluster.log());
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("submitted smoke pipeline done in {:.0} s", started.elapsed().as_secs_f64());

    let status = Command::new(&xtask_bin)
        .args(["status", "--out"])
        .arg(&submitted)
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    for stage in ["smoke/problem1", "smoke/problem2", "smoke/problem3"] {
        assert!(
            status.lines().any(|l| l.starts_with(stage) && l.contains(" done") && !l.contains("failed")),
            "{status}"
        );
    }
    assert!(status.contains("report job") && status.contains("finished"), "{status}");

    assert_eq!(answers(&submitted), answers(&local));
    assert_eq!(answers(&local).len(), 3);
    let (a, b) = (records(&local), records(&submitted));
    assert_eq!(a.len(), 8);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, record) in &a {
        assert_eq!(&b[key], record, "{key} differs between the local and the Slurm run");
    }
}
