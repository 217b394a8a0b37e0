//! The one error type of this crate.

use std::path::PathBuf;

/// What went wrong while loading a tokenizer, encoding text or using the token cache.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// Neither `tokenizer.json` nor `vocab.txt` could be found for a model.
    #[error(
        "no tokenizer files for `{model}`: need `tokenizer.json`, or `vocab.txt` (+ optional \
         `tokenizer_config.json`); tokenizer.json: {tokenizer_json}; vocab.txt: {vocab_txt}"
    )]
    MissingFiles {
        /// The model reference (directory or Hub id).
        model: String,
        /// Why `tokenizer.json` could not be had.
        tokenizer_json: String,
        /// Why `vocab.txt` could not be had.
        vocab_txt: String,
    },
    /// Reading a file failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A tokenizer file exists but the `tokenizers` library rejects it.
    #[error("{path}: not a valid tokenizer file: {message}", path = path.display())]
    InvalidTokenizerFile {
        /// The file.
        path: PathBuf,
        /// The library's message.
        message: String,
    },
    /// `tokenizer_config.json` is not valid JSON or has a key of the wrong type.
    #[error("{path}: {message}", path = path.display())]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// The tokenizer is not a BERT WordPiece tokenizer this crate can pack.
    #[error("{path}: {message}", path = path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is missing or unexpected.
        message: String,
    },
    /// A special token ([CLS], [SEP], [PAD]) is not in the vocabulary.
    #[error(
        "{path}: the vocabulary has no {role} token `{token}`; BERT packing needs [CLS], [SEP] and [PAD] \
         (set `{role}_token` in tokenizer_config.json if this model names them differently)",
        path = path.display()
    )]
    MissingSpecialToken {
        /// `cls`, `sep`, `pad` or `unk`.
        role: &'static str,
        /// The token text looked up.
        token: String,
        /// The file the vocabulary came from.
        path: PathBuf,
    },
    /// A requested `max_len` is out of range (names the model, the length and the bound).
    #[error(transparent)]
    MaxLen(#[from] crate::max_len::MaxLenError),
    /// The `tokenizers` library failed on one text.
    #[error("tokenizing text #{row} ({preview:?}…) failed: {message}")]
    Encode {
        /// Index of the text in the batch (0 for a single text).
        row: usize,
        /// The first characters of the text.
        preview: String,
        /// The library's message.
        message: String,
    },
    /// A cache file could not be written.
    #[error("writing token cache file {path}: {source}", path = path.display())]
    CacheWrite {
        /// The final path of the cache file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = TokenizeError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TokenizeError {
    let path = path.into();
    move |source| TokenizeError::Io { path, source }
}

/// The first 40 characters of `text`, for error messages.
pub(crate) fn preview(text: &str) -> String {
    text.chars().take(40).collect()
}
