//! What can be wrong with a `config.json`: each error names the file and, where there is one, the
//! key at fault.

use std::path::PathBuf;

/// Reading or checking a model's `config.json` failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("{path}: invalid JSON: {source}", path = path.display())]
    Json {
        /// The config file (or the origin given to `ModelConfig::from_json`).
        path: PathBuf,
        /// The parser error.
        #[source]
        source: serde_json::Error,
    },
    /// A key is missing or has an unusable value.
    #[error("{path}: key `{key}`: {message}")]
    Key {
        /// The config file (or the origin given to `ModelConfig::from_json`).
        path: String,
        /// The key at fault.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// `model_type` names an architecture bertlab does not implement.
    #[error("{path}: unknown model_type {model_type:?}; bertlab implements \"bert\" and \"distilbert\"")]
    UnknownModelType {
        /// The config file.
        path: String,
        /// The value found.
        model_type: String,
    },
    /// The tokenizer produces ids the model's embedding table has no row for.
    #[error(
        "{tokenizer}: the tokenizer's ids reach {max_id}, but {config} has vocab_size {vocab_size} \
         (ids 0..{last}); the tokenizer does not belong to this model: use the tokenizer saved \
         with the model, or a model whose vocabulary covers this tokenizer",
        tokenizer = tokenizer.display(),
        max_id = id_bound - 1,
        last = vocab_size.saturating_sub(1)
    )]
    TokenizerDoesNotFit {
        /// The tokenizer file (`tokenizer.json` or `vocab.txt`).
        tokenizer: PathBuf,
        /// One more than the largest id the tokenizer produces.
        id_bound: usize,
        /// The model's `config.json` (its origin).
        config: String,
        /// The model's `vocab_size`.
        vocab_size: usize,
    },
}
