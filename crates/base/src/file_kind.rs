//! What a path that is no regular file is, for the errors that refuse it.

use std::fs::Metadata;

/// What `meta` (through symbolic links) describes when it is no regular file: `a directory`,
/// `a FIFO (named pipe)`, `a socket`, `a device` or `a special file`; `None` for a regular
/// file. Reading a FIFO waits for a writer and a device may never end, so a command that reads
/// a file refuses these before opening it.
pub fn not_regular_kind(meta: &Metadata) -> Option<&'static str> {
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
    Some("a special file")
}
