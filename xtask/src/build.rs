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

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace), else what
/// `cargo metadata` says.
pub fn target_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return Ok(if dir.is_absolute() { dir } else { workspace_root().join(dir) });
    }
    let out = Command::new(cargo())
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

/// `cargo build --release -p bertlab [--features cuda|wgpu]`, once; the binary's path.
pub fn build_bertlab(backend: Backend) -> Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.args(["build", "--release", "-p", "bertlab"]).current_dir(workspace_root());
    let what = backend.name();
    let features = match backend {
        Backend::Cpu => None,
        Backend::Cuda | Backend::Wgpu => Some(what),
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
