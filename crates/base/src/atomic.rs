//! Files written whole or not at all.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Write `bytes` to `path` through a temporary sibling, flushed to disk, and a rename (creating
/// the directory), so that a reader — or a run killed mid-write — never sees a partial file.
/// The temporary is removed when anything fails; an existing `path` is replaced only on
/// success. Safe for concurrent writers: each call has its own temporary (process id and a
/// per-process counter), and the last rename wins.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// The first of `inputs` that `output` would replace: the same file, through any spelling of its
/// path (symlinks, `..`). A command checks its output against what it reads before writing, so
/// that `-o` pointed at an input fails instead of destroying it.
pub fn replaces_input<'a>(output: &Path, inputs: impl IntoIterator<Item = &'a Path>) -> Option<&'a Path> {
    let out = output.canonicalize().ok()?;
    inputs.into_iter().find(|input| input.canonicalize().is_ok_and(|i| i == out))
}

/// The files of `dir` (not below it), for [`replaces_input`]: a model directory's.
pub fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect()
}

/// What an atomic write's temporary name holds after the file's name: `.{name}.tmp-{pid}-{n}`.
const TEMPORARY: &str = ".tmp-";

/// The file an atomic write's temporary `name` was for (`record.json` of
/// `.record.json.tmp-4242-0`), if `name` is one: what a kill during the write leaves.
pub fn temporary_for(name: &str) -> Option<&str> {
    name.strip_prefix('.')?.split_once(TEMPORARY).map(|(file, _)| file)
}

/// [`write_atomic`] for content streamed by `write` (large files that should not be held in
/// memory whole, such as checkpoints).
///
/// What `path` names is written, as a shell's `>` would: through a symbolic link its target
/// (the link stays), and a device or a named pipe (`/dev/stdout`, a FIFO) in place, not
/// atomically — a rename would put a plain file where the link or the node was. A directory is
/// refused.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"));
        }
        Ok(m) if !m.is_file() => {
            let mut w = BufWriter::new(std::fs::OpenOptions::new().write(true).open(path)?);
            write(&mut w)?;
            return w.flush();
        }
        _ => {}
    }
    // A link's target; a path not there yet (or a dangling link) is written where it is named.
    write_atomic_at(&path.canonicalize().unwrap_or_else(|_| path.to_path_buf()), write)
}

/// [`write_atomic_with`] to a regular file's `path` (or where none is yet).
fn write_atomic_at(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(
        ".{name}{TEMPORARY}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp)?);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/report.md");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("record.json");
        write_atomic(&p, b"old").unwrap();
        // A directory where the file should go: the rename fails.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_is_written_through_and_a_device_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.jsonl");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // A character device stays one: /dev/null takes the bytes, /dev/full refuses them.
        write_atomic(Path::new("/dev/null"), b"gone").unwrap();
        if Path::new("/dev/full").exists() {
            let e = write_atomic(Path::new("/dev/full"), b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(28), "{e}"); // ENOSPC
        }
        for device in ["/dev/null", "/dev/full"] {
            let kind = std::fs::symlink_metadata(device).map(|m| m.file_type());
            assert!(kind.map_or(true, |k| !k.is_file()), "{device} became a file");
        }
        assert_eq!(write_atomic(dir.path(), b"x").unwrap_err().kind(), std::io::ErrorKind::IsADirectory);
    }
}
