//! What the CLI's integration tests share.
#![allow(dead_code)] // each test file uses a part

use std::path::PathBuf;

/// The `bertlab` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_bertlab");

/// `$BERTLAB_SHARED` (default `../shared`), or `None` after printing why the test skips.
///
/// With `BERTLAB_REQUIRE_SHARED=1` (CI) a missing folder fails the test instead: a CI run that
/// skipped every fixture test would pass while checking nothing.
pub fn shared() -> Option<PathBuf> {
    let dir = bertlab_test_support::shared_dir();
    if dir.is_none() {
        if std::env::var("BERTLAB_REQUIRE_SHARED").is_ok_and(|v| v == "1") {
            panic!(
                "BERTLAB_REQUIRE_SHARED=1 but the shared fixtures were not found: set BERTLAB_SHARED \
                 to the shared folder (it holds data/hf-imdb and fixtures/)"
            );
        }
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
    }
    dir
}
