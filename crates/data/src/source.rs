//! Reading a data file whole, with the identity of the bytes read: size, modification time and
//! SHA-256, so that a run can say exactly which data it used.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::DataError;

/// One data file as it was read.
///
/// `sha256` is the hash of exactly the bytes that were parsed (the file is read whole, hashed,
/// then parsed from memory), so it identifies the data a run used even if the file is replaced
/// afterwards. `bytes` and `modified` are what the file system said while it was open: compare
/// them with [`SourceFile::check_unchanged`] to notice a file that changed since.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceFile {
    /// The path the file was read from (as given; a Hub cache path is a snapshot symlink).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its modification time, where the file system records one.
    pub modified: Option<SystemTime>,
    /// SHA-256 of its content, 64 lowercase hex digits.
    pub sha256: String,
}

impl SourceFile {
    /// Read the regular file `path` whole, with its identity.
    ///
    /// Refuses what is not a regular file (a directory, a FIFO, a socket, a device, a dangling
    /// symbolic link) without opening it for a blocking read, and a file whose size or
    /// modification time changed while it was read (a download or copy still in progress).
    pub(crate) fn read(path: &Path) -> Result<(Vec<u8>, SourceFile), DataError> {
        let file = open_regular(path)?;
        let before = file.metadata().map_err(|e| DataError::io(path, e))?;
        let mut content = Vec::new();
        // The size is a hint only: the file may have changed since it was measured.
        content.try_reserve_exact(before.len() as usize).map_err(|_| DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot hold its {} bytes in memory", before.len()),
            ),
        })?;
        (&file).read_to_end(&mut content).map_err(|e| DataError::io(path, e))?;
        let after = file.metadata().map_err(|e| DataError::io(path, e))?;
        if let Some(what) = changed(&before, &after, content.len() as u64) {
            return Err(DataError::ChangedWhileReading { path: path.to_path_buf(), what });
        }
        let source = SourceFile {
            path: path.to_path_buf(),
            bytes: content.len() as u64,
            modified: before.modified().ok(),
            sha256: hex(&Sha256::digest(&content)),
        };
        Ok((content, source))
    }

    /// Check that the file still has the size and modification time it had when it was read.
    ///
    /// This is a cheap look (one `stat`), not a new hash: a writer that keeps both the size and
    /// the modification time goes unnoticed, which ordinary tools (downloads, copies, editors)
    /// do not do.
    pub fn check_unchanged(&self) -> Result<(), DataError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| DataError::io(&self.path, e))?;
        let now = meta.modified().ok();
        let what = if meta.len() != self.bytes {
            Some(format!("its size was {} bytes and is now {}", self.bytes, meta.len()))
        } else if now != self.modified {
            Some(format!(
                "its modification time was {} and is now {}",
                describe_time(self.modified),
                describe_time(now)
            ))
        } else {
            None
        };
        match what {
            Some(what) => Err(DataError::ChangedSinceRead { path: self.path.clone(), what }),
            None => Ok(()),
        }
    }
}

/// SHA-256 over the content hashes of `sources`, in order: one identity for data read from
/// several files (train then test). Paths are left out, so the same files in another folder
/// give the same digest.
pub(crate) fn digest(sources: &[SourceFile]) -> String {
    let mut hasher = Sha256::new();
    for source in sources {
        hasher.update(source.bytes.to_le_bytes());
        hasher.update(source.sha256.as_bytes());
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

/// What differs between two looks at an open file, if anything.
fn changed(before: &Metadata, after: &Metadata, read: u64) -> Option<String> {
    if before.len() != read || after.len() != read {
        return Some(format!(
            "its size was {} bytes when opened, {read} bytes were read, and it is now {} bytes",
            before.len(),
            after.len()
        ));
    }
    if before.modified().ok() != after.modified().ok() {
        return Some("its modification time changed".into());
    }
    None
}

/// What a non-regular file is, for the error.
fn kind_of(meta: &Metadata) -> Option<&'static str> {
    let kind = meta.file_type();
    if kind.is_file() {
        return None;
    }
    if kind.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if kind.is_socket() {
            return Some("a socket");
        }
        if kind.is_block_device() || kind.is_char_device() {
            return Some("a device");
        }
    }
    Some("not a regular file")
}

fn not_regular(path: &Path, what: impl Into<String>) -> DataError {
    DataError::NotARegularFile { path: path.to_path_buf(), what: what.into() }
}

/// Open `path` for reading if it is a regular file (through symbolic links).
fn open_regular(path: &Path) -> Result<File, DataError> {
    // Look before opening: opening a FIFO for reading blocks until something writes to it.
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.is_symlink() => {
            let target = std::fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
            return Err(not_regular(
                path,
                format!("a dangling symbolic link (its target {target} does not exist)"),
            ));
        }
        Err(e) => return Err(DataError::io(path, e)),
    };
    if let Some(what) = kind_of(&meta) {
        return Err(not_regular(path, what));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Should a FIFO take the file's place between the look and the open, a non-blocking open
    // returns at once and the check below refuses it; regular files ignore the flag.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| DataError::io(path, e))?;
    let meta = file.metadata().map_err(|e| DataError::io(path, e))?;
    if let Some(what) = kind_of(&meta) {
        return Err(not_regular(path, what));
    }
    Ok(file)
}
