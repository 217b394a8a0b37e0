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
    /// The model's `config.json` is unreadable, invalid or does not fit (its own error, which
    /// names the file and the key).
    #[error(transparent)]
    Config(#[from] bertlab_model_config::ConfigError),
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
    /// A tensor holds NaN or an infinity: every output of the model would be non-finite.
    #[error(
        "{path}: tensor `{name}` holds {count} non-finite value(s) (first: {first} at flat index \
         {index}, as f32); the checkpoint is corrupt or was saved after training diverged: use \
         another checkpoint",
        path = path.display()
    )]
    NonFiniteWeights {
        /// The weights file.
        path: PathBuf,
        /// The tensor name as stored in the file.
        name: String,
        /// How many values are NaN or infinite.
        count: usize,
        /// The first of them (after conversion to f32, so an F64 value beyond f32's range shows
        /// as an infinity).
        first: f32,
        /// Its row-major index in the tensor.
        index: usize,
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
