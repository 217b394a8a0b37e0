#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod hash;
mod routes;
use routes::*;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// The ETag the Hub gives a file stored in git (not LFS): the id `git hash-object` prints, the
/// SHA-1 of `blob {len}\0` followed by the content. Downloaders name the cached blob by it.
pub fn git_blob_id(content: &[u8]) -> String {
    hash::git_sha1(content)
}

/// Files above this size are served the way the Hub serves LFS files: a 302 to the CDN.
pub const DEFAULT_LFS_THRESHOLD: u64 = 10 * 1024 * 1024;

/// How often blocked connection threads look at the stop flag, so that Drop returns promptly.
const POLL: Duration = Duration::from_millis(50);

/// The namespace a repository lives in on the Hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoKind {
    /// `{endpoint}/{id}/…`, listed under `/api/models/{id}`.
    Model,
    /// `{endpoint}/datasets/{id}/…`, listed under `/api/datasets/{id}`.
    Dataset,
}

/// The files of a registered repository.
#[derive(Debug, Clone)]
pub enum Files {
    /// Every file below a directory (recursively, following symlinks), named by its relative
    /// path with `/` separators. Read from disk on each request, so large fixtures stay on disk.
    Dir(PathBuf),
    /// Files held in memory: relative path → content.
    Map(BTreeMap<String, Vec<u8>>),
}

impl From<&Path> for Files {
    fn from(dir: &Path) -> Files {
        Files::Dir(dir.to_path_buf())
    }
}

impl From<PathBuf> for Files {
    fn from(dir: PathBuf) -> Files {
        Files::Dir(dir)
    }
}

impl From<BTreeMap<String, Vec<u8>>> for Files {
    fn from(map: BTreeMap<String, Vec<u8>>) -> Files {
        Files::Map(map)
    }
}

impl<const N: usize> From<[(&str, &[u8]); N]> for Files {
    fn from(entries: [(&str, &[u8]); N]) -> Files {
        Files::Map(entries.into_iter().map(|(name, bytes)| (name.to_string(), bytes.to_vec())).collect())
    }
}

/// A misbehaviour the stand-in can be told to show (see [`HubStandin::inject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Send the headers and this many body bytes of a file, then close the connection. Applies
    /// to GET answers that carry more body bytes than that.
    DropAfter(u64),
    /// Send the headers and this many body bytes of a file, then go quiet while keeping the
    /// connection open. Applies to GET answers that carry more body bytes than that.
    Stall(u64),
    /// Accept the connection, read the request, never answer. Applies to any request.
    Silent,
    /// Answer with this status (e.g. 500, 503, 429) and a short text body. Applies to any request.
    Status(u16),
}

/// One request the stand-in received, in arrival order (see [`HubStandin::requests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD` (others are answered 405).
    pub method: String,
    /// The path as sent, still percent-encoded, without the query.
    pub path: String,
    /// The `Range` header, e.g. `bytes=0-0` or `bytes=1048576-`.
    pub range: Option<String>,
    /// The `Authorization` header, e.g. `Bearer hf_…`.
    pub authorization: Option<String>,
    /// The status answered; `None` when the request was left unanswered ([`Fault::Silent`]).
    pub status: Option<u16>,
    /// The fault applied to this request, if any.
    pub fault: Option<Fault>,
}

impl Request {
    /// True for a request to the stand-in's CDN (where large files redirect).
    pub fn is_cdn(&self) -> bool {
        self.path.starts_with("/cdn/")
    }

    /// True for a `…/resolve/…` request.
    pub fn is_resolve(&self) -> bool {
        self.path.contains("/resolve/")
    }

    /// True for an `/api/…` listing request.
    pub fn is_api(&self) -> bool {
        self.path.starts_with("/api/")
    }
}

/// An HTTP/1.1 server on `127.0.0.1` that answers like the Hugging Face Hub for the
/// repositories a test registers. It runs on background threads from [`HubStandin::start`]
/// until it is dropped.
pub struct HubStandin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    base: String,
    port: u16,
    stop: AtomicBool,
    state: Mutex<State>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

struct State {
    repos: HashMap<(RepoKind, String), HashMap<String, Arc<Snapshot>>>,
    lfs_threshold: u64,
    /// Old id → new id of renamed repositories.
    renames: HashMap<(RepoKind, String), String>,
    /// Host in the CDN URLs of redirects; `None`: the same origin as the resolve URL.
    cdn_host: Option<String>,
    /// Redirect to `/cdn/…` without scheme and host.
    relative_cdn: bool,
    faults: Vec<(Fault, usize)>,
    log: Vec<Request>,
    /// sha256 → content, filled when a resolve answer first redirects to it.
    cdn: HashMap<String, Source>,
    /// Digests of on-disk files, computed once: (sha256, git sha1).
    digests: HashMap<PathBuf, (String, String)>,
}

struct Snapshot {
    commit: String,
    files: BTreeMap<String, Source>,
}

#[derive(Clone)]
enum Source {
    Path(PathBuf, u64),
    Bytes(Arc<Vec<u8>>),
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Path(_, len) => *len,
            Source::Bytes(bytes) => bytes.len() as u64,
        }
    }
}

impl HubStandin {
    /// Bind `127.0.0.1:0` and start serving (no repositories yet, no faults).
    pub fn start() -> std::io::Result<HubStandin> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            port: addr.port(),
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                repos: HashMap::new(),
                lfs_threshold: DEFAULT_LFS_THRESHOLD,
                cdn_host: None,
                relative_cdn: false,
                renames: HashMap::new(),
                faults: Vec::new(),
                log: Vec::new(),
                cdn: HashMap::new(),
                digests: HashMap::new(),
            }),
            workers: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("hub-standin-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))?;
        Ok(HubStandin { addr, shared, accept: Some(accept) })
    }

    /// The endpoint to use as `HF_ENDPOINT`, e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// Serve `files` as repository `id` of `kind`, reachable at `revision` (a branch or tag such
    /// as `main`, or a commit hash) and at `commit`, which resolve answers carry as
    /// `X-Repo-Commit`. Registering the same id again adds revisions.
    pub fn add_repo(
        &self,
        kind: RepoKind,
        id: &str,
        revision: &str,
        commit: &str,
        files: impl Into<Files>,
    ) -> std::io::Result<()> {
        let files = match files.into() {
            Files::Map(map) => {
                map.into_iter().map(|(name, bytes)| (name, Source::Bytes(Arc::new(bytes)))).collect()
            }
            Files::Dir(dir) => {
                let mut files = BTreeMap::new();
                walk(&dir, "", &mut files).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("{}: cannot list the repository files: {e}", dir.display()),
                    )
                })?;
                files
            }
        };
        let snapshot = Arc::new(Snapshot { commit: commit.to_string(), files });
        let mut state = self.shared.lock();
        let revisions = state.repos.entry((kind, id.to_string())).or_default();
        revisions.insert(revision.to_string(), Arc::clone(&snapshot));
        revisions.insert(commit.to_string(), snapshot);
        Ok(())
    }

    /// Answer requests for `old_id` with a 307 to the same path under `new_id` (a relative
    /// `Location`), as the Hub does for a renamed repository (`bert-base-uncased` →
    /// `google-bert/bert-base-uncased`).
    pub fn add_rename(&self, kind: RepoKind, old_id: &str, new_id: &str) {
        self.shared.lock().renames.insert((kind, old_id.to_string()), new_id.to_string());
    }

    /// Files larger than `bytes` are answered with a 302 to the CDN (default
    /// [`DEFAULT_LFS_THRESHOLD`]); smaller ones directly.
    pub fn set_lfs_threshold(&self, bytes: u64) {
        self.shared.lock().lfs_threshold = bytes;
    }

    /// Redirect large files to `http://{host}:{port}/cdn/…` instead of the stand-in's own
    /// `127.0.0.1` origin, e.g. `localhost`: the same server under another origin, as the Hub's
    /// CDN is another host (a client must not send it the Hub token).
    pub fn set_cdn_host(&self, host: &str) {
        self.shared.lock().cdn_host = Some(host.to_string());
    }

    /// Redirect large files to a relative `/cdn/…` location instead of an absolute URL.
    /// Clients follow relative redirects as the metadata answer (as they do for a renamed
    /// repository); this checks they still get the commit and ETag from the redirect.
    pub fn set_relative_cdn_redirects(&self, relative: bool) {
        self.shared.lock().relative_cdn = relative;
    }

    /// Apply `fault` to the next `times` requests it applies to (`usize::MAX`: to all). Faults
    /// injected earlier are tried first.
    pub fn inject(&self, fault: Fault, times: usize) {
        if times > 0 {
            self.shared.lock().faults.push((fault, times));
        }
    }

    /// Drop every injected fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().log.clone()
    }

    /// How many requests received so far satisfy `predicate`.
    pub fn count(&self, predicate: impl Fn(&Request) -> bool) -> usize {
        self.shared.lock().log.iter().filter(|r| predicate(r)).count()
    }

    /// Forget the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }
}

impl Drop for HubStandin {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // The accept loop blocks in accept(): a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let workers = std::mem::take(&mut *self.shared.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            let _ = worker.join();
        }
    }
}

impl Shared {
    /// The state stays usable after a panicking connection thread: its data is plain values.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

fn walk(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Source>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let path = entry.path();
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            walk(&path, &rel, files)?;
        } else {
            files.insert(rel, Source::Path(path, meta.len()));
        }
    }
    Ok(())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopped() {
            break;
        }
        let Ok(stream) = stream else { continue };
        let conn_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("hub-standin-conn".into())
            .spawn(move || serve_connection(stream, &conn_shared));
        if let Ok(worker) = worker {
            let mut workers = shared.workers.lock().unwrap_or_else(|e| e.into_inner());
            workers.retain(|w| !w.is_finished());
            workers.push(worker);
        }
    }
}

/// What to send back for one request.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    Text(String),
    File { source: Source, start: u64, len: u64 },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Text(text) => text.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_nodelay(true);
    let Some(head) = read_head(&mut stream, shared) else { return };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let mut range = None;
    let mut authorization = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().to_string()),
                "authorization" => authorization = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }

    let answer = if method == "GET" || method == "HEAD" {
        route(shared, &path, range.as_deref())
    } else {
        text(405, "Method Not Allowed")
    };
    let head_only = method == "HEAD";
    let fault = {
        let mut state = shared.lock();
        let body_len = if head_only { 0 } else { answer.body.len() };
        let is_file = matches!(answer.body, Body::File { .. });
        let picked = state.faults.iter().position(|(fault, _)| match fault {
            Fault::Silent | Fault::Status(_) => true,
            Fault::DropAfter(n) | Fault::Stall(n) => is_file && body_len > *n,
        });
        let fault = picked.map(|i| {
            let (fault, times) = &mut state.faults[i];
            let fault = *fault;
            *times -= 1;
            if *times == 0 {
                state.faults.remove(i);
            }
            fault
        });
        let status = match fault {
            Some(Fault::Silent) => None,
            Some(Fault::Status(code)) => Some(code),
            _ => Some(answer.status),
        };
        state.log.push(Request { method, path, range, authorization, status, fault });
        fault
    };

    match fault {
        Some(Fault::Silent) => hold(&mut stream, shared),
        Some(Fault::Status(code)) => {
            let _ = write_answer(&mut stream, &fault_status(code), false, None);
        }
        Some(Fault::DropAfter(n)) => {
            let _ = write_answer(&mut stream, &answer, head_only, Some(n));
            let _ = stream.shutdown(Shutdown::Both);
        }
        Some(Fault::Stall(n)) => {
            if write_answer(&mut stream, &answer, head_only, Some(n)).is_ok() {
                hold(&mut stream, shared);
            }
        }
        None => {
            let _ = write_answer(&mut stream, &answer, head_only, None);
        }
    }
}

/// The request head (request line and headers), or `None` when the client went away first.
fn read_head(stream: &mut TcpStream, shared: &Shared) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if shared.stopped() || head.len() > 64 * 1024 {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Keep the connection open and quiet until the client closes it or the stand-in stops.
fn hold(stream: &mut TcpStream, shared: &Shared) {
    let mut buf = [0u8; 1024];
    while !shared.stopped() {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

fn write_answer(
    stream: &mut TcpStream,
    answer: &Answer,
    head_only: bool,
    cut: Option<u64>,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, reason(answer.status));
    let _ = write!(head, "Content-Length: {}\r\n", answer.body.len());
    for (name, value) in &answer.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    if head_only {
        return stream.flush();
    }
    let limit = cut.map_or(answer.body.len(), |n| n.min(answer.body.len()));
    match &answer.body {
        Body::Text(text) => stream.write_all(&text.as_bytes()[..limit as usize])?,
        Body::File { source: Source::Bytes(bytes), start, .. } => {
            stream.write_all(&bytes[*start as usize..(*start + limit) as usize])?
        }
        Body::File { source: Source::Path(path, _), start, .. } => {
            let mut file = File::open(path)?;
            file.seek(SeekFrom::Start(*start))?;
            std::io::copy(&mut file.take(limit), stream)?;
        }
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-0", 10), Some(Ok((0, 0))));
        assert_eq!(parse_range("bytes=4-", 10), Some(Ok((4, 9))));
        assert_eq!(parse_range("bytes=4-100", 10), Some(Ok((4, 9))));
        assert_eq!(parse_range("bytes=-3", 10), Some(Ok((7, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,4-5", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("refs%2Fconvert%2Fparquet"), "refs/convert/parquet");
        assert_eq!(decode("a%20b"), "a b");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
