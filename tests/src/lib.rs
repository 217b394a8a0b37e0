//! What the end-to-end tests share: the workspace, the binaries under test, and the
//! environment a nested `cargo` or a Hub client must not inherit.

pub mod slurm;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// The target directory the running test was built in (`<target>/<profile>/deps/<test>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors().nth(3).expect("<target>/<profile>/deps/<exe>").to_path_buf()
}

/// Build `bertlab` and `xtask` in release (a no-op when they are up to date); their paths.
pub fn build_binaries() -> (PathBuf, PathBuf) {
    let target = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Not the variables cargo set for this test binary (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`):
    // build scripts that watch them would rerun and rebuild half the tree (as xtask/src/build.rs
    // explains for the nested build of `cargo xtask`).
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(key.as_str(), "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE")
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .args(["build", "--release", "-p", "bertlab", "-p", "xtask"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(workspace_root())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build --release -p bertlab -p xtask failed");
    let release = target.join("release");
    (release.join("xtask"), release.join("bertlab"))
}

/// The Hub variables of the caller's environment (CI sets HF_HUB_OFFLINE=1), which a test that
/// talks to a local Hub stand-in must not pass on.
pub const HUB_ENV: [&str; 7] = [
    "HF_HUB_OFFLINE",
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_CACHE",
    "HF_ENDPOINT",
    "BERTLAB_HUB_TIMEOUT_SECS",
    "BERTLAB_HUB_RETRIES",
];
