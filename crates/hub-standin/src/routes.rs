//! The Hub's endpoints as the stand-in answers them: resolve, the CDN, file listings, errors.

use super::*;

pub(super) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

pub(super) fn text(status: u16, body: &str) -> Answer {
    Answer {
        status,
        headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
        body: Body::Text(body.to_string()),
    }
}

pub(super) fn fault_status(code: u16) -> Answer {
    let mut answer = text(code, &format!("{} (injected by the Hub stand-in)\n", reason(code)));
    if code == 429 {
        answer.headers.push(("Retry-After", "1".into()));
    }
    answer
}

/// A 404 carrying the Hub's error headers, as the real Hub answers unknown repos and files.
pub(super) fn hub_404(code: &str, message: &str, commit: Option<&str>) -> Answer {
    let mut answer = text(404, message);
    answer.headers.push(("X-Error-Code", code.into()));
    answer.headers.push(("X-Error-Message", message.into()));
    if let Some(commit) = commit {
        answer.headers.push(("X-Repo-Commit", commit.into()));
    }
    answer
}

pub(super) fn route(shared: &Shared, path: &str, range: Option<&str>) -> Answer {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["cdn", sha256] => cdn(shared, sha256, range),
        ["api", kind @ ("models" | "datasets"), rest @ ..] => {
            let kind = if *kind == "models" { RepoKind::Model } else { RepoKind::Dataset };
            match rest.iter().position(|s| *s == "revision") {
                Some(i) if i > 0 && rest.len() == i + 2 => {
                    let id = rest[..i].join("/");
                    if let Some(answer) = renamed(shared, kind, &id, &segments[..2], &rest[i..]) {
                        return answer;
                    }
                    listing(shared, kind, &id, &decode(rest[i + 1]))
                }
                _ => text(404, "Not Found"),
            }
        }
        _ => {
            let (kind, before, rest) = match segments.split_first() {
                Some((&"datasets", rest)) => (RepoKind::Dataset, &segments[..1], rest),
                _ => (RepoKind::Model, &segments[..0], segments.as_slice()),
            };
            match rest.iter().position(|s| *s == "resolve") {
                Some(i) if i > 0 && rest.len() >= i + 3 => {
                    let id = rest[..i].join("/");
                    if let Some(answer) = renamed(shared, kind, &id, before, &rest[i..]) {
                        return answer;
                    }
                    let file: Vec<String> = rest[i + 2..].iter().map(|s| decode(s)).collect();
                    resolve(shared, kind, &id, &decode(rest[i + 1]), &file.join("/"), range)
                }
                _ => text(404, "Not Found"),
            }
        }
    }
}

/// A 307 with a relative `Location` naming the new id, as the Hub answers for a renamed repo.
pub(super) fn renamed(
    shared: &Shared,
    kind: RepoKind,
    id: &str,
    before: &[&str],
    after: &[&str],
) -> Option<Answer> {
    let new_id = shared.lock().renames.get(&(kind, id.to_string()))?.clone();
    let location = format!(
        "/{}",
        before
            .iter()
            .copied()
            .chain([new_id.as_str()])
            .chain(after.iter().copied())
            .collect::<Vec<_>>()
            .join("/")
    );
    let mut answer = text(307, &format!("Temporary Redirect. Redirecting to {location}"));
    answer.headers.push(("Location", location));
    Some(answer)
}

pub(super) fn snapshot(
    shared: &Shared,
    kind: RepoKind,
    id: &str,
    revision: &str,
) -> Result<Arc<Snapshot>, Answer> {
    let state = shared.lock();
    let Some(revisions) = state.repos.get(&(kind, id.to_string())) else {
        return Err(hub_404("RepoNotFound", "Repository not found", None));
    };
    revisions
        .get(revision)
        .cloned()
        .ok_or_else(|| hub_404("RevisionNotFound", &format!("Invalid rev id: {revision}"), None))
}

pub(super) fn listing(shared: &Shared, kind: RepoKind, id: &str, revision: &str) -> Answer {
    let snapshot = match snapshot(shared, kind, id, revision) {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let siblings: Vec<serde_json::Value> =
        snapshot.files.keys().map(|name| serde_json::json!({ "rfilename": name })).collect();
    let body = serde_json::json!({
        "_id": format!("standin-{id}"),
        "id": id,
        "sha": snapshot.commit,
        "private": false,
        "siblings": siblings,
    });
    Answer {
        status: 200,
        headers: vec![("Content-Type", "application/json; charset=utf-8".into())],
        body: Body::Text(body.to_string()),
    }
}

pub(super) fn resolve(
    shared: &Shared,
    kind: RepoKind,
    id: &str,
    revision: &str,
    file: &str,
    range: Option<&str>,
) -> Answer {
    let snapshot = match snapshot(shared, kind, id, revision) {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let Some(source) = snapshot.files.get(file).cloned() else {
        return hub_404("EntryNotFound", "Entry not found", Some(&snapshot.commit));
    };
    let (sha256, git_sha1) = match digests(shared, &source) {
        Ok(d) => d,
        Err(e) => return text(500, &format!("the stand-in cannot read `{file}`: {e}")),
    };
    let size = source.len();
    let threshold = shared.lock().lfs_threshold;
    if size > threshold {
        // What git stores for an LFS file is this pointer; its blob id is the answer's ETag.
        let pointer =
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n");
        let location = {
            let mut state = shared.lock();
            state.cdn.insert(sha256.clone(), source);
            match &state.cdn_host {
                _ if state.relative_cdn => format!("/cdn/{sha256}"),
                Some(host) => format!("http://{host}:{}/cdn/{sha256}", shared.port),
                None => format!("{}/cdn/{sha256}", shared.base),
            }
        };
        let mut answer = text(302, &format!("Found. Redirecting to {location}"));
        answer.headers.extend([
            ("Location", location),
            ("X-Repo-Commit", snapshot.commit.clone()),
            ("X-Linked-Etag", format!("\"{sha256}\"")),
            ("X-Linked-Size", size.to_string()),
            ("ETag", format!("\"{}\"", hash::git_sha1(pointer.as_bytes()))),
        ]);
        return answer;
    }
    let mut answer = file_answer(source, range);
    answer.headers.push(("X-Repo-Commit", snapshot.commit.clone()));
    answer.headers.push(("ETag", format!("\"{git_sha1}\"")));
    answer
}

pub(super) fn cdn(shared: &Shared, sha256: &str, range: Option<&str>) -> Answer {
    let source = shared.lock().cdn.get(sha256).cloned();
    match source {
        Some(source) => {
            let mut answer = file_answer(source, range);
            answer.headers.push(("ETag", format!("\"{sha256}\"")));
            answer
        }
        None => text(404, "NoSuchKey"),
    }
}

pub(super) fn digests(shared: &Shared, source: &Source) -> std::io::Result<(String, String)> {
    match source {
        Source::Bytes(bytes) => Ok(hash::digests(bytes.as_slice(), bytes.len() as u64)?),
        Source::Path(path, len) => {
            if let Some(d) = shared.lock().digests.get(path) {
                return Ok(d.clone());
            }
            // Hashed outside the lock: other connections keep being served meanwhile.
            let d = hash::digests(std::io::BufReader::new(File::open(path)?), *len)?;
            shared.lock().digests.insert(path.clone(), d.clone());
            Ok(d)
        }
    }
}

/// 200 with the whole file, 206 with the requested range, or 416, as HTTP range requests go.
pub(super) fn file_answer(source: Source, range: Option<&str>) -> Answer {
    let size = source.len();
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    match range.map(|r| parse_range(r, size)) {
        Some(Some(Ok((start, end)))) => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
            Answer { status: 206, headers, body: Body::File { source, start, len: end - start + 1 } }
        }
        Some(Some(Err(()))) => {
            headers.push(("Content-Range", format!("bytes */{size}")));
            Answer { status: 416, headers, body: Body::Text(String::new()) }
        }
        // No Range, or one that is not a single byte range: the whole file, as servers do.
        Some(None) | None => {
            Answer { status: 200, headers, body: Body::File { source, start: 0, len: size } }
        }
    }
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` against `size`: `None` when not a single byte range,
/// `Some(Err(()))` when unsatisfiable, else the inclusive byte range.
pub(super) fn parse_range(range: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = range.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let bounds = if first.is_empty() {
        let n: u64 = last.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = first.parse().ok()?;
        let end = if last.is_empty() { u64::MAX } else { last.parse().ok()? };
        if start >= size || end < start {
            return Some(Err(()));
        }
        (start, end.min(size - 1))
    };
    Some(Ok(bounds))
}

/// Percent-decoding of one path segment (`refs%2Fconvert%2Fparquet` → `refs/convert/parquet`).
pub(super) fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
