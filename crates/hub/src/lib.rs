//! Resolve the files of a Hugging Face Hub repository (model or dataset) to local paths.
//!
//! bertlab reads three kinds of reference to a repository, and this crate turns each into a
//! local file path:
//!
//! - a local directory laid out like a Hub snapshot (`config.json`, `model.safetensors`, …):
//!   files are read in place, nothing is downloaded;
//! - a Hub id (`distilbert/distilbert-base-uncased`), online: the file is taken from the
//!   standard HF cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`, the layout Python
//!   shares) or downloaded into it with `hf-hub`, honouring `HF_HOME` and `HF_ENDPOINT`;
//! - a Hub id, offline (`HF_HUB_OFFLINE=1` or [`HubOptions::offline`]): the cache only, with an
//!   error that names the missing file and says how to fetch it.
//!
//! hf-hub 0.4.3 does not read `HF_HUB_OFFLINE` itself, so offline lookups are done here against
//! the cache layout (`refs/<revision>` → `snapshots/<commit>/<file>`; a revision that is already a
//! commit hash is looked up in `snapshots/` directly, as Python writes it).
//!
//! ```
//! use bertlab_hub::{HubOptions, RepoRef, RepoKind};
//! let dir = std::env::temp_dir().join("bertlab-hub-doctest");
//! std::fs::create_dir_all(&dir).unwrap();
//! std::fs::write(dir.join("config.json"), "{}").unwrap();
//! let repo = RepoRef::parse(dir.to_str().unwrap(), RepoKind::Model);
//! let path = repo.file("config.json", &HubOptions::default()).unwrap();
//! assert_eq!(path, dir.join("config.json"));
//! ```

use std::path::{Path, PathBuf};

mod atomic;
pub use atomic::write_atomic;

/// Whether a Hub repository holds a model or a dataset (they live in different namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// `https://huggingface.co/<id>`; cache folder `models--<org>--<name>`.
    Model,
    /// `https://huggingface.co/datasets/<id>`; cache folder `datasets--<org>--<name>`.
    Dataset,
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

/// How Hub lookups behave.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// Use the local cache only, never the network. Also switched on by `HF_HUB_OFFLINE=1`.
    pub offline: bool,
    /// Cache root override (the folder holding `models--…`); default from `HF_HOME`.
    pub cache_dir: Option<PathBuf>,
    /// Show download progress bars.
    pub progress: bool,
}

impl HubOptions {
    /// True when either the option or the `HF_HUB_OFFLINE` environment variable asks for it.
    pub fn is_offline(&self) -> bool {
        self.offline || env_offline()
    }

    fn cache(&self) -> hf_hub::Cache {
        match &self.cache_dir {
            Some(dir) => hf_hub::Cache::new(dir.clone()),
            None => hf_hub::Cache::from_env(),
        }
    }
}

fn env_offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").as_deref().map(str::trim),
        Ok("1") | Ok("true") | Ok("TRUE") | Ok("True") | Ok("yes") | Ok("on")
    )
}

/// What went wrong while resolving a file.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The local directory does not hold the file.
    #[error("{path}: no such file (looked for `{file}` in the local directory {dir})", path = dir.join(file).display(), dir = dir.display())]
    MissingLocal {
        /// The directory searched.
        dir: PathBuf,
        /// The file name asked for.
        file: String,
    },
    /// Offline and the cache does not hold the file.
    #[error(
        "offline (HF_HUB_OFFLINE=1 or --offline) and `{file}` of {kind} `{id}` at revision `{revision}` \
         is not in the HF cache {cache}; fetch it once with network access (run the same command \
         without --offline / HF_HUB_OFFLINE, or `huggingface-cli download {flag}{id} {file} --revision {revision}`), \
         or point at a local directory holding the file",
        kind = kind_name(*kind),
        flag = if *kind == RepoKind::Dataset { "--repo-type dataset " } else { "" }
    )]
    NotCached {
        /// Repository id.
        id: String,
        /// Model or dataset.
        kind: RepoKind,
        /// Revision asked for.
        revision: String,
        /// File name.
        file: String,
        /// Cache folder searched.
        cache: String,
    },
    /// The download failed.
    #[error(
        "downloading `{file}` of {kind} `{id}` (revision `{revision}`) from the Hub failed: {source}. \
             Check the network, HF_ENDPOINT, and for gated repositories a token (`huggingface-cli login`); \
             to work offline set HF_HUB_OFFLINE=1 with the file already in the HF cache"
    )]
    Download {
        /// Repository id.
        id: String,
        /// "model" or "dataset".
        kind: &'static str,
        /// Revision asked for.
        revision: String,
        /// File name.
        file: String,
        /// The hf-hub error.
        #[source]
        source: Box<hf_hub::api::sync::ApiError>,
    },
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
                cached_file(&options.cache(), id, *kind, revision, file).is_some()
            }
        }
    }

    /// The local path of `file` (e.g. `config.json`, `plain_text/train-00000-of-00001.parquet`),
    /// downloading it into the HF cache when needed and allowed.
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
                let cache = options.cache();
                if let Some(path) = cached_file(&cache, id, *kind, revision, file) {
                    return Ok(path);
                }
                if options.is_offline() {
                    return Err(HubError::NotCached {
                        id: id.clone(),
                        kind: *kind,
                        revision: revision.clone(),
                        file: file.to_string(),
                        cache: cache.path().display().to_string(),
                    });
                }
                download(&cache, id, *kind, revision, file, options.progress).map_err(|source| {
                    HubError::Download {
                        id: id.clone(),
                        kind: kind_name(*kind),
                        revision: revision.clone(),
                        file: file.to_string(),
                        source: Box::new(source),
                    }
                })
            }
        }
    }
}

fn kind_name(kind: RepoKind) -> &'static str {
    match kind {
        RepoKind::Model => "model",
        RepoKind::Dataset => "dataset",
    }
}

fn hf_repo(id: &str, kind: RepoKind, revision: &str) -> hf_hub::Repo {
    let repo_type = match kind {
        RepoKind::Model => hf_hub::RepoType::Model,
        RepoKind::Dataset => hf_hub::RepoType::Dataset,
    };
    hf_hub::Repo::with_revision(id.to_string(), repo_type, revision.to_string())
}

/// Look a file up in the standard cache layout without touching the network.
fn cached_file(
    cache: &hf_hub::Cache,
    id: &str,
    kind: RepoKind,
    revision: &str,
    file: &str,
) -> Option<PathBuf> {
    let repo_dir = cache.path().join(hf_repo(id, kind, revision).folder_name());
    let is_commit = revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit());
    let commit = if is_commit {
        revision.to_string()
    } else {
        std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?.trim().to_string()
    };
    let path = repo_dir.join("snapshots").join(commit).join(file);
    path.is_file().then_some(path)
}

fn download(
    cache: &hf_hub::Cache,
    id: &str,
    kind: RepoKind,
    revision: &str,
    file: &str,
    progress: bool,
) -> Result<PathBuf, hf_hub::api::sync::ApiError> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone()).with_progress(progress);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder.build()?;
    api.repo(hf_repo(id, kind, revision)).get(file)
}

/// Resolve the `BERTLAB_SHARED` test-data folder (default `../shared` next to the workspace).
///
/// A relative `BERTLAB_SHARED` is taken from the current directory when it exists there, else
/// from the workspace root: `cargo test` runs each crate's tests in the crate's own folder, so
/// `BERTLAB_SHARED=../shared` set at the workspace root would otherwise silently skip them.
/// Tests call this and skip, with a printed reason, when it returns `None`.
pub fn shared_dir() -> Option<PathBuf> {
    // CARGO_MANIFEST_DIR of this crate is <workspace>/crates/hub.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = match std::env::var_os("BERTLAB_SHARED") {
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
    dir.is_dir().then(|| dir.canonicalize().unwrap_or(dir))
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
        let options = HubOptions { offline: true, cache_dir: Some(cache.path().into()), progress: false };
        for rev in ["main", commit] {
            let r = RepoRef::hub("stanfordnlp/imdb", RepoKind::Dataset, rev);
            let p = r.file("plain_text/a.parquet", &options).unwrap();
            assert!(p.ends_with("plain_text/a.parquet"));
        }
        let r = RepoRef::hub("stanfordnlp/imdb", RepoKind::Dataset, commit);
        let err = r.file("plain_text/b.parquet", &options).unwrap_err().to_string();
        assert!(err.contains("plain_text/b.parquet") && err.contains("stanfordnlp/imdb"), "{err}");
        assert!(err.contains("--repo-type dataset"), "{err}");
    }

    #[test]
    fn local_missing_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = RepoRef::Local(dir.path().into())
            .file("model.safetensors", &HubOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }
}
