//! One process at a time in a directory: an OS file lock (`flock`), which the OS releases when
//! the process ends however it ends, so a killed process never leaves a stale lock and two that
//! start at once cannot both take it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A lock held until dropped.
pub struct DirLock {
    _file: File,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{path} is held by another process{holder}", path = path.display(), holder = holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it.
        holder: Option<u32>,
    },
    /// The directory to lock is a file.
    #[error("{dir}: a file, not a directory", dir = dir.display())]
    NotADirectory {
        /// The path given as the directory.
        dir: PathBuf,
    },
    /// The lock file cannot be created or locked.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl DirLock {
    /// Take `dir/name` (creating `dir`), writing this process's pid into it for the message
    /// another process gets; fails at once when another process holds it.
    pub fn acquire(dir: &Path, name: &str) -> Result<DirLock, LockError> {
        let path = dir.join(name);
        let io = |source| LockError::Io { path: path.clone(), source };
        if dir.exists() && !dir.is_dir() {
            return Err(LockError::NotADirectory { dir: dir.to_path_buf() });
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse().ok());
                return Err(LockError::Busy { path, holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_no_directory_to_lock() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "keep").unwrap();
        let err = DirLock::acquire(&file, ".lock").err().expect("refused");
        assert!(matches!(err, LockError::NotADirectory { .. }), "{err}");
        assert!(err.to_string().ends_with("a-file: a file, not a directory"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    }

    #[test]
    fn a_second_taker_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), ".lock").unwrap();
        match DirLock::acquire(dir.path(), ".lock") {
            Err(LockError::Busy { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("not busy: {:?}", other.err()),
        }
        drop(first);
        DirLock::acquire(dir.path(), ".lock").unwrap();
    }
}
