#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod cache;
mod encoded;
mod error;
mod fast;
mod max_len;
mod stats;
mod tokenizer;
mod truncation;

pub use cache::{CacheStatus, TokenCache};
pub use encoded::{EncodedTexts, RowIds};
pub use error::{Result, TokenizeError};
pub use max_len::{
    check_max_len, longest_max_len, LimitSource, MaxLenBound, MaxLenError, MaxLenLimit, MIN_MAX_LEN,
};
pub use stats::LengthStats;
pub use tokenizer::WordPieceTokenizer;
pub use truncation::{kept_counts, pack_into, Truncation};
