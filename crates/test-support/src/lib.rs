#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Resolve the `BERTLAB_SHARED` test-data folder (default `../shared` next to the workspace).
///
/// A relative `BERTLAB_SHARED` is taken from the current directory when it exists there, else
/// from the workspace root: `cargo test` runs each crate's tests in the crate's own folder, so
/// `BERTLAB_SHARED=../shared` set at the workspace root would otherwise silently skip them.
/// Tests call this and skip, with a printed reason, when it returns `None` — except under
/// `BERTLAB_REQUIRE_SHARED=1` (CI sets it), where a missing folder panics, so that no test can
/// pass by skipping there.
pub fn shared_dir() -> Option<PathBuf> {
    // CARGO_MANIFEST_DIR of this crate is <workspace>/crates/test-support.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let require = std::env::var("BERTLAB_REQUIRE_SHARED").is_ok_and(|v| v.trim() == "1");
    match find_shared(std::env::var_os("BERTLAB_SHARED"), &workspace) {
        Ok(dir) => Some(dir),
        Err(missing) if require => panic!(
            "BERTLAB_REQUIRE_SHARED=1, but the shared test data is not at {} (set BERTLAB_SHARED to it)",
            missing.display()
        ),
        Err(_) => None,
    }
}

/// The rule of [`shared_dir`] without the environment: the folder `bertlab_shared` (the value
/// of `BERTLAB_SHARED`, if set) names, canonicalized, or `Err` with the path that was looked at.
fn find_shared(bertlab_shared: Option<OsString>, workspace: &Path) -> Result<PathBuf, PathBuf> {
    let dir = match bertlab_shared {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_relative() && !d.is_dir() {
                workspace.join(d)
            } else {
                d
            }
        }
        None => workspace.join("../shared"),
    };
    if dir.is_dir() {
        Ok(dir.canonicalize().unwrap_or(dir))
    } else {
        Err(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_wins_then_the_workspace_then_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let workspace = root.join("checkout");
        std::fs::create_dir_all(workspace.join("fixtures-here")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();

        // An absolute BERTLAB_SHARED is taken as it is.
        let elsewhere = root.join("elsewhere");
        assert_eq!(find_shared(Some(elsewhere.clone().into()), &workspace), Ok(elsewhere));
        // A relative one missing from the current directory is taken from the workspace root.
        assert_eq!(
            find_shared(Some("fixtures-here".into()), &workspace),
            Ok(workspace.join("fixtures-here"))
        );
        // Unset: ../shared beside the workspace, reported with the path looked at when missing.
        assert_eq!(find_shared(None, &workspace), Err(workspace.join("../shared")));
        std::fs::create_dir_all(root.join("shared")).unwrap();
        assert_eq!(find_shared(None, &workspace), Ok(root.join("shared")));
        // A folder that is nowhere.
        let nowhere = root.join("nowhere");
        assert_eq!(find_shared(Some(nowhere.clone().into()), &workspace), Err(nowhere));
    }
}
