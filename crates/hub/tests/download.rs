//! Downloads through the local Hub stand-in: the cache layout Python shares, cache hits without
//! requests, offline lookups, listings, and each network fault the downloader must survive or
//! report (dropped connection, 404, silent server, stalled body, 5xx).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use bertlab_hub::{HubError, HubOptions, NetworkSettings, RepoKind, RepoRef};
use bertlab_hub_standin::{git_blob_id, Fault, HubStandin, RepoKind as Kind};
use sha2::{Digest, Sha256};

const COMMIT: &str = "4f6c1a8e2d0b9c7a5e3f1d2c4b6a8e0f1a3c5e7d";
/// Files above this are LFS files here: they redirect to the CDN.
const LFS_THRESHOLD: u64 = 64 * 1024;
const LARGE: usize = 300_000;

/// Bytes that differ at every offset, so a resumed download in the wrong place cannot pass.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

struct Fixture {
    hub: HubStandin,
    cache: tempfile::TempDir,
    small: Vec<u8>,
    large: Vec<u8>,
}

/// A stand-in serving model `org/tiny` at `main` with a small file and a nested large one.
fn fixture() -> Fixture {
    let hub = HubStandin::start().unwrap();
    hub.set_lfs_threshold(LFS_THRESHOLD);
    let small = content(700, 1);
    let large = content(LARGE, 2);
    hub.add_repo(
        Kind::Model,
        "org/tiny",
        "main",
        COMMIT,
        [("config.json", small.as_slice()), ("weights/model.safetensors", large.as_slice())],
    )
    .unwrap();
    Fixture { hub, cache: tempfile::tempdir().unwrap(), small, large }
}

/// Short timeouts and backoff so that faults cost milliseconds; the environment is ignored
/// (tests share it, and CI sets HF_HUB_OFFLINE=1).
fn options(f: &Fixture, retries: u32) -> HubOptions {
    HubOptions {
        endpoint: Some(f.hub.url()),
        cache_dir: Some(f.cache.path().to_path_buf()),
        network: Some(NetworkSettings {
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            retries,
            backoff: Duration::from_millis(20),
        }),
        ignore_env: true,
        ..HubOptions::default()
    }
}

fn tiny() -> RepoRef {
    RepoRef::hub("org/tiny", RepoKind::Model, "main")
}

/// Run `f` on a thread and fail the test, rather than hang it, if it takes more than a minute.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the Hub request hung instead of timing out")
}

fn ranges(hub: &HubStandin, pred: impl Fn(&bertlab_hub_standin::Request) -> bool) -> Vec<String> {
    hub.requests().into_iter().filter(|r| pred(r)).map(|r| r.range.unwrap_or_default()).collect()
}

fn repo_dir(f: &Fixture) -> PathBuf {
    f.cache.path().join("models--org--tiny")
}

#[test]
fn small_and_large_files_land_in_pythons_cache_layout() {
    let f = fixture();
    let options = options(&f, 0);
    let config = tiny().file("config.json", &options).unwrap();
    let weights = tiny().file("weights/model.safetensors", &options).unwrap();
    assert_eq!(std::fs::read(&config).unwrap(), f.small);
    assert_eq!(std::fs::read(&weights).unwrap(), f.large);

    let repo = repo_dir(&f);
    assert_eq!(config, repo.join("snapshots").join(COMMIT).join("config.json"));
    assert_eq!(weights, repo.join("snapshots").join(COMMIT).join("weights/model.safetensors"));
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
    // Blobs are named by ETag: the git blob id of a file in git, the sha256 of an LFS file.
    let small_etag = git_blob_id(&f.small);
    let large_etag = sha256_hex(&f.large);
    assert_eq!(std::fs::read_link(&config).unwrap(), Path::new("../../blobs").join(&small_etag));
    assert_eq!(std::fs::read_link(&weights).unwrap(), Path::new("../../../blobs").join(&large_etag));
    let mut blobs: Vec<String> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    blobs.sort();
    let mut want = vec![small_etag.clone(), large_etag.clone()];
    want.sort();
    assert_eq!(blobs, want, "no .incomplete left behind");
    assert!(f.cache.path().join(".locks/models--org--tiny").join(format!("{large_etag}.lock")).is_file());

    // The small file comes from the resolve URL; the large one redirects, and the CDN answers
    // the size probe and the body.
    let small_path = "/org/tiny/resolve/main/config.json";
    assert_eq!(ranges(&f.hub, |r| r.path == small_path), ["bytes=0-0", "bytes=0-"]);
    let resolve_large = f.hub.requests().into_iter().find(|r| r.path.ends_with("model.safetensors")).unwrap();
    assert_eq!(resolve_large.status, Some(302));
    assert_eq!(ranges(&f.hub, |r| r.is_cdn()), ["bytes=0-0", "bytes=0-"]);
}

#[test]
fn cached_files_need_no_request_and_are_found_offline() {
    let f = fixture();
    let options = options(&f, 0);
    let first = tiny().file("weights/model.safetensors", &options).unwrap();
    f.hub.clear_requests();

    assert_eq!(tiny().file("weights/model.safetensors", &options).unwrap(), first);
    assert!(tiny().has_local("weights/model.safetensors", &options));
    let offline = HubOptions { offline: true, ..options.clone() };
    assert_eq!(tiny().file("weights/model.safetensors", &offline).unwrap(), first);
    let by_commit = RepoRef::hub("org/tiny", RepoKind::Model, COMMIT);
    assert_eq!(by_commit.file("weights/model.safetensors", &offline).unwrap(), first);
    // Offline, the listing is what the cached snapshot holds.
    assert_eq!(tiny().list_files(&offline).unwrap(), ["weights/model.safetensors"]);
    assert!(f.hub.requests().is_empty(), "{:?}", f.hub.requests());

    let err = tiny().file("config.json", &offline).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
    assert!(f.hub.requests().is_empty());
}

#[test]
fn list_files_reads_the_hub_listing_at_a_revision_with_slashes() {
    let f = fixture();
    let options = options(&f, 0);
    assert_eq!(tiny().list_files(&options).unwrap(), ["config.json", "weights/model.safetensors"]);
    assert_eq!(f.hub.requests()[0].path, "/api/models/org/tiny/revision/main");

    // Datasets' parquet conversions live at `refs/convert/parquet`, quoted in URLs.
    let parquet_commit = "0000000000000000000000000000000000000abc";
    let data = content(1000, 3);
    f.hub
        .add_repo(
            Kind::Dataset,
            "org/data",
            "refs/convert/parquet",
            parquet_commit,
            [("plain_text/train/0000.parquet", data.as_slice())],
        )
        .unwrap();
    let repo = RepoRef::hub("org/data", RepoKind::Dataset, "refs/convert/parquet");
    assert_eq!(repo.list_files(&options).unwrap(), ["plain_text/train/0000.parquet"]);
    let path = repo.file("plain_text/train/0000.parquet", &options).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let requested: Vec<String> = f.hub.requests().into_iter().map(|r| r.path).collect();
    assert!(requested.contains(&"/api/datasets/org/data/revision/refs%2Fconvert%2Fparquet".to_string()));
    assert!(requested.contains(
        &"/datasets/org/data/resolve/refs%2Fconvert%2Fparquet/plain_text/train/0000.parquet".to_string()
    ));
    let reference = f.cache.path().join("datasets--org--data/refs/refs/convert/parquet");
    assert_eq!(std::fs::read_to_string(reference).unwrap(), parquet_commit);

    let err = RepoRef::hub("org/none", RepoKind::Model, "main").list_files(&options).unwrap_err().to_string();
    assert!(
        err.contains("org/none") && err.contains("RepoNotFound") && err.contains("/api/models/org/none"),
        "{err}"
    );
}

#[test]
fn a_renamed_repository_is_followed_and_cached_under_the_name_asked_for() {
    let f = fixture();
    f.hub.add_rename(Kind::Model, "tiny", "org/tiny");
    let options = options(&f, 0);
    let old_name = RepoRef::hub("tiny", RepoKind::Model, "main");
    let path = old_name.file("config.json", &options).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), f.small);
    // As Python: the cache folder is the id asked for.
    assert!(
        path.starts_with(f.cache.path().join("models--tiny/snapshots").join(COMMIT)),
        "{}",
        path.display()
    );
    let requests: Vec<(String, Option<u16>, String)> =
        f.hub.requests().into_iter().map(|r| (r.path, r.status, r.range.unwrap_or_default())).collect();
    let old_path = "/tiny/resolve/main/config.json".to_string();
    let new_path = "/org/tiny/resolve/main/config.json".to_string();
    assert_eq!(
        requests,
        [
            (old_path, Some(307), "bytes=0-0".into()),
            (new_path.clone(), Some(206), "bytes=0-0".into()),
            (new_path, Some(206), "bytes=0-".into()),
        ]
    );
    assert_eq!(old_name.list_files(&options).unwrap(), ["config.json", "weights/model.safetensors"]);
}

#[test]
fn a_relative_redirect_to_the_file_store_still_gives_commit_and_etag() {
    let f = fixture();
    f.hub.set_relative_cdn_redirects(true);
    let path = tiny().file("weights/model.safetensors", &options(&f, 0)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), f.large);
    assert_eq!(std::fs::read_link(&path).unwrap(), Path::new("../../../blobs").join(sha256_hex(&f.large)));
    assert_eq!(ranges(&f.hub, |r| r.is_cdn()), ["bytes=0-0", "bytes=0-"]);
}

#[test]
fn a_connection_dropped_every_time_gives_up_saying_how_far_it_got() {
    let f = fixture();
    f.hub.inject(Fault::DropAfter(100_000), usize::MAX);
    let err = tiny().file("weights/model.safetensors", &options(&f, 1)).unwrap_err();
    let HubError::Download(ref failed) = err else { panic!("{err}") };
    // The second attempt resumed at 100000 and was cut 100000 bytes later.
    assert!(failed.reason.starts_with(&format!("connection dropped after 200000 of {LARGE} bytes")), "{err}");
    assert!(failed.reason.ends_with("; gave up after 2 attempts"), "{err}");
    assert!(failed.url.contains("/cdn/"), "{err}");
    // The partial file stays for the next run to resume.
    let partial = repo_dir(&f).join("blobs").join(format!("{}.incomplete", sha256_hex(&f.large)));
    assert_eq!(std::fs::read(partial).unwrap(), &f.large[..200_000]);
}

#[test]
fn a_dropped_connection_is_resumed_where_it_broke() {
    let f = fixture();
    // Cut twice: the first retry resumes at 100000 and is cut again at 200000.
    f.hub.inject(Fault::DropAfter(100_000), 2);
    let path = tiny().file("weights/model.safetensors", &options(&f, 2)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), f.large, "byte-identical after two resumes");
    assert_eq!(ranges(&f.hub, |r| r.is_cdn()), ["bytes=0-0", "bytes=0-", "bytes=100000-", "bytes=200000-"]);
    let cut = f.hub.count(|r| r.fault == Some(Fault::DropAfter(100_000)));
    assert_eq!(cut, 2);
}

#[test]
fn a_partial_file_left_by_an_earlier_run_is_resumed() {
    let f = fixture();
    let blobs = repo_dir(&f).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let etag = sha256_hex(&f.large);
    std::fs::write(blobs.join(format!("{etag}.incomplete")), &f.large[..123_456]).unwrap();
    let path = tiny().file("weights/model.safetensors", &options(&f, 0)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), f.large);
    assert_eq!(ranges(&f.hub, |r| r.is_cdn()), ["bytes=0-0", "bytes=123456-"]);
}

#[test]
fn not_found_is_one_clear_error_without_retries() {
    let f = fixture();
    let options = options(&f, 3);
    let err = tiny().file("nope.json", &options).unwrap_err();
    let HubError::Download(ref failed) = err else { panic!("{err}") };
    let (url, reason) = (&failed.url, &failed.reason);
    assert_eq!(url, &format!("{}/org/tiny/resolve/main/nope.json", f.hub.url()));
    assert_eq!(reason, "HTTP 404 Not Found (EntryNotFound: Entry not found)");
    let message = err.to_string();
    assert!(message.contains("`nope.json` of model `org/tiny`") && message.contains(url), "{message}");
    assert!(message.contains("Check the repository id"), "{message}");
    assert_eq!(f.hub.requests().len(), 1, "a 404 is not retried");

    let err = RepoRef::hub("org/missing", RepoKind::Model, "main").file("config.json", &options).unwrap_err();
    assert!(err.to_string().contains("RepoNotFound"), "{err}");
    let err = RepoRef::hub("org/tiny", RepoKind::Model, "v9").file("config.json", &options).unwrap_err();
    assert!(err.to_string().contains("RevisionNotFound"), "{err}");
    assert_eq!(f.hub.requests().len(), 3);
}

#[test]
fn a_silent_server_times_out_instead_of_hanging() {
    let f = fixture();
    f.hub.inject(Fault::Silent, usize::MAX);
    let options = options(&f, 1);
    let err = within_a_minute(move || tiny().file("config.json", &options)).unwrap_err();
    let HubError::Download(ref failed) = err else { panic!("{err}") };
    let reason = &failed.reason;
    assert_eq!(reason, "no answer within 1 s (read timeout); gave up after 2 attempts");
    assert!(err.to_string().contains("BERTLAB_HUB_TIMEOUT_SECS"), "{err}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE=1"), "{err}");
    assert_eq!(f.hub.count(|r| r.fault == Some(Fault::Silent)), 2);
}

#[test]
fn a_stalled_body_times_out_and_the_retry_resumes() {
    let f = fixture();
    f.hub.inject(Fault::Stall(50_000), 1);
    let options = options(&f, 1);
    let path = within_a_minute(move || tiny().file("weights/model.safetensors", &options)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), f.large);
    assert_eq!(ranges(&f.hub, |r| r.is_cdn()), ["bytes=0-0", "bytes=0-", "bytes=50000-"]);
}

#[test]
fn a_stalled_body_with_no_retries_left_says_how_far_it_got() {
    let f = fixture();
    f.hub.inject(Fault::Stall(50_000), usize::MAX);
    let options = options(&f, 0);
    let err = within_a_minute(move || tiny().file("weights/model.safetensors", &options)).unwrap_err();
    let HubError::Download(ref failed) = err else { panic!("{err}") };
    let (url, reason) = (&failed.url, &failed.reason);
    assert_eq!(
        reason,
        &format!("the download stalled: no data within 1 s (read timeout) after 50000 of {LARGE} bytes")
    );
    assert!(url.contains("/cdn/"), "the URL at fault is the CDN's: {url}");
}

#[test]
fn server_errors_are_retried_until_the_hub_recovers() {
    let f = fixture();
    f.hub.inject(Fault::Status(503), 2);
    let path = tiny().file("config.json", &options(&f, 4)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), f.small);
    let statuses: Vec<Option<u16>> = f.hub.requests().into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(206), Some(206)]);

    // Rate limiting is retried too; with the retries spent, the error says so.
    f.hub.inject(Fault::Status(429), usize::MAX);
    let err = tiny().file("weights/model.safetensors", &options(&f, 1)).unwrap_err();
    let HubError::Download(ref failed) = err else { panic!("{err}") };
    let reason = &failed.reason;
    assert!(
        reason.starts_with("HTTP 429 Too Many Requests") && reason.ends_with("gave up after 2 attempts"),
        "{reason}"
    );
}

#[test]
fn the_token_goes_to_the_hub_and_not_to_the_cdn() {
    let f = fixture();
    f.hub.set_cdn_host("localhost");
    let options = HubOptions { token: Some("hf_secret".into()), ..options(&f, 0) };
    let path = tiny().file("weights/model.safetensors", &options).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), f.large);
    let requests = f.hub.requests();
    assert!(requests
        .iter()
        .filter(|r| r.is_resolve())
        .all(|r| r.authorization.as_deref() == Some("Bearer hf_secret")));
    let cdn: Vec<_> = requests.iter().filter(|r| r.is_cdn()).collect();
    assert_eq!(cdn.len(), 2);
    assert!(cdn.iter().all(|r| r.authorization.is_none()), "{cdn:?}");
}

#[test]
fn nothing_listens_is_a_connection_error_after_the_retries() {
    // A port that was just free: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cache = tempfile::tempdir().unwrap();
    let options = HubOptions {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        cache_dir: Some(cache.path().to_path_buf()),
        network: Some(NetworkSettings {
            retries: 2,
            backoff: Duration::from_millis(10),
            ..NetworkSettings::default()
        }),
        ignore_env: true,
        ..HubOptions::default()
    };
    let err = within_a_minute(move || tiny().file("config.json", &options)).unwrap_err();
    let HubError::Download(ref failed) = err else { panic!("{err}") };
    let reason = &failed.reason;
    assert!(
        reason.starts_with("could not connect") && reason.ends_with("gave up after 3 attempts"),
        "{reason}"
    );
}
