//! Where the GPU builds keep the kernels CubeCL compiles, so that the next process loads them
//! instead of compiling them again.
//!
//! CubeCL compiles each GPU kernel at first use (CUDA: NVRTC to PTX, about 1 s a kernel on the
//! H200 of issue 13) and, unless its configuration names a cache, again in every process. One
//! `bertlab train` of DistilBERT compiles a few hundred kernels, and `cargo xtask all` starts a
//! process per run: on the H200 the end-to-end stage compiled 231 kernels in its 108 s, and the
//! next process, with the cache, 16 in 8 s (BENCHMARKS.md). So the GPU builds turn CubeCL's
//! PTX cache on, in `~/.cache/bertlab/kernels` (or `$XDG_CACHE_HOME/bertlab/kernels`), unless
//! `BERTLAB_KERNEL_CACHE` says otherwise (a folder, or `off`) or a `cubecl.toml` (or a
//! `[cubecl]` section of `burn.toml`) in the working directory or above it names a cache of its
//! own. Everything else of that file, and CubeCL's environment variables, still apply.
//!
//! Inside that folder each build of the kernels has its own
//! (`bertlab_models::ops::KERNELS_BUILD`, a hash of their sources and of Cargo.lock): CubeCL
//! finds a cached kernel by its name and compile-time arguments only, so after an upgrade (or
//! an edit of a kernel) the old folder's kernels would be loaded in place of the new code.
//! Each process that uses a build's folder touches a marker file in it
//! ([`LAST_USED_MARKER`]), and removes the folders of other builds whose marker is older than
//! [`UNUSED_FOR`] (30 days): two installed versions may share the cache, so a folder goes only
//! when no process has used it for that long, and only folders bertlab marked are touched.
//!
//! Autotuning results (which matmul and reduction kernel is fastest for each shape class, found
//! by timing every candidate: minutes on a cold GPU) go beside them, in
//! `~/.cache/bertlab/autotune` (`BERTLAB_AUTOTUNE_CACHE` a folder, or `off` for CubeCL's own
//! place). CubeCL's default is the `target/` folder of whichever Cargo project the process
//! stands in, else `~/.cache/cubecl`: a run started from another folder tuned everything again.
//! A `cubecl.toml` whose `[autotune]` names a cache other than `target` keeps it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a build's kernel folder may go unused before a process of another build removes it.
#[cfg_attr(not(any(feature = "cuda-unfused", feature = "wgpu-unfused")), allow(dead_code))] // (CPU build)
pub const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The file in a build's kernel folder whose modification time is when a process last used it.
#[cfg_attr(not(any(feature = "cuda-unfused", feature = "wgpu-unfused")), allow(dead_code))] // (CPU build)
pub const LAST_USED_MARKER: &str = ".bertlab-last-used";

/// Whether `name` is a build's folder name (`KERNELS_BUILD`: 16 lowercase hex digits).
#[cfg_attr(not(any(feature = "cuda-unfused", feature = "wgpu-unfused")), allow(dead_code))] // (CPU build)
fn is_build_name(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Marks `base/current` as used at `now` (its [`LAST_USED_MARKER`]) and removes the other
/// builds' folders of `base` whose marker is older than `now - unused_for`; returns the
/// folders removed. Folders without a marker (not made by this code) and anything not named
/// like a build are left alone. A folder another process removes at the same time, or one
/// that cannot be removed, is skipped: the cache is a speed-up, never a reason to fail.
#[cfg_attr(not(any(feature = "cuda-unfused", feature = "wgpu-unfused")), allow(dead_code))] // (CPU build)
pub fn mark_and_prune(base: &Path, current: &str, now: SystemTime, unused_for: Duration) -> Vec<PathBuf> {
    let marker = base.join(current).join(LAST_USED_MARKER);
    let touched = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&marker)
        .and_then(|f| f.set_modified(now));
    if let Err(e) = touched {
        tracing::debug!("kernel cache: could not mark {} ({e})", marker.display());
    }
    let Some(cutoff) = now.checked_sub(unused_for) else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(base) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == current || !is_build_name(name) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let last_used = std::fs::metadata(entry.path().join(LAST_USED_MARKER)).and_then(|m| m.modified());
        if last_used.is_ok_and(|t| t < cutoff) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// The kernel cache folder for this environment: `BERTLAB_KERNEL_CACHE` (`off`, `0` or
/// `none` for no cache), else `$XDG_CACHE_HOME/bertlab/kernels`, else
/// `$HOME/.cache/bertlab/kernels`; `None` when off or no home is known.
#[cfg_attr(not(any(feature = "cuda-unfused", feature = "wgpu-unfused")), allow(dead_code))] // (CPU build)
pub fn cache_dir(var: Option<&str>, xdg_cache_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    let nonempty = |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty()).map(PathBuf::from);
    match var.map(str::trim) {
        Some("off" | "0" | "none") => None,
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => nonempty(xdg_cache_home)
            .or_else(|| nonempty(home).map(|h| h.join(".cache")))
            .map(|c| c.join("bertlab").join("kernels")),
    }
}

/// The autotune cache folder: `BERTLAB_AUTOTUNE_CACHE` (`off`, `0` or `none`: CubeCL's own
/// place), else `$XDG_CACHE_HOME/bertlab/autotune`, else `$HOME/.cache/bertlab/autotune`.
#[cfg_attr(not(any(feature = "cuda-unfused", feature = "wgpu-unfused")), allow(dead_code))] // (CPU build)
pub fn autotune_dir(var: Option<&str>, xdg_cache_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    let kernels = cache_dir(var, xdg_cache_home, home)?;
    match var.map(str::trim) {
        Some(dir) if !dir.is_empty() => Some(kernels),
        _ => kernels.parent().map(|bertlab| bertlab.join("autotune")),
    }
}

/// Give CubeCL its configuration with the kernel cache (see the module docs), once, before
/// the first device is made. Does nothing when CubeCL's configuration was already read.
#[cfg(any(feature = "cuda-unfused", feature = "wgpu-unfused"))]
pub fn configure() {
    setup(None);
}

/// What [`setup`] did, once per process.
#[cfg(any(feature = "cuda-unfused", feature = "wgpu-unfused"))]
struct Setup {
    /// The kernel cache turned on, if any.
    kernel_cache: Option<PathBuf>,
    /// The file CubeCL's launch and compilation logs go to, if turned on.
    log: Option<PathBuf>,
}

/// For `bench step-profile` ([`bertlab_bench::KernelLog`]): [`configure`], with CubeCL's launch
/// log (`[profiling]`, level `minimal`, or `basic` for [`LaunchDetail::Durations`]) and
/// compilation log (`[compilation]`, level `basic`) appending to `file`, in place of whatever
/// `cubecl.toml` or `CUBECL_DEBUG_LOG` say for those two loggers (the bench reads the file and
/// must find exactly those lines). An error when CubeCL was configured already, without the log.
#[cfg(any(feature = "cuda-unfused", feature = "wgpu-unfused"))]
pub fn with_kernel_log(
    file: &std::path::Path,
    detail: bertlab_bench::LaunchDetail,
) -> anyhow::Result<bertlab_bench::KernelLogSetup> {
    let done = setup(Some((file, detail)));
    if done.log.as_deref() != Some(file) {
        anyhow::bail!(
            "CubeCL was configured before its kernel log could be turned on into {}",
            file.display()
        );
    }
    Ok(bertlab_bench::KernelLogSetup { kernel_cache: done.kernel_cache.clone() })
}

/// The configuration, set on the first call (with `log` if that call has one).
#[cfg(any(feature = "cuda-unfused", feature = "wgpu-unfused"))]
fn setup(log: Option<(&std::path::Path, bertlab_bench::LaunchDetail)>) -> &'static Setup {
    use burn::cubecl::config::{
        cache::CacheConfig, compilation::CompilationLogLevel, profiling::ProfilingLogLevel,
        CubeClRuntimeConfig, RuntimeConfig,
    };
    static SETUP: std::sync::OnceLock<Setup> = std::sync::OnceLock::new();
    SETUP.get_or_init(|| {
        if CubeClRuntimeConfig::storage().lock().is_some() {
            // (set() would panic)
            return Setup { kernel_cache: None, log: None };
        }
        let mut config = CubeClRuntimeConfig::from_current_dir();
        if config.compilation.cache.is_none() {
            let var = std::env::var("BERTLAB_KERNEL_CACHE").ok();
            let xdg = std::env::var("XDG_CACHE_HOME").ok();
            let home = std::env::var("HOME").ok();
            // One folder a build of the kernels (`KERNELS_BUILD`): CubeCL would hand back
            // another build's kernel of the same name and arguments, whatever its code.
            let build = bertlab_models::ops::KERNELS_BUILD;
            if let Some(base) = cache_dir(var.as_deref(), xdg.as_deref(), home.as_deref()) {
                let dir = base.join(build);
                match usable(&dir) {
                    Ok(()) => {
                        for old in mark_and_prune(&base, build, std::time::SystemTime::now(), UNUSED_FOR) {
                            tracing::info!("kernel cache: removed {}, unused for 30 days", old.display());
                        }
                        config.compilation.cache = Some(CacheConfig::File(dir))
                    }
                    // A cache is a speed-up only: run without one rather than fail.
                    Err(e) => tracing::warn!(
                        "kernel cache {} is not usable ({e}); compiling kernels without one \
                         (set BERTLAB_KERNEL_CACHE to another folder, or to off)",
                        dir.display()
                    ),
                }
            }
        }
        if matches!(config.autotune.cache, CacheConfig::Target) {
            let var = std::env::var("BERTLAB_AUTOTUNE_CACHE").ok();
            let xdg = std::env::var("XDG_CACHE_HOME").ok();
            let home = std::env::var("HOME").ok();
            if let Some(dir) = autotune_dir(var.as_deref(), xdg.as_deref(), home.as_deref()) {
                match usable(&dir) {
                    Ok(()) => config.autotune.cache = CacheConfig::File(dir),
                    Err(e) => tracing::warn!(
                        "autotune cache {} is not usable ({e}); using CubeCL's own (set \
                         BERTLAB_AUTOTUNE_CACHE to another folder, or to off)",
                        dir.display()
                    ),
                }
            }
        }
        let mut config = config.override_from_env();
        if let Some((file, detail)) = log {
            // One file for both: CubeCL writes both logs through one channel per device, so
            // their lines keep the order of the events (the bench splits them at markers).
            let p = &mut config.profiling.logger;
            (p.file, p.append, p.stdout, p.stderr, p.log) =
                (Some(file.to_path_buf()), true, false, false, None);
            p.level = match detail {
                bertlab_bench::LaunchDetail::Names => ProfilingLogLevel::Minimal,
                bertlab_bench::LaunchDetail::Durations => ProfilingLogLevel::Basic,
            };
            let c = &mut config.compilation.logger;
            (c.file, c.append, c.stdout, c.stderr, c.log) =
                (Some(file.to_path_buf()), true, false, false, None);
            c.level = CompilationLogLevel::Basic;
        }
        let kernel_cache = config.compilation.cache.as_ref().map(CacheConfig::root);
        CubeClRuntimeConfig::set(config);
        Setup { kernel_cache, log: log.map(|(file, _)| file.to_path_buf()) }
    })
}

/// Create `dir` if needed: CubeCL's cache gives up (after waiting on its lock file) when the
/// folder is missing.
#[cfg(any(feature = "cuda-unfused", feature = "wgpu-unfused"))]
fn usable(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_follows_the_variable_then_xdg_then_home() {
        let p = |s: &str| Some(Path::new(s).to_path_buf());
        assert_eq!(cache_dir(None, None, Some("/home/u")), p("/home/u/.cache/bertlab/kernels"));
        assert_eq!(cache_dir(None, Some("/xdg"), Some("/home/u")), p("/xdg/bertlab/kernels"));
        assert_eq!(cache_dir(Some(""), Some(" "), Some("/home/u")), p("/home/u/.cache/bertlab/kernels"));
        assert_eq!(cache_dir(Some("/fast/kernels"), Some("/xdg"), Some("/home/u")), p("/fast/kernels"));
        for off in ["off", "0", "none", " off "] {
            assert_eq!(cache_dir(Some(off), Some("/xdg"), Some("/home/u")), None);
        }
        assert_eq!(cache_dir(None, None, None), None);
    }

    #[test]
    fn autotune_results_sit_beside_the_kernels() {
        let p = |s: &str| Some(Path::new(s).to_path_buf());
        assert_eq!(autotune_dir(None, None, Some("/home/u")), p("/home/u/.cache/bertlab/autotune"));
        assert_eq!(autotune_dir(None, Some("/xdg"), Some("/home/u")), p("/xdg/bertlab/autotune"));
        assert_eq!(autotune_dir(Some("/fast/tuned"), Some("/xdg"), None), p("/fast/tuned"));
        assert_eq!(autotune_dir(Some("off"), Some("/xdg"), Some("/home/u")), None);
        assert_eq!(autotune_dir(None, None, None), None);
    }

    #[test]
    fn only_marked_builds_unused_for_the_period_are_pruned() {
        let base = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(24 * 60 * 60);
        let now = SystemTime::now();
        let folder = |name: &str, marked_days_ago: Option<u64>| {
            let dir = base.path().join(name);
            std::fs::create_dir_all(dir.join("cuda/0.10.0")).unwrap();
            std::fs::write(dir.join("cuda/0.10.0/kernels.json"), "{}").unwrap();
            if let Some(days) = marked_days_ago {
                let marker = std::fs::File::create(dir.join(LAST_USED_MARKER)).unwrap();
                marker.set_modified(now - day * days as u32).unwrap();
            }
            dir
        };
        let current = "0123456789abcdef";
        std::fs::create_dir_all(base.path().join(current)).unwrap();
        let stale = folder("aaaaaaaaaaaaaaaa", Some(31));
        let recent = folder("bbbbbbbbbbbbbbbb", Some(29));
        let unmarked = folder("cccccccccccccccc", None);
        let not_a_build = folder("cuda", Some(400));
        let upper_case = folder("DDDDDDDDDDDDDDDD", Some(400));
        std::fs::write(base.path().join("eeeeeeeeeeeeeeee"), "a file, not a folder").unwrap();

        let removed = mark_and_prune(base.path(), current, now, UNUSED_FOR);

        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        for kept in [&recent, &unmarked, &not_a_build, &upper_case] {
            assert!(kept.join("cuda/0.10.0/kernels.json").is_file(), "{} was removed", kept.display());
        }
        assert!(base.path().join("eeeeeeeeeeeeeeee").is_file());
        let marked = std::fs::metadata(base.path().join(current).join(LAST_USED_MARKER)).unwrap();
        let off = |t: SystemTime| t.duration_since(now).or_else(|_| now.duration_since(t)).unwrap();
        assert!(off(marked.modified().unwrap()) < Duration::from_secs(2), "the marker says {marked:?}");
        // The marker is touched, not rewritten: the current build's folder is never pruned.
        let later = now + day * 40;
        assert_eq!(mark_and_prune(base.path(), current, later, UNUSED_FOR), vec![recent.clone()]);
        assert!(base.path().join(current).is_dir());
    }

    #[test]
    fn build_names_are_sixteen_lowercase_hex_digits() {
        assert!(is_build_name(bertlab_models::ops::KERNELS_BUILD));
        for name in ["0123456789abcde", "0123456789abcdef0", "0123456789abcdeg", "0123456789ABCDEF", "vulkan"]
        {
            assert!(!is_build_name(name), "{name}");
        }
    }
}
