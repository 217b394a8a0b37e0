//! The identity of input files by content: what a run read, so that a stale result is never
//! taken for a run of other data or another model that a reference now points to.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A file as it was read: size, modification time and SHA-256 of its bytes.
///
/// `bytes` and `modified` are what the file system said when it was read: compare them with
/// [`FileIdentity::check_unchanged`] to notice a file that changed since.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileIdentity {
    /// The path the file was read from (as given; a Hub cache path is a snapshot symlink).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its modification time, where the file system records one.
    pub modified: Option<SystemTime>,
    /// SHA-256 of its content, 64 lowercase hex digits.
    pub sha256: String,
}

/// A file that is no longer as it was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: changed since it was read ({what}); results computed from it no longer describe the file", path = path.display())]
pub struct FileChanged {
    /// The file.
    pub path: PathBuf,
    /// What changed.
    pub what: String,
}

impl FileIdentity {
    /// Read `path` through once and hash it.
    pub fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let mut file = std::fs::File::open(path)?;
        let modified = file.metadata()?.modified().ok();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(FileIdentity { path: path.to_path_buf(), bytes, modified, sha256: hex(&hasher.finalize()) })
    }

    /// The identity of `content`, read from `path` when it had modification time `modified`.
    pub fn of_bytes(path: &Path, content: &[u8], modified: Option<SystemTime>) -> FileIdentity {
        FileIdentity {
            path: path.to_path_buf(),
            bytes: content.len() as u64,
            modified,
            sha256: hex(&Sha256::digest(content)),
        }
    }

    /// Check that the file still has the size and modification time it had when it was read.
    ///
    /// A cheap look (one `stat`), not a new hash: a writer that keeps both the size and the
    /// modification time goes unnoticed, which ordinary tools (downloads, copies, editors) do not.
    pub fn check_unchanged(&self) -> Result<(), FileChanged> {
        let changed = |what: String| Err(FileChanged { path: self.path.clone(), what });
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => return changed(format!("it cannot be read now: {e}")),
        };
        let now = meta.modified().ok();
        if meta.len() != self.bytes {
            return changed(format!("its size was {} bytes and is now {}", self.bytes, meta.len()));
        }
        if now != self.modified {
            return changed(format!(
                "its modification time was {} and is now {}",
                describe_time(self.modified),
                describe_time(now)
            ));
        }
        Ok(())
    }
}

/// One identity for several files read together (a dataset's train then test file): SHA-256
/// over each one's size and content hash, in order. Paths are left out, so the same files in
/// another folder give the same digest.
pub fn files_digest(files: &[FileIdentity]) -> String {
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(f.bytes.to_le_bytes());
        hasher.update(f.sha256.as_bytes());
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe_time(time: Option<SystemTime>) -> String {
    match time.map(|t| t.duration_since(SystemTime::UNIX_EPOCH)) {
        Some(Ok(d)) => format!("{}.{:09} s after the Unix epoch", d.as_secs(), d.subsec_nanos()),
        Some(Err(_)) => "before the Unix epoch".into(),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_follows_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"abc").unwrap();
        std::fs::write(&b, b"abc").unwrap();
        let ia = FileIdentity::of(&a).unwrap();
        // SHA-256("abc"), FIPS 180-2's example.
        assert_eq!(ia.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(ia.bytes, 3);
        assert_eq!(ia, FileIdentity::of_bytes(&a, b"abc", ia.modified));
        assert_eq!(ia.sha256, FileIdentity::of(&b).unwrap().sha256);
        let d1 = files_digest(std::slice::from_ref(&ia));
        assert_eq!(d1, files_digest(&[FileIdentity::of(&b).unwrap()]), "paths are left out");
        ia.check_unchanged().unwrap();
        std::fs::write(&a, b"abcd").unwrap();
        let e = ia.check_unchanged().unwrap_err().to_string();
        assert!(e.contains("changed since it was read (its size was 3 bytes and is now 4)"), "{e}");
        assert_ne!(files_digest(&[FileIdentity::of(&a).unwrap()]), d1);
    }
}
