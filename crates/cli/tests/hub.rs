//! The `bertlab` binary downloading through a local Hub stand-in (`HF_ENDPOINT`) into a fresh
//! `HF_HOME`: IMDB as `stanfordnlp/imdb` at the pinned revision, a fixture model by Hub id, and a
//! Hub that never answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bertlab_hub_standin::{Fault, HubStandin, RepoKind};

mod common;
use common::{shared, BIN};

/// A fresh `HF_HOME` under the target's temporary folder.
fn hf_home(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `bertlab ARGS` talking to `hub` only, with `home` as HF_HOME and nothing else of the
/// caller's Hub environment (CI sets HF_HUB_OFFLINE=1).
fn bertlab(hub: &HubStandin, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("HF_ENDPOINT", hub.url()).env("HF_HOME", home);
    for var in [
        "HF_HUB_OFFLINE",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_CACHE",
        "BERTLAB_HUB_TIMEOUT_SECS",
        "BERTLAB_HUB_RETRIES",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Run with a one-minute guard: a hang fails the test instead of stalling the suite.
fn run(mut cmd: Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run bertlab");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("bertlab still running after 60 s: a Hub request hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stdout_ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn data_summary_downloads_imdb_from_the_hub() {
    let Some(shared) = shared() else { return };
    let hub = HubStandin::start().unwrap();
    let revision = bertlab_data::IMDB_REVISION;
    hub.add_repo(RepoKind::Dataset, "stanfordnlp/imdb", revision, revision, shared.join("data/hf-imdb"))
        .unwrap();
    let home = hf_home("imdb");
    let args = ["data", "summary", "--source", "hub", "--subset", "0.25", "--seed", "42"];

    let stdout = stdout_ok(&run(bertlab(&hub, &home, &args)), "data summary --source hub");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "Pool after SUBSET_FRAC=0.25: 12498 (of 49994)", "{stdout}");
    assert_eq!(lines[1], "Train: (8748, [4375, 4373])  Val: (1250, [625, 625])  Test: (2500, [1250, 1250])");
    // Both parquet files are above the LFS threshold: each went through the CDN.
    assert_eq!(hub.count(|r| r.is_cdn() && r.range.as_deref() == Some("bytes=0-")), 2);
    let snapshot = home.join("hub/datasets--stanfordnlp--imdb/snapshots").join(revision);
    let train = snapshot.join("plain_text/train-00000-of-00001.parquet");
    assert!(std::fs::symlink_metadata(&train).unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read(&train).unwrap(),
        std::fs::read(shared.join("data/hf-imdb/plain_text/train-00000-of-00001.parquet")).unwrap()
    );

    // Again, offline: the same answer from the cache, and not one request.
    hub.clear_requests();
    let mut offline = bertlab(&hub, &home, &args);
    offline.env("HF_HUB_OFFLINE", "1");
    assert_eq!(stdout_ok(&run(offline), "data summary offline"), stdout);
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn predict_loads_a_model_by_hub_id() {
    let Some(shared) = shared() else { return };
    let fixture = shared.join("fixtures/tiny-distilbert-classifier");
    let hub = HubStandin::start().unwrap();
    let commit = "1111111111111111111111111111111111111111";
    hub.add_repo(RepoKind::Model, "org/tiny-distilbert-classifier", "main", commit, fixture.as_path())
        .unwrap();
    let home = hf_home("predict");

    let cmd = bertlab(&hub, &home, &["predict", "--model", "org/tiny-distilbert-classifier", "good film"]);
    let via_hub = stdout_ok(&run(cmd), "predict --model org/tiny-distilbert-classifier");
    let cmd = bertlab(&hub, &home, &["predict", "--model", fixture.to_str().unwrap(), "good film"]);
    let local = stdout_ok(&run(cmd), "predict --model <fixture dir>");
    assert!(via_hub.contains("good film"), "{via_hub}");
    assert_eq!(via_hub, local, "the model from the Hub predicts what the local copy does");
    let snapshot = home.join("hub/models--org--tiny-distilbert-classifier/snapshots").join(commit);
    assert!(snapshot.join("model.safetensors").is_file() && snapshot.join("config.json").is_file());
    assert_eq!(
        std::fs::read_to_string(home.join("hub/models--org--tiny-distilbert-classifier/refs/main")).unwrap(),
        commit
    );
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_silent_hub_is_one_clear_error_not_a_hang() {
    let hub = HubStandin::start().unwrap();
    hub.inject(Fault::Silent, usize::MAX);
    let home = hf_home("silent");
    let mut cmd = bertlab(&hub, &home, &["data", "summary", "--source", "hub"]);
    cmd.env("BERTLAB_HUB_TIMEOUT_SECS", "1").env("BERTLAB_HUB_RETRIES", "1");
    let start = Instant::now();
    let out = run(cmd);
    eprintln!("silent Hub: bertlab gave up after {:.1} s", start.elapsed().as_secs_f64());

    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    assert!(
        line.contains("downloading `plain_text/train-00000-of-00001.parquet` of dataset `stanfordnlp/imdb`"),
        "{line}"
    );
    assert!(
        line.contains(&hub.url())
            && line.contains("no answer within 1 s (read timeout); gave up after 2 attempts"),
        "{line}"
    );
    assert!(line.contains("HF_ENDPOINT") && line.contains("HF_HUB_OFFLINE=1"), "{line}");
    assert_eq!(hub.count(|r| r.fault == Some(Fault::Silent)), 2);
    let _ = std::fs::remove_dir_all(&home);
}
