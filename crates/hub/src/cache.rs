//! The HF cache layout that Python's `huggingface_hub` writes and reads, under the cache root:
//!
//! ```text
//! datasets--stanfordnlp--imdb/
//!   refs/main                        the commit hash a branch or tag pointed at (no newline)
//!   blobs/<etag>                     file contents, named by ETag (git sha1, or sha256 for LFS)
//!   blobs/<etag>.incomplete          a download in progress, resumed from its length
//!   snapshots/<commit>/<file>        relative symlink to ../../blobs/<etag> (one more ../ per folder)
//! .locks/datasets--stanfordnlp--imdb/<etag>.lock   held while a blob is downloaded
//! ```

use std::path::{Component, Path, PathBuf};

use crate::{HubError, RepoKind};

/// `models--org--name` / `datasets--org--name`.
pub(crate) fn repo_folder(id: &str, kind: RepoKind) -> String {
    let prefix = match kind {
        RepoKind::Model => "models",
        RepoKind::Dataset => "datasets",
    };
    format!("{prefix}--{}", id.replace('/', "--"))
}

/// A full commit hash, as Python's `REGEX_COMMIT_HASH` (`^[0-9a-f]{40}$`) decides.
pub(crate) fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Refuse names that would reach outside `snapshots/<commit>/` or that no repository holds.
pub(crate) fn check_file_name(file: &str) -> Result<(), HubError> {
    let why = if file.is_empty() {
        Some("empty name")
    } else if file.starts_with('/') || file.contains('\\') {
        Some("absolute path or backslash")
    } else if file.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        Some("empty, `.` or `..` path component")
    } else {
        None
    };
    match why {
        Some(why) => Err(HubError::BadFileName { file: file.to_string(), why }),
        None => Ok(()),
    }
}

/// The snapshot folder a revision points at in the cache, if it exists.
pub(crate) fn snapshot_dir(cache: &Path, id: &str, kind: RepoKind, revision: &str) -> Option<PathBuf> {
    let repo_dir = cache.join(repo_folder(id, kind));
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else {
        std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?.trim().to_string()
    };
    if commit.is_empty() {
        return None;
    }
    let dir = repo_dir.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

/// Look a file up in the cache layout without touching the network.
pub(crate) fn cached_file(
    cache: &Path,
    id: &str,
    kind: RepoKind,
    revision: &str,
    file: &str,
) -> Option<PathBuf> {
    let path = snapshot_dir(cache, id, kind, revision)?.join(file);
    // is_file follows the symlink: a pointer whose blob was deleted is not a cached file.
    path.is_file().then_some(path)
}

/// Every file below `dir` (following symlinks, as snapshot entries are symlinks), as sorted
/// relative paths with `/` separators.
pub(crate) fn walk_files(dir: &Path) -> std::io::Result<Vec<String>> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let path = entry.path();
            if path.is_dir() {
                walk(&path, &rel, out)?;
            } else if path.is_file() {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, "", &mut files)?;
    files.sort();
    Ok(files)
}

/// The symlink target from `snapshots/<commit>/<file>` to `blobs/<etag>`, relative as Python
/// writes it, so the cache folder can move (or be mounted elsewhere) and stay valid.
pub(crate) fn blob_link_target(file: &str, etag: &str) -> PathBuf {
    let mut target = PathBuf::new();
    // One level for `<commit>`, one for `snapshots`, one per folder in the file's path.
    for _ in 0..file.split('/').count() + 1 {
        target.push(Component::ParentDir);
    }
    target.join("blobs").join(etag)
}

/// Point `snapshots/<commit>/<file>` at the blob. An existing valid pointer is kept; a dangling
/// one (its blob deleted) is replaced.
pub(crate) fn link_pointer(pointer: &Path, file: &str, etag: &str, blob: &Path) -> Result<(), HubError> {
    let cache_err =
        |path: &Path, action, source| HubError::Cache { path: path.to_path_buf(), action, source };
    if pointer.is_file() {
        return Ok(());
    }
    if let Some(parent) = pointer.parent() {
        std::fs::create_dir_all(parent).map_err(|e| cache_err(parent, "create a snapshot folder", e))?;
    }
    if pointer.symlink_metadata().is_ok() {
        std::fs::remove_file(pointer)
            .map_err(|e| cache_err(pointer, "replace a dangling snapshot link", e))?;
    }
    let target = blob_link_target(file, etag);
    match make_link(&target, blob, pointer) {
        Ok(()) => Ok(()),
        // Another process linked the same file meanwhile.
        Err(_) if pointer.is_file() => Ok(()),
        Err(e) => Err(cache_err(pointer, "link a snapshot file to its blob", e)),
    }
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, pointer: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, pointer)
}

/// Where symlinks need privileges (Windows without developer mode), Python copies the blob.
#[cfg(not(unix))]
fn make_link(target: &Path, blob: &Path, pointer: &Path) -> std::io::Result<()> {
    #[cfg(windows)]
    if std::os::windows::fs::symlink_file(target, pointer).is_ok() {
        return Ok(());
    }
    let _ = target;
    std::fs::copy(blob, pointer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_and_link_targets_match_python() {
        assert_eq!(repo_folder("stanfordnlp/imdb", RepoKind::Dataset), "datasets--stanfordnlp--imdb");
        assert_eq!(repo_folder("gpt2", RepoKind::Model), "models--gpt2");
        assert_eq!(blob_link_target("config.json", "abc"), PathBuf::from("../../blobs/abc"));
        assert_eq!(
            blob_link_target("plain_text/train-00000-of-00001.parquet", "abc"),
            PathBuf::from("../../../blobs/abc")
        );
        assert!(is_commit_hash("e6281661ce1c48d982bc483cf8a173c1bbeb5d31"));
        assert!(!is_commit_hash("E6281661CE1C48D982BC483CF8A173C1BBEB5D31"));
        assert!(!is_commit_hash("main"));
    }
}
