//! The longest `max_len` a model and its tokenizer allow: one rule, checked before anything is
//! tokenized, by the trainer, the commands and the benches alike.

use std::fmt;

pub use bertlab_run::MIN_MAX_LEN;

/// What sets the longest allowed `max_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// The model's `max_position_embeddings`: rows of its position table.
    ModelPositions,
    /// The tokenizer's `model_max_length` (`tokenizer_config.json`).
    TokenizerMaxLength,
}

impl LimitSource {
    /// What sets the limit, in words.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitSource::ModelPositions => "the model's max_position_embeddings",
            LimitSource::TokenizerMaxLength => "model_max_length in tokenizer_config.json",
        }
    }
}

impl fmt::Display for LimitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest allowed `max_len` and what sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxLenLimit {
    /// Ids per text at most, `[CLS]` and `[SEP]` included.
    pub tokens: usize,
    /// Where the number comes from.
    pub source: LimitSource,
}

/// The longest `max_len` a model with `max_position_embeddings` positions and a tokenizer with
/// `model_max_length` allow: the tighter of the two (the model's when they tie), `None` when
/// neither is known.
pub fn longest_max_len(
    max_position_embeddings: Option<usize>,
    model_max_length: Option<usize>,
) -> Option<MaxLenLimit> {
    let model =
        max_position_embeddings.map(|tokens| MaxLenLimit { tokens, source: LimitSource::ModelPositions });
    let tokenizer =
        model_max_length.map(|tokens| MaxLenLimit { tokens, source: LimitSource::TokenizerMaxLength });
    match (model, tokenizer) {
        (Some(m), Some(t)) => Some(if t.tokens < m.tokens { t } else { m }),
        (m, t) => m.or(t),
    }
}

/// Which bound a `max_len` breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxLenBound {
    /// Below [`MIN_MAX_LEN`]: no room for a token between `[CLS]` and `[SEP]`.
    TooShort,
    /// Above the longest the model and its tokenizer allow.
    TooLong(MaxLenLimit),
}

impl fmt::Display for MaxLenBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxLenBound::TooShort => {
                write!(f, "below {MIN_MAX_LEN}, the room [CLS], a token of the text and [SEP] take")
            }
            MaxLenBound::TooLong(limit) => write!(f, "above {}, {}", limit.tokens, limit.source),
        }
    }
}

/// A `max_len` the model or its tokenizer cannot take: names the model, the length asked and the
/// bound it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("max_len {max_len} is out of range for {model}: {bound}")]
pub struct MaxLenError {
    /// The model (its reference as the user gave it, or the tokenizer's file).
    pub model: String,
    /// The length asked.
    pub max_len: usize,
    /// The bound it breaks.
    pub bound: MaxLenBound,
}

/// Check `max_len` for `model` against [`MIN_MAX_LEN`] and [`longest_max_len`]; returns the
/// limit that applies (`None`: no upper limit is known). Call it before tokenizing anything, so
/// that a length the model cannot take fails at once, not after a dataset is encoded.
///
/// `max_position_embeddings` is the model's (`ModelConfig::max_position_embeddings`, or
/// `ConfigSizes` for a config bertlab cannot build; `None` without a config) and
/// `model_max_length` the tokenizer's (`WordPieceTokenizer::model_max_length`).
pub fn check_max_len(
    model: &str,
    max_len: usize,
    max_position_embeddings: Option<usize>,
    model_max_length: Option<usize>,
) -> Result<Option<MaxLenLimit>, MaxLenError> {
    let error = |bound| MaxLenError { model: model.to_string(), max_len, bound };
    if max_len < MIN_MAX_LEN {
        return Err(error(MaxLenBound::TooShort));
    }
    let limit = longest_max_len(max_position_embeddings, model_max_length);
    match limit {
        Some(limit) if max_len > limit.tokens => Err(error(MaxLenBound::TooLong(limit))),
        _ => Ok(limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tighter_limit_wins_and_either_may_be_unknown() {
        let model = |tokens| Some(MaxLenLimit { tokens, source: LimitSource::ModelPositions });
        let tokenizer = |tokens| Some(MaxLenLimit { tokens, source: LimitSource::TokenizerMaxLength });
        assert_eq!(longest_max_len(Some(512), Some(128)), tokenizer(128));
        assert_eq!(longest_max_len(Some(128), Some(512)), model(128));
        assert_eq!(longest_max_len(Some(512), Some(512)), model(512));
        assert_eq!(longest_max_len(None, Some(64)), tokenizer(64));
        assert_eq!(longest_max_len(Some(64), None), model(64));
        assert_eq!(longest_max_len(None, None), None);
    }

    #[test]
    fn errors_name_the_model_the_length_and_the_bound() {
        assert_eq!(check_max_len("m", 512, Some(512), None).unwrap().map(|l| l.tokens), Some(512));
        assert_eq!(check_max_len("m", 4096, None, None), Ok(None));
        let err = check_max_len("org/model", 600, Some(512), Some(1024)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "max_len 600 is out of range for org/model: above 512, the model's max_position_embeddings"
        );
        assert_eq!((err.max_len, err.model.as_str()), (600, "org/model"));
        let err = check_max_len("dir", 300, Some(512), Some(256)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "max_len 300 is out of range for dir: above 256, model_max_length in tokenizer_config.json"
        );
        let err = check_max_len("dir", 2, Some(512), None).unwrap_err();
        assert_eq!(err.bound, MaxLenBound::TooShort);
        assert_eq!(
            err.to_string(),
            "max_len 2 is out of range for dir: below 3, the room [CLS], a token of the text and [SEP] take"
        );
    }
}
