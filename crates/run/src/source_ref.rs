//! The grammar of a data reference (`--source`, a run spec's `source`): what the text says,
//! before any file is read. `bertlab-data` opens what it names; `cargo xtask` checks every
//! reference of a pipeline with it before the first run starts, without reading data.

use crate::naming::{NamesSettings, Setting, SettingStyle};
use std::path::PathBuf;

/// The Hub dataset the notebook loads with `load_dataset("imdb")`.
pub const IMDB_DATASET_ID: &str = "stanfordnlp/imdb";

/// What a data reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// `hub`, `imdb` or `stanfordnlp/imdb`: IMDB at its pinned revision.
    Imdb,
    /// `hub:ORG/NAME[@REVISION]`: a dataset on the Hub (no revision: the default one, `main`,
    /// or IMDB's pinned one).
    Hub {
        /// `ORG/NAME`.
        id: String,
        /// `@REVISION`, if given.
        revision: Option<String>,
    },
    /// Anything else: a directory of data files or one data file.
    Path(PathBuf),
}

/// A data reference that does not follow the grammar (`source = "…"`, `--source "…"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render(SettingStyle::Key))]
pub struct BadSource(pub String);

impl BadSource {
    /// What a reference may be, without the reference (for a message that names it already).
    pub fn expected(&self) -> &'static str {
        "expected `hub` (stanfordnlp/imdb), `hub:ORG/NAME[@REVISION]`, a directory of data files (e.g. \
         holding plain_text/*.parquet), or one .parquet, .csv, .tsv or .jsonl file"
    }
}

impl NamesSettings for BadSource {
    fn render(&self, style: SettingStyle) -> String {
        // Quoted in both styles: the reference may be empty or hold spaces.
        let setting = match style {
            SettingStyle::Key => "source =".to_string(),
            SettingStyle::Flag => Setting::source.flag(),
        };
        format!("{setting} {:?}: {}", self.0, self.expected())
    }
}

impl SourceRef {
    /// Read a reference (surrounding spaces ignored). Paths are not looked at here.
    pub fn parse(text: &str) -> Result<SourceRef, BadSource> {
        let spec = text.trim();
        if spec.is_empty() {
            return Err(BadSource(spec.into()));
        }
        if spec == "hub" || spec == IMDB_DATASET_ID || spec == "imdb" {
            return Ok(SourceRef::Imdb);
        }
        if let Some(rest) = spec.strip_prefix("hub:") {
            let (id, revision) = match rest.split_once('@') {
                Some((id, rev)) => (id, Some(rev.to_string())),
                None => (rest, None),
            };
            let bad_id = id.split('/').count() != 2 || id.split('/').any(str::is_empty);
            if bad_id || revision.as_deref() == Some("") {
                return Err(BadSource(spec.into()));
            }
            return Ok(SourceRef::Hub { id: id.into(), revision });
        }
        Ok(SourceRef::Path(PathBuf::from(spec)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar() {
        for imdb in ["hub", " imdb ", "stanfordnlp/imdb"] {
            assert_eq!(SourceRef::parse(imdb), Ok(SourceRef::Imdb), "{imdb}");
        }
        assert_eq!(
            SourceRef::parse("hub:org/set@v1"),
            Ok(SourceRef::Hub { id: "org/set".into(), revision: Some("v1".into()) })
        );
        assert_eq!(
            SourceRef::parse("hub:org/set"),
            Ok(SourceRef::Hub { id: "org/set".into(), revision: None })
        );
        for bad in ["", "  ", "hub:", "hub:org", "hub:org/", "hub:/set", "hub:a/b/c", "hub:org/set@"] {
            let e = SourceRef::parse(bad).unwrap_err();
            assert!(e.to_string().contains("hub:ORG/NAME[@REVISION]"), "{bad}: {e}");
        }
        let e = SourceRef::parse("hub:org").unwrap_err();
        assert!(e.to_string().starts_with("source = \"hub:org\": expected `hub`"), "{e}");
        assert!(e.render(SettingStyle::Flag).starts_with("--source \"hub:org\": expected `hub`"), "{e}");
        assert_eq!(SourceRef::parse("data/x.csv"), Ok(SourceRef::Path("data/x.csv".into())));
    }
}
