//! What can go wrong while resolving, downloading or listing a repository's files.

use std::path::PathBuf;

use crate::RepoKind;

/// [`HubError::MissingLocal`]'s message: a path that is a file where a directory was meant says
/// so (`--model best/config.json`), rather than looking inside it.
fn missing_local(dir: &std::path::Path, file: &str) -> String {
    let path = dir.join(file);
    if dir.is_file() {
        format!("{}: a file, not a directory (expected a directory holding `{file}`)", dir.display())
    } else if let Some(what) = std::fs::metadata(&path).ok().as_ref().and_then(bertlab_base::not_regular_kind)
    {
        // There, but no regular file: a directory, a FIFO (which a read would wait on), a device.
        format!("{}: {what}, not a regular file", path.display())
    } else {
        format!(
            "{}: no such file (looked for `{file}` in the local directory {})",
            dir.join(file).display(),
            dir.display()
        )
    }
}

/// Where a Hub id's first part is a folder in `base`, the id was likely meant as a path there
/// (`runs/best` of a run whose `best/` was removed reads as the Hub id `runs/best`): say so.
pub(crate) fn path_hint_in(base: &std::path::Path, id: &str) -> String {
    match id.split_once('/') {
        Some((first, _)) if !first.is_empty() && base.join(first).is_dir() => {
            format!(" (`{first}` is a folder here: if `{id}` is meant as a local path, it does not exist)")
        }
        _ => String::new(),
    }
}

fn path_hint(id: &str) -> String {
    path_hint_in(std::path::Path::new("."), id)
}

/// What went wrong while resolving a file. Each message names the repository, file, URL, path
/// or variable at fault and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The local directory does not hold the file.
    #[error("{}", missing_local(dir, file))]
    MissingLocal {
        /// The directory searched.
        dir: PathBuf,
        /// The file name asked for.
        file: String,
    },
    /// Offline and the cache does not hold the file.
    #[error(
        "offline (HF_HUB_OFFLINE=1 or --offline) and `{file}` of {kind} `{id}` at revision `{revision}` \
         is not in the HF cache {cache}; fetch it once with network access (run the same command \
         without --offline / HF_HUB_OFFLINE, or `huggingface-cli download {flag}{id} {file} --revision {revision}`), \
         or point at a local directory holding the file{hint}",
        kind = kind.name(),
        hint = path_hint(id),
        flag = if *kind == RepoKind::Dataset { "--repo-type dataset " } else { "" }
    )]
    NotCached {
        /// Repository id.
        id: String,
        /// Model or dataset.
        kind: RepoKind,
        /// Revision asked for.
        revision: String,
        /// File name.
        file: String,
        /// Cache folder searched.
        cache: String,
    },
    /// Offline and the cache holds no snapshot of the revision to list.
    #[error(
        "offline (HF_HUB_OFFLINE=1 or --offline) and no snapshot of {kind} `{id}` at revision `{revision}` \
         is in the HF cache {cache}; list or fetch it once with network access, or point at a local \
         directory holding the files{hint}",
        kind = kind.name(),
        hint = path_hint(id)
    )]
    SnapshotNotCached {
        /// Repository id.
        id: String,
        /// Model or dataset.
        kind: RepoKind,
        /// Revision asked for.
        revision: String,
        /// Cache folder searched.
        cache: String,
    },
    /// The download failed (after any retries).
    #[error(
        "downloading `{file}` of {kind} `{id}` (revision `{revision}`) from {url} failed: {reason}. {advice}{hint}",
        file = .0.file, kind = .0.kind.name(), id = .0.id, revision = .0.revision, url = .0.url,
        reason = .0.reason, advice = .0.advice, hint = path_hint(&.0.id)
    )]
    Download(Box<FailedRequest>),
    /// Listing the files of a Hub repository failed (after any retries).
    #[error(
        "listing the files of {kind} `{id}` (revision `{revision}`) at {url} failed: {reason}. {advice}{hint}",
        kind = .0.kind.name(), id = .0.id, revision = .0.revision, url = .0.url, reason = .0.reason,
        advice = .0.advice, hint = path_hint(&.0.id)
    )]
    Listing(Box<FailedRequest>),
    /// A local directory to list could not be read.
    #[error("{dir}: cannot list the files of this directory: {source}", dir = dir.display())]
    LocalDir {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Writing into the HF cache failed.
    #[error(
        "{path}: cannot {action} in the HF cache: {source}; check free space and permissions, or point \
         HF_HOME (or HF_HUB_CACHE) at a writable folder",
        path = path.display()
    )]
    Cache {
        /// The file or folder at fault.
        path: PathBuf,
        /// What was being done, e.g. "write the downloaded file".
        action: &'static str,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// An environment variable holds a value that cannot be used.
    #[error("{name}={value:?}: {expected}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it must hold.
        expected: &'static str,
    },
    /// A file name that is not a relative path inside a repository.
    #[error("`{file}`: not a file of a Hub repository ({why}); name it by its path in the repository, e.g. `config.json` or `plain_text/train-00000-of-00001.parquet`")]
    BadFileName {
        /// The name given.
        file: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No cache folder can be derived: no `HF_HOME`, `HF_HUB_CACHE` nor home directory.
    #[error("no HF cache folder: neither HF_HUB_CACHE, HF_HOME nor a home directory (HOME) is set; set HF_HOME to a writable folder")]
    NoCacheDir,
}

/// A Hub request that failed for good: what it was for, where it went, what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRequest {
    /// Repository id.
    pub id: String,
    /// Model or dataset.
    pub kind: RepoKind,
    /// Revision asked for.
    pub revision: String,
    /// The file asked for; empty for a listing.
    pub file: String,
    /// The URL of the request that failed (for a download: the resolve URL, or the CDN URL it
    /// redirected to).
    pub url: String,
    /// What happened, e.g. `HTTP 404 Not Found (EntryNotFound: Entry not found)` or
    /// `no answer within 10 s (read timeout); gave up after 4 attempts`.
    pub reason: String,
    /// What to do about it.
    pub advice: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_whose_first_part_is_a_folder_here_is_hinted_as_a_path() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir(base.path().join("runs")).unwrap();
        std::fs::write(base.path().join("notes"), "a file").unwrap();
        let hint = path_hint_in(base.path(), "runs/best");
        assert_eq!(
            hint,
            " (`runs` is a folder here: if `runs/best` is meant as a local path, it does not exist)"
        );
        // A Hub id whose organisation is no folder here, or is a file, gets no hint.
        for id in ["distilbert/distilbert-base-uncased", "notes/x", "bert-base-uncased", "/abs"] {
            assert_eq!(path_hint_in(base.path(), id), "", "{id}");
        }
    }
}
