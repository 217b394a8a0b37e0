#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod atomic;
pub mod format;
pub mod lock;

pub use atomic::{files_in, replaces_input, write_atomic, write_atomic_with};
