#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod autodiff_lock;
mod bert;
mod distilbert;
mod encoder;
mod error;
pub mod host_wait;
mod model;
pub mod ops;
mod precision;
mod weights;

pub use bertlab_model_config::{
    check_tokenizer_fits, Activation, Architecture, ConfigError, ConfigSizes, ModelConfig,
};
pub use encoder::{cls, mean_pool, Backbone, Embeddings, EncoderLayer};
pub use error::ModelError;
pub use model::{
    export_classifier, has_classifier_head, load_classifier, load_encoder, Encoder, EncoderOutput,
    TextClassifier, TOKENIZER_FILES,
};
pub use ops::Kernels;
pub use precision::{float_dtype, Precision};
pub use weights::LoadReport;
