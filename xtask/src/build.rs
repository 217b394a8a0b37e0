//! Finding a GPU, building `bertlab` with the backend's feature and locating the binary.

use crate::{workspace_root, Backend};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `nvidia-smi -L` lists at least one GPU.
pub fn gpu_visible() -> bool {
    Command::new("nvidia-smi")
        .arg("-L")
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("GPU"))
        .unwrap_or(false)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// A `cargo` command without the variables cargo set for this process when `cargo xtask` (=
/// `cargo run -p xtask`) started it: `CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …. Build scripts that
/// watch one of them (ring's watches `CARGO_MANIFEST_DIR`) would see it change and rerun, so the
/// nested build would recompile ring, rustls, ureq and everything above them, and the next plain
/// `cargo build` would recompile them back.
pub fn cargo_command() -> Command {
    let mut cmd = Command::new(cargo());
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if is_set_by_cargo_run(key) {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The variables cargo sets for the binary it runs (its own package's), as opposed to those the
/// user set for cargo (`CARGO_TARGET_DIR`, `CARGO_HOME`, …), which the nested build must keep.
fn is_set_by_cargo_run(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_MANIFEST_")
        || matches!(key, "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE")
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace), else what
/// `cargo metadata` says.
pub fn target_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return Ok(if dir.is_absolute() { dir } else { workspace_root().join(dir) });
    }
    let out = cargo_command()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running `cargo metadata`")?;
    if !out.status.success() {
        bail!("`cargo metadata` failed ({})", out.status);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing `cargo metadata` output")?;
    let dir = v["target_directory"].as_str().context("`cargo metadata` gave no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// `cargo build --release -p bertlab [--features cuda|wgpu|vulkan]`, once; the binary's path.
pub fn build_bertlab(backend: Backend) -> Result<PathBuf> {
    let mut cmd = cargo_command();
    cmd.args(["build", "--release", "-p", "bertlab"]).current_dir(workspace_root());
    let what = backend.name();
    let features = match backend {
        Backend::Cpu => None,
        Backend::Cuda | Backend::Wgpu | Backend::Vulkan => Some(what),
    };
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    eprintln!(
        "building bertlab ({what} backend): cargo build --release -p bertlab{}",
        features.map(|f| format!(" --features {f}")).unwrap_or_default()
    );
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("`cargo build --release -p bertlab` failed ({status}); fix the build, or pass --bertlab PATH");
    }
    let bin = target_dir()?.join("release").join(format!("bertlab{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!("built bertlab, but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// The binary runs and has the `train` subcommand.
pub fn check_bertlab(bin: &std::path::Path) -> Result<()> {
    let out = Command::new(bin)
        .args(["train", "--help"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} has no working `train` subcommand ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_variables_cargo_run_sets_are_removed() {
        for key in ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_PKG_NAME", "CARGO_PKG_VERSION_MAJOR"]
        {
            assert!(is_set_by_cargo_run(key), "{key}");
        }
        for key in ["CARGO", "CARGO_TARGET_DIR", "CARGO_HOME", "CARGO_BUILD_JOBS", "RUSTFLAGS", "PATH"] {
            assert!(!is_set_by_cargo_run(key), "{key}");
        }
    }
}
