//! Downloads into the HF cache, the way hf-hub 0.4.3 and Python's `huggingface_hub` do them:
//! a metadata request (`Range: bytes=0-0`, redirects off) gives the commit, the ETag and the
//! size; the body goes into `blobs/<etag>.incomplete`, resumed with `Range: bytes=N-` after a
//! failure; the finished blob is renamed into place and linked from `snapshots/<commit>/<file>`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::cache;
use crate::net::{body_failure, encode, final_reason, location, Client, Failure};
use crate::{FailedRequest, HubError, HubOptions, RepoKind};

/// A Hub repository at a revision.
pub(crate) struct Repo<'a> {
    pub(crate) id: &'a str,
    pub(crate) kind: RepoKind,
    pub(crate) revision: &'a str,
}

impl Repo<'_> {
    fn url_prefix(&self) -> &'static str {
        match self.kind {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }
}

/// What the metadata request says about a file.
#[derive(Debug)]
struct Metadata {
    commit: String,
    etag: String,
    size: u64,
    /// Where the body comes from: the resolve URL, or the CDN URL it redirected to.
    location: String,
}

fn client(options: &HubOptions) -> Result<Client, HubError> {
    Ok(Client::new(&options.endpoint_url(), options.resolved_token(), options.network_settings()?))
}

/// Download `file` of `repo` into the cache at `cache` and return its snapshot path.
pub(crate) fn download(
    repo: &Repo,
    file: &str,
    cache: &Path,
    options: &HubOptions,
) -> Result<PathBuf, HubError> {
    let client = client(options)?;
    let url = format!(
        "{}/{}{}/resolve/{}/{}",
        client.endpoint,
        repo.url_prefix(),
        repo.id,
        encode(repo.revision, false),
        encode(file, true)
    );
    let fail = |(failure, attempts): (Failure, u32)| match failure {
        Failure::Cache(e) => e,
        failure => HubError::Download(Box::new(FailedRequest {
            id: repo.id.to_string(),
            kind: repo.kind,
            revision: repo.revision.to_string(),
            file: file.to_string(),
            url: failure.url().to_string(),
            reason: final_reason(&failure, attempts),
            advice: failure.advice(&client.endpoint),
        })),
    };
    let meta = client.retrying(|| metadata(&client, &url)).map_err(fail)?;

    let folder = cache::repo_folder(repo.id, repo.kind);
    let repo_dir = cache.join(&folder);
    let blob = repo_dir.join("blobs").join(&meta.etag);
    if !blob.is_file() {
        let blobs = repo_dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| cache_error(&blobs, "create the blobs folder", e))?;
        // Python's lock file, so that bertlab and Python never write the same blob at once.
        let _lock = lock(&cache.join(".locks").join(&folder).join(format!("{}.lock", meta.etag)))?;
        if !blob.is_file() {
            let partial = repo_dir.join("blobs").join(format!("{}.incomplete", meta.etag));
            let progress = options.progress.then(|| progress_bar(file, meta.size));
            client
                .retrying(|| fetch_body(&client, &meta.location, &partial, meta.size, progress.as_ref()))
                .map_err(fail)?;
            if let Some(bar) = progress {
                bar.finish();
            }
            std::fs::rename(&partial, &blob)
                .map_err(|e| cache_error(&blob, "move the downloaded file into place", e))?;
        }
    }

    let pointer = repo_dir.join("snapshots").join(&meta.commit).join(file);
    cache::link_pointer(&pointer, file, &meta.etag, &blob)?;
    if repo.revision != meta.commit {
        let reference = repo_dir.join("refs").join(repo.revision);
        bertlab_base::write_atomic(&reference, meta.commit.as_bytes())
            .map_err(|e| cache_error(&reference, "record the commit of the revision", e))?;
    }
    Ok(pointer)
}

/// The file names of `repo` at its revision, from the Hub's API.
pub(crate) fn list(repo: &Repo, options: &HubOptions) -> Result<Vec<String>, HubError> {
    let client = client(options)?;
    let api_kind = match repo.kind {
        RepoKind::Model => "models",
        RepoKind::Dataset => "datasets",
    };
    let url =
        format!("{}/api/{api_kind}/{}/revision/{}", client.endpoint, repo.id, encode(repo.revision, false));
    let listing = client.retrying(|| {
        let (final_url, response) = client.get_following(&url, None)?;
        let mut body = Vec::new();
        // Listings of huge repositories run to megabytes; anything far beyond is not a listing.
        if let Err(e) = response.into_reader().take(256 << 20).read_to_end(&mut body) {
            return Err(body_failure(&final_url, &e, body.len() as u64, None, &client.settings));
        }
        parse_listing(&body).map_err(|detail| Failure::Protocol { url: final_url, detail })
    });
    listing.map_err(|(failure, attempts)| {
        HubError::Listing(Box::new(FailedRequest {
            id: repo.id.to_string(),
            kind: repo.kind,
            revision: repo.revision.to_string(),
            file: String::new(),
            url: failure.url().to_string(),
            reason: final_reason(&failure, attempts),
            advice: failure.advice(&client.endpoint),
        }))
    })
}

fn parse_listing(body: &[u8]) -> Result<Vec<String>, String> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not the Hub's JSON repository info: {e}"))?;
    let siblings = json["siblings"].as_array().ok_or("the repository info has no `siblings` list")?;
    let mut files = siblings
        .iter()
        .map(|s| s["rfilename"].as_str().map(str::to_string).ok_or("a `siblings` entry has no `rfilename`"))
        .collect::<Result<Vec<_>, _>>()?;
    files.sort();
    Ok(files)
}

/// Ask for the first byte of the file: the answer's headers say which commit the revision is at,
/// the ETag names the blob, and `Content-Range` gives the size. Relative redirects (a renamed
/// repository, or the Hub's own file cache) are followed as Python does, the final answer's
/// headers counting, else those of the redirect that carried them; an absolute redirect is the
/// CDN of a large file, whose own answer gives the size.
fn metadata(client: &Client, url: &str) -> Result<Metadata, Failure> {
    let mut current = url.to_string();
    let mut from_redirect = None;
    for _ in 0..10 {
        let response = client.send(&current, Some("bytes=0-0"))?;
        if (300..400).contains(&response.status()) {
            let (target, relative) = location(&current, &response)?;
            if relative {
                from_redirect = identity(&current, &response).ok().or(from_redirect);
                current = target;
                continue;
            }
            let (commit, etag) = identity(&current, &response)?;
            let (cdn_url, cdn_response) = client.get_following(&target, Some("bytes=0-0"))?;
            let size = size_of(&cdn_url, &cdn_response)?;
            return Ok(Metadata { commit, etag, size, location: target });
        }
        let (commit, etag) = match (identity(&current, &response), from_redirect) {
            (Ok(found), _) | (Err(_), Some(found)) => found,
            (Err(missing), None) => return Err(missing),
        };
        let size = size_of(&current, &response)?;
        return Ok(Metadata { commit, etag, size, location: current });
    }
    Err(Failure::Protocol { url: current, detail: "more than 10 relative redirects in a row".into() })
}

/// `X-Repo-Commit`, and `X-Linked-Etag` (LFS files) else `ETag`, without quotes or `W/`.
fn identity(url: &str, response: &ureq::Response) -> Result<(String, String), Failure> {
    let protocol = |detail: String| Failure::Protocol { url: url.to_string(), detail };
    let commit = response
        .header("X-Repo-Commit")
        .map(str::trim)
        .ok_or_else(|| protocol("the answer has no X-Repo-Commit header".into()))?;
    let etag = response
        .header("X-Linked-Etag")
        .or_else(|| response.header("ETag"))
        .ok_or_else(|| protocol("the answer has neither an X-Linked-Etag nor an ETag header".into()))?;
    let etag = etag.trim().trim_start_matches("W/").trim_matches('"');
    // Both become file names in the cache: nothing that could leave its folder.
    for (name, value) in [("X-Repo-Commit", commit), ("ETag", etag)] {
        let safe = !value.is_empty()
            && value != ".."
            && value != "."
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !safe {
            return Err(protocol(format!("unusable {name} {value:?}")));
        }
    }
    Ok((commit.to_string(), etag.to_string()))
}

/// The file size from `Content-Range: bytes 0-0/SIZE`, or from `Content-Length` when the
/// server ignored the range and sent the whole file.
fn size_of(url: &str, response: &ureq::Response) -> Result<u64, Failure> {
    let protocol = |detail: String| Failure::Protocol { url: url.to_string(), detail };
    if let Some(range) = response.header("Content-Range") {
        let total = range.rsplit('/').next().unwrap_or_default().trim();
        return total.parse().map_err(|_| protocol(format!("no file size in Content-Range {range:?}")));
    }
    match (response.status(), response.header("Content-Length")) {
        (200, Some(len)) => {
            len.trim().parse().map_err(|_| protocol(format!("unusable Content-Length {len:?}")))
        }
        (status, _) => Err(protocol(format!("a {status} answer to a range request without Content-Range"))),
    }
}

/// Bring `partial` to `size` bytes from `url`, starting from what it already holds.
fn fetch_body(
    client: &Client,
    url: &str,
    partial: &Path,
    size: u64,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(), Failure> {
    let io = |action, e| Failure::Cache(cache_error(partial, action, e));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(partial)
        .map_err(|e| io("open the partial download", e))?;
    let mut have = file.metadata().map_err(|e| io("read the partial download", e))?.len();
    if have > size {
        // Longer than the file can be: not a prefix of it.
        file.set_len(0).map_err(|e| io("truncate the partial download", e))?;
        have = 0;
    }
    if have < size {
        let (final_url, response) = client.get_following(url, Some(&format!("bytes={have}-")))?;
        match response.status() {
            206 => {
                let start = response
                    .header("Content-Range")
                    .and_then(|r| r.trim().strip_prefix("bytes "))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.trim().parse::<u64>().ok());
                if start != Some(have) {
                    return Err(Failure::Protocol {
                        url: final_url,
                        detail: format!(
                            "asked for bytes {have}- and got Content-Range {:?}",
                            response.header("Content-Range").unwrap_or_default()
                        ),
                    });
                }
            }
            200 => {
                // The server ignored the range and sends the whole file.
                file.set_len(0).map_err(|e| io("truncate the partial download", e))?;
                have = 0;
            }
            status => {
                return Err(Failure::Protocol {
                    url: final_url,
                    detail: format!("a {status} answer to a request for bytes {have}-"),
                })
            }
        }
        if let Some(bar) = progress {
            bar.set_position(have);
        }
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(body_failure(&final_url, &e, have, Some(size), &client.settings)),
            };
            if have + n as u64 > size {
                return Err(Failure::Protocol {
                    url: final_url,
                    detail: format!("more bytes than the {size} announced"),
                });
            }
            file.write_all(&buf[..n]).map_err(|e| io("write the download", e))?;
            have += n as u64;
            if let Some(bar) = progress {
                bar.set_position(have);
            }
        }
        if have < size {
            return Err(Failure::Dropped {
                url: final_url,
                got: have,
                size: Some(size),
                detail: "the answer ended early".into(),
            });
        }
    }
    file.sync_all().map_err(|e| io("flush the download to disk", e))
}

fn cache_error(path: &Path, action: &'static str, source: std::io::Error) -> HubError {
    HubError::Cache { path: path.to_path_buf(), action, source }
}

/// An exclusive lock on `path` (created if needed), released when the file is dropped. Waits
/// for another process downloading the same blob, which has timeouts of its own.
fn lock(path: &Path) -> Result<File, HubError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| cache_error(parent, "create the lock folder", e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| cache_error(path, "open a lock file", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::info!("{}: another process is downloading this file; waiting for it", path.display());
            file.lock().map_err(|e| cache_error(path, "lock", e))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(cache_error(path, "lock", e)),
    }
    Ok(file)
}

fn progress_bar(file: &str, size: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(size);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
    );
    if let Ok(style) = style {
        bar.set_style(style);
    }
    let name = file.rsplit('/').next().unwrap_or(file);
    bar.set_message(name.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_reads_siblings_sorted() {
        let body = br#"{"sha":"abc","siblings":[{"rfilename":"b.json"},{"rfilename":"a/c.parquet"}]}"#;
        assert_eq!(parse_listing(body).unwrap(), ["a/c.parquet", "b.json"]);
        assert!(parse_listing(b"<html>").unwrap_err().contains("JSON"));
        assert!(parse_listing(br#"{"sha":"abc"}"#).unwrap_err().contains("siblings"));
    }
}
