//! What the CLI's integration tests share.
#![allow(dead_code)] // each test file uses a part

use std::path::PathBuf;

/// The `bertlab` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_bertlab");

/// `$BERTLAB_SHARED` (default `../shared`), or `None` after printing why the test skips.
pub fn shared() -> Option<PathBuf> {
    let dir = bertlab_hub::shared_dir();
    if dir.is_none() {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
    }
    dir
}
