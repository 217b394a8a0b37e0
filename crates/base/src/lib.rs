#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod atomic;
mod file_kind;
pub mod format;
pub mod lock;

pub use atomic::{files_in, replaces_input, temporary_for, write_atomic, write_atomic_with};
pub use file_kind::not_regular_kind;
