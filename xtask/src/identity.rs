//! Run ids from what references point to: a local model directory or dataset is identified by
//! its files' contents, so a `shared:` path, a `${VAR}` or a directory that now holds other files
//! gives new run ids instead of reusing a stale result. Hub references stay as written (a
//! revision names its content; `main` is the user's own choice to follow).

use bertlab_pipeline::{InputIdentity, Resolver};
use bertlab_run::identity::{files_digest, FileIdentity};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The files of a model snapshot that define what it computes.
const MODEL_FILES: [&str; 6] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Identities by content, memoised per resolved path for the life of the command (hashing a
/// BERT-base checkpoint takes about a second).
pub struct ContentIdentity<'a> {
    resolver: &'a Resolver,
    memo: RefCell<HashMap<String, String>>,
}

impl<'a> ContentIdentity<'a> {
    /// Identities of references resolved by `resolver`.
    pub fn new(resolver: &'a Resolver) -> ContentIdentity<'a> {
        ContentIdentity { resolver, memo: RefCell::new(HashMap::new()) }
    }

    fn memoised(&self, key: String, compute: impl FnOnce() -> String) -> String {
        if let Some(v) = self.memo.borrow().get(&key) {
            return v.clone();
        }
        let v = compute();
        self.memo.borrow_mut().insert(key, v.clone());
        v
    }
}

/// `files` (those that can be read), hashed by content; `None` when none can be read.
fn digest_of(files: &[PathBuf]) -> Option<String> {
    let ids: Vec<FileIdentity> = files.iter().filter_map(|f| FileIdentity::of(f).ok()).collect();
    (!ids.is_empty()).then(|| format!("sha256:{}", files_digest(&ids)))
}

/// Every regular file under `dir`, recursively, sorted (hidden names skipped).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

impl InputIdentity for ContentIdentity<'_> {
    fn model(&self, reference: &str) -> String {
        let Ok(resolved) = self.resolver.resolve("model", reference) else { return reference.to_string() };
        let dir = PathBuf::from(&resolved);
        if !dir.is_dir() {
            return resolved;
        }
        self.memoised(format!("model {resolved}"), || {
            let files: Vec<PathBuf> =
                MODEL_FILES.iter().map(|f| dir.join(f)).filter(|p| p.is_file()).collect();
            digest_of(&files).unwrap_or(resolved.clone())
        })
    }

    fn source(&self, reference: Option<&str>) -> String {
        let Some(reference) = reference else { return "hub".into() };
        let Ok(resolved) = self.resolver.resolve("source", reference) else { return reference.to_string() };
        let path = PathBuf::from(&resolved);
        if !path.exists() {
            return resolved;
        }
        self.memoised(format!("source {resolved}"), || {
            let files = if path.is_dir() { files_under(&path) } else { vec![path.clone()] };
            digest_of(&files).unwrap_or(resolved.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_references_are_identified_by_content() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("config.json"), "{}").unwrap();
            std::fs::write(d.join("model.safetensors"), "weights").unwrap();
        }
        let resolver = Resolver { shared_dir: None, base_dir: tmp.path().to_path_buf() };
        let id = ContentIdentity::new(&resolver);
        let (ia, ib) = (id.model(a.to_str().unwrap()), id.model(b.to_str().unwrap()));
        assert!(ia.starts_with("sha256:"), "{ia}");
        assert_eq!(ia, ib, "the same files at two paths are the same model");
        std::fs::write(b.join("model.safetensors"), "other weights").unwrap();
        let fresh = ContentIdentity::new(&resolver);
        assert_ne!(fresh.model(b.to_str().unwrap()), ia, "other weights, another model");
        assert_eq!(id.model("google-bert/bert-base-uncased"), "google-bert/bert-base-uncased");
        std::fs::create_dir_all(a.join("plain_text")).unwrap();
        std::fs::write(a.join("plain_text/train.parquet"), "rows").unwrap();
        let s1 = fresh.source(Some(a.to_str().unwrap()));
        std::fs::write(a.join("plain_text/train.parquet"), "other rows").unwrap();
        assert_ne!(ContentIdentity::new(&resolver).source(Some(a.to_str().unwrap())), s1);
        assert_eq!(fresh.source(None), "hub");
    }
}
