//! Reading a data file whole, with the identity of the bytes read: size, modification time and
//! SHA-256, so that a run can say exactly which data it used.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

use crate::DataError;

pub use bertlab_run::identity::FileIdentity;

/// Read the regular file `path` whole, with the identity of the bytes read.
///
/// Refuses what is not a regular file (a directory, a FIFO, a socket, a device, a dangling
/// symbolic link) without opening it for a blocking read, and a file whose size or
/// modification time changed while it was read (a download or copy still in progress). The
/// identity's hash is of exactly the bytes that are parsed (the file is read whole, hashed, then
/// parsed from memory), so it identifies the data a run used even if the file is replaced later.
pub(crate) fn read_file(path: &Path) -> Result<(Vec<u8>, FileIdentity), DataError> {
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
    let identity = FileIdentity::of_bytes(path, &content, before.modified().ok());
    Ok((content, identity))
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

fn not_regular(path: &Path, what: impl Into<String>) -> DataError {
    DataError::NotARegularFile { path: path.to_path_buf(), what: what.into() }
}

/// Open `path` for reading if it is a regular file (through symbolic links).
pub(crate) fn open_regular(path: &Path) -> Result<File, DataError> {
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
    if let Some(what) = bertlab_run::not_regular_kind(&meta) {
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
    if let Some(what) = bertlab_run::not_regular_kind(&meta) {
        return Err(not_regular(path, what));
    }
    Ok(file)
}
