#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::path::{Path, PathBuf};

mod cache;
mod download;
mod error;
mod net;

pub use error::{FailedRequest, HubError};
pub use net::NetworkSettings;

/// The Hub's address when neither [`HubOptions::endpoint`] nor `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Whether a Hub repository holds a model or a dataset (they live in different namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// `https://huggingface.co/<id>`; cache folder `models--<org>--<name>`.
    Model,
    /// `https://huggingface.co/datasets/<id>`; cache folder `datasets--<org>--<name>`.
    Dataset,
}

impl RepoKind {
    /// `"model"` or `"dataset"`, as messages name it.
    pub fn name(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }
}

/// Where the files of a repository come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoRef {
    /// A directory on disk holding the repository's files (a Hub snapshot or an export).
    Local(PathBuf),
    /// A repository on the Hub, at a revision (branch, tag or commit hash).
    Hub {
        /// `org/name`.
        id: String,
        /// Model or dataset.
        kind: RepoKind,
        /// Branch, tag or 40-hex commit; `main` when not pinned.
        revision: String,
    },
}

/// How Hub lookups behave. `HubOptions::default()` reads the usual environment variables (see
/// the crate documentation); every field set here takes precedence over them.
#[derive(Clone, Default)]
pub struct HubOptions {
    /// Use the local cache only, never the network. Also switched on by `HF_HUB_OFFLINE=1`.
    pub offline: bool,
    /// Cache root override (the folder holding `models--…`); default `HF_HUB_CACHE`, else
    /// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Show download progress bars (on a terminal only).
    pub progress: bool,
    /// The Hub to talk to, e.g. `https://huggingface.co` or a mirror; default `HF_ENDPOINT`, else
    /// [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// Access token for private and gated repositories; default `HF_TOKEN`, else the file
    /// `$HF_HOME/token` that `huggingface-cli login` writes.
    pub token: Option<String>,
    /// Timeouts and retries; default [`NetworkSettings::from_env`].
    pub network: Option<NetworkSettings>,
    /// Read none of the `HF_*` and `BERTLAB_HUB_*` environment variables: only the fields above
    /// count. For tests, which run in parallel in one process and share its environment (CI
    /// sets `HF_HUB_OFFLINE=1` for all of them).
    pub ignore_env: bool,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("offline", &self.offline)
            .field("cache_dir", &self.cache_dir)
            .field("progress", &self.progress)
            .field("endpoint", &self.endpoint)
            // A token in a debug print would end up in logs.
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("network", &self.network)
            .field("ignore_env", &self.ignore_env)
            .finish()
    }
}

impl HubOptions {
    /// True when either the option or the `HF_HUB_OFFLINE` environment variable asks for it.
    pub fn is_offline(&self) -> bool {
        self.offline || (!self.ignore_env && env_offline())
    }

    /// The cache root (the folder holding `models--…` and `datasets--…`).
    pub fn cache_root(&self) -> Result<PathBuf, HubError> {
        if let Some(dir) = &self.cache_dir {
            return Ok(dir.clone());
        }
        if let Some(dir) = self.var("HF_HUB_CACHE") {
            return Ok(expand_home(&dir));
        }
        self.hf_home().map(|home| home.join("hub")).ok_or(HubError::NoCacheDir)
    }

    /// The Hub endpoint in use, without a trailing `/`.
    pub fn endpoint_url(&self) -> String {
        let endpoint = self.endpoint.clone().or_else(|| self.var("HF_ENDPOINT"));
        endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT).trim_end_matches('/').to_string()
    }

    /// The timeouts and retries in use: [`HubOptions::network`], else from the environment.
    pub fn network_settings(&self) -> Result<NetworkSettings, HubError> {
        match self.network {
            Some(settings) => Ok(settings),
            None if self.ignore_env => Ok(NetworkSettings::default()),
            None => NetworkSettings::from_env(),
        }
    }

    /// The token sent to the endpoint, if any.
    fn resolved_token(&self) -> Option<String> {
        if let Some(token) = &self.token {
            return Some(token.clone());
        }
        if let Some(token) = self.var("HF_TOKEN") {
            return Some(token.trim().to_string());
        }
        let path = match self.var("HF_TOKEN_PATH") {
            Some(path) => expand_home(&path),
            None => self.hf_home()?.join("token"),
        };
        let token = std::fs::read_to_string(path).ok()?;
        let token = token.trim();
        (!token.is_empty()).then(|| token.to_string())
    }

    /// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`, as Python.
    fn hf_home(&self) -> Option<PathBuf> {
        if let Some(home) = self.var("HF_HOME") {
            return Some(expand_home(&home));
        }
        if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(xdg).join("huggingface"));
        }
        Some(home_dir()?.join(".cache").join("huggingface"))
    }

    /// A non-empty environment variable, unless [`HubOptions::ignore_env`].
    fn var(&self, name: &str) -> Option<String> {
        if self.ignore_env {
            return None;
        }
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

fn env_offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").as_deref().map(str::trim),
        Ok("1") | Ok("true") | Ok("TRUE") | Ok("True") | Ok("yes") | Ok("on")
    )
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `~/x` → `$HOME/x`, as Python's `expanduser` does for `HF_HOME`.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if path == "~" => home_dir().unwrap_or_else(|| PathBuf::from(path)),
        _ => PathBuf::from(path),
    }
}

impl RepoRef {
    /// Interpret `reference`: an existing directory, a path-looking string (`./x`, `/x`, `../x`,
    /// `~/x`), or else a Hub id optionally followed by `@revision`.
    pub fn parse(reference: &str, kind: RepoKind) -> RepoRef {
        let path = Path::new(reference);
        let looks_like_path = reference.starts_with('.')
            || reference.starts_with('/')
            || reference.starts_with('~')
            || reference.matches('/').count() > 1;
        if path.is_dir() || looks_like_path {
            return RepoRef::Local(path.to_path_buf());
        }
        let (id, revision) = match reference.split_once('@') {
            Some((id, rev)) => (id.to_string(), rev.to_string()),
            None => (reference.to_string(), "main".to_string()),
        };
        RepoRef::Hub { id, kind, revision }
    }

    /// A Hub repository at a revision.
    pub fn hub(id: impl Into<String>, kind: RepoKind, revision: impl Into<String>) -> RepoRef {
        RepoRef::Hub { id: id.into(), kind, revision: revision.into() }
    }

    /// A short human-readable name (the directory, or `id@revision`).
    pub fn display_name(&self) -> String {
        match self {
            RepoRef::Local(p) => p.display().to_string(),
            RepoRef::Hub { id, revision, .. } if revision == "main" => id.clone(),
            RepoRef::Hub { id, revision, .. } => format!("{id}@{revision}"),
        }
    }

    /// True when the file exists locally (directory or cache) without any download.
    pub fn has_local(&self, file: &str, options: &HubOptions) -> bool {
        match self {
            RepoRef::Local(dir) => dir.join(file).is_file(),
            RepoRef::Hub { id, kind, revision } => {
                let Ok(cache) = options.cache_root() else { return false };
                cache::check_file_name(file).is_ok()
                    && cache::cached_file(&cache, id, *kind, revision, file).is_some()
            }
        }
    }

    /// The local path of `file` (e.g. `config.json`, `plain_text/train-00000-of-00001.parquet`),
    /// downloading it into the HF cache when needed and allowed. A file already in the cache is
    /// returned without any request.
    pub fn file(&self, file: &str, options: &HubOptions) -> Result<PathBuf, HubError> {
        match self {
            RepoRef::Local(dir) => {
                let path = dir.join(file);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(HubError::MissingLocal { dir: dir.clone(), file: file.to_string() })
                }
            }
            RepoRef::Hub { id, kind, revision } => {
                cache::check_file_name(file)?;
                let cache = options.cache_root()?;
                if let Some(path) = cache::cached_file(&cache, id, *kind, revision, file) {
                    return Ok(path);
                }
                if options.is_offline() {
                    return Err(HubError::NotCached {
                        id: id.clone(),
                        kind: *kind,
                        revision: revision.clone(),
                        file: file.to_string(),
                        cache: cache.display().to_string(),
                    });
                }
                let repo = download::Repo { id, kind: *kind, revision };
                download::download(&repo, file, &cache, options)
            }
        }
    }

    /// The files of the repository, as relative paths with `/` separators, sorted: for a local
    /// directory the files below it; for a Hub repository the Hub's listing at the revision
    /// (`GET {endpoint}/api/{models|datasets}/{id}/revision/{revision}`), or offline the files
    /// of the cached snapshot of that revision (which may hold only some of them).
    pub fn list_files(&self, options: &HubOptions) -> Result<Vec<String>, HubError> {
        match self {
            RepoRef::Local(dir) => {
                cache::walk_files(dir).map_err(|source| HubError::LocalDir { dir: dir.clone(), source })
            }
            RepoRef::Hub { id, kind, revision } => {
                if options.is_offline() {
                    let cache = options.cache_root()?;
                    let not_cached = || HubError::SnapshotNotCached {
                        id: id.clone(),
                        kind: *kind,
                        revision: revision.clone(),
                        cache: cache.display().to_string(),
                    };
                    let dir = cache::snapshot_dir(&cache, id, *kind, revision).ok_or_else(not_cached)?;
                    return cache::walk_files(&dir).map_err(|_| not_cached());
                }
                download::list(&download::Repo { id, kind: *kind, revision }, options)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn parse_distinguishes_paths_and_ids() {
        assert_eq!(
            RepoRef::parse("google-bert/bert-base-uncased", RepoKind::Model),
            RepoRef::hub("google-bert/bert-base-uncased", RepoKind::Model, "main")
        );
        assert_eq!(
            RepoRef::parse("stanfordnlp/imdb@abc", RepoKind::Dataset),
            RepoRef::hub("stanfordnlp/imdb", RepoKind::Dataset, "abc")
        );
        assert_eq!(
            RepoRef::parse("../shared/models/x", RepoKind::Model),
            RepoRef::Local(PathBuf::from("../shared/models/x"))
        );
    }

    #[test]
    fn offline_reads_cache_by_ref_and_by_commit() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "e6281661ce1c48d982bc483cf8a173c1bbeb5d31";
        let repo = cache.path().join("datasets--stanfordnlp--imdb");
        write(&repo.join("refs/main"), commit);
        write(&repo.join("snapshots").join(commit).join("plain_text/a.parquet"), "x");
        let options = HubOptions {
            offline: true,
            cache_dir: Some(cache.path().into()),
            ignore_env: true,
            ..HubOptions::default()
        };
        for rev in ["main", commit] {
            let r = RepoRef::hub("stanfordnlp/imdb", RepoKind::Dataset, rev);
            let p = r.file("plain_text/a.parquet", &options).unwrap();
            assert!(p.ends_with("plain_text/a.parquet"));
            assert_eq!(r.list_files(&options).unwrap(), ["plain_text/a.parquet"]);
        }
        let r = RepoRef::hub("stanfordnlp/imdb", RepoKind::Dataset, commit);
        let err = r.file("plain_text/b.parquet", &options).unwrap_err().to_string();
        assert!(err.contains("plain_text/b.parquet") && err.contains("stanfordnlp/imdb"), "{err}");
        assert!(err.contains("--repo-type dataset"), "{err}");
        let err = RepoRef::hub("stanfordnlp/imdb", RepoKind::Dataset, "v2").list_files(&options).unwrap_err();
        assert!(err.to_string().contains("`v2`") && err.to_string().contains("stanfordnlp/imdb"), "{err}");
    }

    #[test]
    fn local_missing_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = RepoRef::Local(dir.path().into())
            .file("model.safetensors", &HubOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.safetensors") && err.contains("no such file"), "{err}");
        // There but no regular file: said so, not "no such file".
        std::fs::create_dir(dir.path().join("config.json")).unwrap();
        let err = RepoRef::Local(dir.path().into()).file("config.json", &HubOptions::default()).unwrap_err();
        assert!(err.to_string().ends_with("config.json: a directory, not a regular file"), "{err}");
    }

    #[test]
    fn local_listing_is_recursive_relative_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("plain_text/train-00000-of-00001.parquet"), "t");
        write(&dir.path().join("README.md"), "r");
        write(&dir.path().join("plain_text/test-00000-of-00001.parquet"), "t");
        let files = RepoRef::Local(dir.path().into()).list_files(&HubOptions::default()).unwrap();
        assert_eq!(
            files,
            [
                "README.md",
                "plain_text/test-00000-of-00001.parquet",
                "plain_text/train-00000-of-00001.parquet"
            ]
        );
        let missing = RepoRef::Local(dir.path().join("nope")).list_files(&HubOptions::default()).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn explicit_options_override_the_environment() {
        let options = HubOptions {
            endpoint: Some("http://127.0.0.1:9/".into()),
            cache_dir: Some("/tmp/x".into()),
            token: Some("hf_secret".into()),
            ignore_env: true,
            ..HubOptions::default()
        };
        assert_eq!(options.endpoint_url(), "http://127.0.0.1:9");
        assert_eq!(options.cache_root().unwrap(), PathBuf::from("/tmp/x"));
        assert_eq!(options.network_settings().unwrap(), NetworkSettings::default());
        assert!(!options.is_offline());
        assert!(!format!("{options:?}").contains("hf_secret"));
        let bare = HubOptions { ignore_env: true, ..HubOptions::default() };
        assert_eq!(bare.endpoint_url(), DEFAULT_ENDPOINT);
        assert_eq!(bare.resolved_token(), None);
    }

    #[test]
    fn errors_stay_small_enough_to_embed() {
        // bertlab-data and bertlab-models carry HubError inside their own errors, which clippy's
        // result_large_err refuses from 128 bytes on.
        assert!(std::mem::size_of::<HubError>() <= 104, "{}", std::mem::size_of::<HubError>());
    }

    #[test]
    fn file_names_that_leave_the_snapshot_are_refused() {
        let cache = tempfile::tempdir().unwrap();
        let options =
            HubOptions { cache_dir: Some(cache.path().into()), ignore_env: true, ..HubOptions::default() };
        let repo = RepoRef::hub("org/name", RepoKind::Model, "main");
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            let err = repo.file(bad, &options).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }
}
