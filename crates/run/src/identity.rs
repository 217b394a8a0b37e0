//! The identity of input files by content: what a run read, so that a stale result is never
//! taken for a run of other data or another model that a reference now points to.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A file as a run read it: size and SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

impl FileIdentity {
    /// Read `path` through once and hash it.
    pub fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let mut file = std::fs::File::open(path)?;
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
        Ok(FileIdentity { path: path.to_path_buf(), bytes, sha256: hex(&hasher.finalize()) })
    }
}

/// The identity of several files at once: SHA-256 over each one's name (relative to `root`), size
/// and content hash, in the order given.
pub fn files_digest(root: &Path, files: &[FileIdentity]) -> String {
    let mut hasher = Sha256::new();
    for f in files {
        let name = f.path.strip_prefix(root).unwrap_or(&f.path);
        hasher.update(name.to_string_lossy().as_bytes());
        hasher.update(f.bytes.to_le_bytes());
        hasher.update(f.sha256.as_bytes());
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        assert_eq!(ia.sha256, FileIdentity::of(&b).unwrap().sha256);
        let d1 = files_digest(dir.path(), std::slice::from_ref(&ia));
        std::fs::write(&a, b"abd").unwrap();
        let d2 = files_digest(dir.path(), &[FileIdentity::of(&a).unwrap()]);
        assert_ne!(d1, d2);
    }
}
