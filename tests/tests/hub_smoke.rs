//! The README's main command's path, through the Hub: `cargo xtask smoke` with its models given
//! as Hub ids and `--source hub`, against a local Hub stand-in (`HF_ENDPOINT`) serving the shared
//! fixtures and IMDB parquet, into an empty `HF_HOME` — with a connection dropped in the middle of
//! the dataset's download, which the client resumes.
#![cfg(unix)]

use bertlab_hub_standin::{Fault, HubStandin, RepoKind};
use bertlab_tests::{build_binaries, workspace_root, HUB_ENV};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The pinned revision of `stanfordnlp/imdb` (bertlab-data's `IMDB_REVISION`).
const IMDB_REVISION: &str = bertlab_data::IMDB_REVISION;

#[test]
fn smoke_pipeline_downloads_its_models_and_data_from_the_hub() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let (xtask, bertlab) = build_binaries();
    let hub = HubStandin::start().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    for (id, fixture) in [
        ("bertlab-test/tiny-distilbert", "tiny-distilbert-classifier"),
        ("bertlab-test/tiny-bert", "tiny-bert-classifier"),
    ] {
        hub.add_repo(RepoKind::Model, id, "main", commit, shared.join("fixtures").join(fixture)).unwrap();
    }
    hub.add_repo(
        RepoKind::Dataset,
        "stanfordnlp/imdb",
        IMDB_REVISION,
        IMDB_REVISION,
        shared.join("data/hf-imdb"),
    )
    .unwrap();
    // The parquet files are served from the "CDN" (as large files are), and the first answer for
    // one of them breaks off after 1 MiB.
    hub.set_lfs_threshold(1 << 20);
    hub.inject(Fault::DropAfter(1 << 20), 1);

    let tmp = tempfile::tempdir().unwrap();
    let (home, out) = (tmp.path().join("hf-home"), tmp.path().join("runs"));
    let mut cmd = Command::new(&xtask);
    cmd.args(["smoke", "--backend", "cpu", "--source", "hub", "--out"])
        .arg(&out)
        .args([
            "--model",
            "distilbert=bertlab-test/tiny-distilbert",
            "--model",
            "bert=bertlab-test/tiny-bert",
        ])
        .arg("--bertlab")
        .arg(&bertlab)
        .env("HF_ENDPOINT", hub.url())
        .env("HF_HOME", &home)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in HUB_ENV.iter().filter(|v| **v != "HF_ENDPOINT") {
        cmd.env_remove(var);
    }
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "xtask smoke through the Hub failed:\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(1200));
    for answer in ["a1a = ", "a2a = ", "a3a = "] {
        assert!(stderr.contains(answer), "{answer} missing:\n{stderr}");
    }
    // Everything came through the Hub, into the standard cache layout.
    let snapshots = home.join("hub/datasets--stanfordnlp--imdb/snapshots").join(IMDB_REVISION);
    assert!(snapshots.join("plain_text/train-00000-of-00001.parquet").is_file());
    assert!(home
        .join("hub/models--bertlab-test--tiny-distilbert/snapshots")
        .join(commit)
        .join("config.json")
        .is_file());
    // The dropped transfer was resumed with a Range request.
    let start_offset =
        |range: &str| -> Option<u64> { range.strip_prefix("bytes=")?.split('-').next()?.parse().ok() };
    let resumed = hub.count(|r| r.range.as_deref().and_then(start_offset).is_some_and(|from| from > 0));
    assert!(resumed >= 1, "no resumed download: {:?}", hub.requests());
    // The runs recorded the Hub ids they trained (results.csv's model column).
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        csv.contains(",bertlab-test/tiny-bert,") && csv.contains(",bertlab-test/tiny-distilbert,"),
        "{csv}"
    );
}
