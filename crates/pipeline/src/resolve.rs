//! [`Resolver`]: model and data references of a pipeline made into something `bertlab` opens.

use crate::error::PipelineError;
use bertlab_run::SourceRef;
use std::path::{Path, PathBuf};

/// Turns references in pipelines into something `bertlab` can open: `shared:REL` and
/// `${BERTLAB_SHARED}` → the shared data folder, `${VAR}` → the environment, existing relative
/// paths → absolute ones. Hub ids pass through.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// The shared folder (`$BERTLAB_SHARED`, default `../shared` beside the workspace).
    pub shared_dir: Option<PathBuf>,
    /// Relative paths are relative to this directory (the invoking shell's).
    pub base_dir: PathBuf,
}

impl Resolver {
    /// Resolve `value`; `what` names the setting in errors (`model role bert`).
    pub fn resolve(&self, what: &str, value: &str) -> Result<String, PipelineError> {
        let err =
            |message: String| PipelineError::Reference { what: what.into(), value: value.into(), message };
        let no_shared = || {
            err(match std::env::var("BERTLAB_SHARED") {
                Ok(dir) if !dir.is_empty() => {
                    format!(
                        "BERTLAB_SHARED={dir}, which is not a directory: point it at the shared data folder"
                    )
                }
                _ => {
                    "the shared data folder was not found: set BERTLAB_SHARED or put it at ../shared beside \
                      the workspace"
                        .into()
                }
            })
        };
        let mut text = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            text.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| err("unclosed `${`".into()))?;
            let name = &after[..end];
            let substituted = match std::env::var(name) {
                Ok(v) if !v.is_empty() => v,
                _ if name == "BERTLAB_SHARED" => {
                    self.shared_dir.as_ref().ok_or_else(no_shared)?.display().to_string()
                }
                _ => return Err(err(format!("environment variable {name} is not set"))),
            };
            text.push_str(&substituted);
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if let Some(rel) = text.strip_prefix("shared:") {
            let shared = self.shared_dir.as_ref().ok_or_else(no_shared)?;
            let path = shared.join(rel);
            if !path.exists() {
                return Err(err(format!("{} does not exist", path.display())));
            }
            return Ok(path.display().to_string());
        }
        if text == "hub" || text.starts_with("hub:") {
            return Ok(text);
        }
        let path = Path::new(&text);
        let path = if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) };
        if path.exists() {
            return Ok(path.canonicalize().unwrap_or(path).display().to_string());
        }
        let looks_like_path = text.starts_with('.') || text.starts_with('/') || text.matches('/').count() > 1;
        if looks_like_path {
            return Err(err(format!("{} does not exist", path.display())));
        }
        Ok(text)
    }

    /// Resolve a data reference (`--source`, a spec's `source`) and check it names data before
    /// any run starts: `hub`, `hub:ORG/NAME[@REV]` as [`SourceRef`] reads them, else a path that
    /// exists. (A model reference may be a Hub id of one word; a data reference that is not
    /// `hub…` can only be a path.)
    pub fn resolve_source(&self, what: &str, value: &str) -> Result<String, PipelineError> {
        let resolved = self.resolve(what, value)?;
        let err =
            |message: String| PipelineError::Reference { what: what.into(), value: value.into(), message };
        // The reference is named by `what` already: the error says only what is expected.
        match SourceRef::parse(&resolved).map_err(|e| err(e.expected().to_string()))? {
            SourceRef::Path(path) => {
                let path = if path.is_absolute() { path } else { self.base_dir.join(path) };
                if !path.exists() {
                    return Err(err(format!(
                        "{} does not exist; a data source is `hub`, `hub:ORG/NAME[@REVISION]`, or a \
                         directory or file of data",
                        path.display()
                    )));
                }
                Ok(resolved)
            }
            SourceRef::Imdb | SourceRef::Hub { .. } => Ok(resolved),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_shared_env_and_paths() {
        let shared = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(shared.path().join("fixtures/tiny")).unwrap();
        let r =
            Resolver { shared_dir: Some(shared.path().to_path_buf()), base_dir: shared.path().to_path_buf() };
        let want = shared.path().join("fixtures/tiny").display().to_string();
        assert_eq!(r.resolve("model", "shared:fixtures/tiny").unwrap(), want);
        if std::env::var_os("BERTLAB_SHARED").is_none() {
            assert_eq!(r.resolve("model", "${BERTLAB_SHARED}/fixtures/tiny").unwrap(), want);
        }
        assert_eq!(
            r.resolve("model", "fixtures/tiny").unwrap(),
            shared.path().canonicalize().unwrap().join("fixtures/tiny").display().to_string()
        );
        assert_eq!(
            r.resolve("model", "google-bert/bert-base-uncased").unwrap(),
            "google-bert/bert-base-uncased"
        );
        assert_eq!(r.resolve("source", "hub").unwrap(), "hub");
        let e = r.resolve("model role bert", "shared:fixtures/nope").unwrap_err().to_string();
        assert!(
            e.starts_with("model role bert = \"shared:fixtures/nope\"") && e.contains("does not exist"),
            "{e}"
        );
        let e = r.resolve("model", "${BERTLAB_SURELY_UNSET_VAR}/x").unwrap_err().to_string();
        assert!(e.contains("BERTLAB_SURELY_UNSET_VAR is not set"), "{e}");
        let none = Resolver { shared_dir: None, base_dir: PathBuf::from("/") };
        assert!(none.resolve("source", "shared:data").unwrap_err().to_string().contains("BERTLAB_SHARED"));
        assert!(none.resolve("model", "./missing/dir").unwrap_err().to_string().contains("does not exist"));
    }

    #[test]
    fn a_source_that_names_no_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reviews.csv"), "text,label\nok,1\n").unwrap();
        let r = Resolver { shared_dir: None, base_dir: dir.path().to_path_buf() };
        assert_eq!(r.resolve_source("--source", "hub").unwrap(), "hub");
        assert_eq!(r.resolve_source("--source", "hub:org/set@v1").unwrap(), "hub:org/set@v1");
        assert!(r.resolve_source("--source", "reviews.csv").unwrap().ends_with("reviews.csv"));
        // A typo of `imdb`: one word, no slash, which `resolve` alone passes as a Hub id.
        let e = r.resolve_source("--source", "imbd").unwrap_err().to_string();
        assert!(e.starts_with("--source = \"imbd\"") && e.contains("does not exist"), "{e}");
        let e = r.resolve_source("source", "hub:stanfordnlp").unwrap_err().to_string();
        assert!(e.contains("hub:ORG/NAME[@REVISION]"), "{e}");
        assert!(e.starts_with("source = \"hub:stanfordnlp\": expected `hub`"), "{e}");
    }
}
