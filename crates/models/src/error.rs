//! Errors of this crate: each names the file, the key or the tensor at fault.

use std::path::PathBuf;

/// What went wrong while reading a config, loading weights or exporting a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file of the repository could not be resolved (local dir, HF cache or download).
    #[error(transparent)]
    Hub(#[from] bertlab_hub::HubError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("{path}: invalid JSON: {source}", path = path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser error.
        #[source]
        source: serde_json::Error,
    },
    /// A `config.json` key is missing or has an unusable value.
    #[error("{path}: key `{key}`: {message}")]
    Config {
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
    /// The weights file is not a readable safetensors file.
    #[error("{path}: not a valid safetensors file: {message}", path = path.display())]
    Safetensors {
        /// The weights file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A tensor the model needs is not in the weights file.
    #[error(
        "{path}: tensor `{name}` is missing (also looked for {tried}); the file does not hold a \
         complete {architecture} checkpoint for this config",
        path = path.display()
    )]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The `transformers` name of the tensor.
        name: String,
        /// Other names tried (prefixed, legacy LayerNorm names).
        tried: String,
        /// `bert` or `distilbert`.
        architecture: String,
    },
    /// A tensor's shape differs from what the config implies.
    #[error(
        "{path}: tensor `{name}` has shape {found:?} but the model built from the config expects \
         {expected:?}",
        path = path.display()
    )]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor name as stored in the file.
        name: String,
        /// Shape implied by the config (PyTorch layout).
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype bertlab does not read.
    #[error("{path}: tensor `{name}` is stored as {dtype}; bertlab reads F32, F16, BF16 and F64 weights", path = path.display())]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The stored dtype.
        dtype: String,
    },
    /// Two tensors of the file map to the same parameter (e.g. both `x.gamma` and `x.weight`).
    #[error("{path}: tensors `{first}` and `{second}` both provide `{name}`; keep one of them", path = path.display())]
    DuplicateTensor {
        /// The weights file.
        path: PathBuf,
        /// The parameter name.
        name: String,
        /// First file key.
        first: String,
        /// Second file key.
        second: String,
    },
    /// Writing a safetensors file failed.
    #[error("{path}: writing safetensors failed: {message}", path = path.display())]
    Export {
        /// The file being written.
        path: PathBuf,
        /// The encoder's message.
        message: String,
    },
}
