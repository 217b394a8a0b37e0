#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod architecture;
mod config;
mod error;
mod sizes;

pub use architecture::{Activation, Architecture, FamilyKeys};
pub use config::{check_tokenizer_fits, ModelConfig};
pub use error::ConfigError;
pub use sizes::ConfigSizes;
