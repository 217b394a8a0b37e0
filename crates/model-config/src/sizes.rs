//! The sizes a `config.json` states, read leniently: for callers that need a few numbers from
//! any BERT-family config and must not refuse one bertlab cannot build (time estimates,
//! `bertlab tokenize`'s length bound).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::architecture::{Architecture, FamilyKeys};
use crate::error::ConfigError;
use bertlab_run::ModelShape;

/// The sizes a `config.json` states, each `None` when the file does not give it as a
/// non-negative integer.
///
/// Unlike [`crate::ModelConfig`], nothing is required and nothing is checked: `model_type` may
/// be missing or unknown, and each size is looked up under BERT's key, then DistilBERT's
/// ([`Architecture::keys`]), so a file with only `dim`, `n_layers` and `hidden_dim` still has a
/// shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigSizes {
    /// Encoder layers (`num_hidden_layers` / `n_layers`).
    pub num_hidden_layers: Option<usize>,
    /// Width of the hidden states (`hidden_size` / `dim`).
    pub hidden_size: Option<usize>,
    /// Width of the feed-forward block (`intermediate_size` / `hidden_dim`).
    pub intermediate_size: Option<usize>,
    /// Longest sequence the position table covers (`max_position_embeddings`).
    pub max_position_embeddings: Option<usize>,
}

impl ConfigSizes {
    /// Read `path`; only an unreadable file or invalid JSON is an error.
    pub fn from_file(path: &Path) -> Result<ConfigSizes, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|source| ConfigError::Json { path: PathBuf::from(path), source })?;
        Ok(ConfigSizes::from_value(&value))
    }

    /// The sizes of a parsed `config.json` (all `None` when it is not a JSON object).
    pub fn from_value(value: &Value) -> ConfigSizes {
        let size = |key: fn(FamilyKeys) -> &'static str| {
            Architecture::ALL.iter().find_map(|a| value.get(key(a.keys())).and_then(Value::as_u64))
        };
        let as_usize = |n: Option<u64>| n.and_then(|n| usize::try_from(n).ok());
        ConfigSizes {
            num_hidden_layers: as_usize(size(|k| k.layers)),
            hidden_size: as_usize(size(|k| k.hidden)),
            intermediate_size: as_usize(size(|k| k.intermediate)),
            max_position_embeddings: as_usize(value.get("max_position_embeddings").and_then(Value::as_u64)),
        }
    }

    /// The cost shape, when the file gives layers, width and feed-forward width.
    pub fn shape(&self) -> Option<ModelShape> {
        Some(ModelShape {
            layers: self.num_hidden_layers?,
            hidden: self.hidden_size?,
            intermediate: self.intermediate_size?,
            head_classes: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelConfig;

    #[test]
    fn a_partial_distilbert_config_has_a_shape() {
        let v = serde_json::json!({"dim": 32, "n_layers": 2, "hidden_dim": 64});
        let sizes = ConfigSizes::from_value(&v);
        assert_eq!(
            sizes.shape(),
            Some(ModelShape { layers: 2, hidden: 32, intermediate: 64, head_classes: None })
        );
        assert_eq!(sizes.max_position_embeddings, None);
        assert_eq!(ConfigSizes::from_value(&serde_json::json!({"dim": 3})).shape(), None);
        assert_eq!(ConfigSizes::from_value(&serde_json::json!([1, 2])), ConfigSizes::default());
    }

    #[test]
    fn bert_keys_and_unknown_model_types_are_read() {
        let v = serde_json::json!({"model_type": "roberta", "hidden_size": 768, "num_hidden_layers": 12,
            "intermediate_size": 3072, "max_position_embeddings": 514});
        let sizes = ConfigSizes::from_value(&v);
        assert_eq!(sizes.shape(), Some(ModelShape::BERT_BASE));
        assert_eq!(sizes.max_position_embeddings, Some(514));
    }

    #[test]
    fn the_lenient_and_the_strict_reader_agree_on_a_full_config() {
        let text = r#"{"model_type": "distilbert", "vocab_size": 100, "dim": 32, "n_layers": 3,
            "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 48}"#;
        let strict = ModelConfig::from_json(text, "d").unwrap();
        let lenient = ConfigSizes::from_value(&serde_json::from_str(text).unwrap());
        assert_eq!(lenient.shape(), Some(strict.shape()));
        assert_eq!(
            strict.shape(),
            ModelShape { layers: 3, hidden: 32, intermediate: 64, head_classes: None }
        );
        assert_eq!(lenient.max_position_embeddings, Some(strict.max_position_embeddings));
    }

    #[test]
    fn unreadable_and_invalid_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("config.json");
        let err = ConfigSizes::from_file(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }) && err.to_string().contains("config.json"), "{err}");
        std::fs::write(&missing, "{not json").unwrap();
        let err = ConfigSizes::from_file(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Json { .. }) && err.to_string().contains("invalid JSON"), "{err}");
        std::fs::write(&missing, r#"{"max_position_embeddings": 128}"#).unwrap();
        assert_eq!(ConfigSizes::from_file(&missing).unwrap().max_position_embeddings, Some(128));
    }
}
