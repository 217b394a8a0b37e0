//! Truncation strategies and `[CLS] tokens [SEP]` packing.

use std::fmt;
use std::str::FromStr;

use crate::error::TokenizeError;

/// Which tokens of a text longer than the budget (`max_len - 2`, room left for `[CLS]` and
/// `[SEP]`) are kept.
///
/// Truncation works on WordPiece tokens, before the special tokens are added, as HF does:
/// [`Truncation::Head`] gives exactly the ids of `transformers` `tokenizer(text,
/// truncation=True, max_length=max_len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Truncation {
    /// Keep the first `budget` tokens (HF's and the Keras-Hub preprocessor's behaviour).
    #[default]
    Head,
    /// Keep the last `budget` tokens.
    Tail,
    /// Keep the first ¼ and the last ¾ of the budget (Sun et al. 2019, "How to Fine-Tune BERT
    /// for Text Classification?"). The head gets `round(budget / 4)` tokens, halves rounded up,
    /// which at max_len 512 is the paper's 128 + 382.
    HeadTail,
}

impl Truncation {
    /// All strategies, in the order of their codes.
    pub const ALL: [Truncation; 3] = [Truncation::Head, Truncation::Tail, Truncation::HeadTail];

    /// The command-line and file name of the strategy.
    pub fn as_str(self) -> &'static str {
        match self {
            Truncation::Head => "head",
            Truncation::Tail => "tail",
            Truncation::HeadTail => "head-tail",
        }
    }

    /// A stable small number for hashing and file headers.
    pub(crate) fn code(self) -> u8 {
        match self {
            Truncation::Head => 0,
            Truncation::Tail => 1,
            Truncation::HeadTail => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Truncation> {
        Truncation::ALL.get(code as usize).copied()
    }

    /// The `(head, tail)` token counts kept from a text of `len` tokens within `budget`.
    ///
    /// `head + tail == min(len, budget)`; texts that fit are kept whole whatever the strategy.
    pub fn split(self, len: usize, budget: usize) -> (usize, usize) {
        if len <= budget {
            return (len, 0);
        }
        match self {
            Truncation::Head => (budget, 0),
            Truncation::Tail => (0, budget),
            Truncation::HeadTail => {
                let head = (budget + 2) / 4;
                (head, budget - head)
            }
        }
    }

    /// Append `[CLS] kept-tokens [SEP]` to `out`, at most `max_len` ids (`max_len >= 2`).
    pub fn pack_into<T: Copy>(self, tokens: &[T], cls: T, sep: T, max_len: usize, out: &mut Vec<T>) {
        debug_assert!(max_len >= 2);
        let (head, tail) = self.split(tokens.len(), max_len - 2);
        out.reserve(head + tail + 2);
        out.push(cls);
        out.extend_from_slice(&tokens[..head]);
        out.extend_from_slice(&tokens[tokens.len() - tail..]);
        out.push(sep);
    }
}

impl fmt::Display for Truncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Truncation {
    type Err = TokenizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "head" => Ok(Truncation::Head),
            "tail" => Ok(Truncation::Tail),
            "head-tail" | "head_tail" | "headtail" => Ok(Truncation::HeadTail),
            _ => Err(TokenizeError::UnknownTruncation(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(t: Truncation, n: u32, max_len: usize) -> Vec<u32> {
        let tokens: Vec<u32> = (1..=n).collect();
        let mut out = Vec::new();
        t.pack_into(&tokens, 100, 200, max_len, &mut out);
        out
    }

    #[test]
    fn short_texts_are_kept_whole_by_every_strategy() {
        for t in Truncation::ALL {
            assert_eq!(pack(t, 3, 5), vec![100, 1, 2, 3, 200]);
            assert_eq!(pack(t, 0, 2), vec![100, 200]);
            assert_eq!(pack(t, 0, 512), vec![100, 200]);
        }
    }

    #[test]
    fn head_tail_and_head_tail_keep_the_right_tokens() {
        assert_eq!(pack(Truncation::Head, 10, 6), vec![100, 1, 2, 3, 4, 200]);
        assert_eq!(pack(Truncation::Tail, 10, 6), vec![100, 7, 8, 9, 10, 200]);
        // budget 8: head round(8/4) = 2, tail 6
        assert_eq!(pack(Truncation::HeadTail, 20, 10), vec![100, 1, 2, 15, 16, 17, 18, 19, 20, 200]);
        assert_eq!(pack(Truncation::Head, 10, 2), vec![100, 200]);
        assert_eq!(pack(Truncation::HeadTail, 10, 2), vec![100, 200]);
    }

    #[test]
    fn head_tail_split_matches_sun_et_al_at_512() {
        assert_eq!(Truncation::HeadTail.split(1000, 510), (128, 382));
        assert_eq!(Truncation::HeadTail.split(1000, 254), (64, 190));
        assert_eq!(Truncation::HeadTail.split(1000, 126), (32, 94));
        assert_eq!(Truncation::HeadTail.split(1000, 1), (0, 1));
        assert_eq!(Truncation::HeadTail.split(1000, 2), (1, 1));
        assert_eq!(Truncation::HeadTail.split(510, 510), (510, 0));
    }

    #[test]
    fn names_round_trip() {
        for t in Truncation::ALL {
            assert_eq!(t.to_string().parse::<Truncation>().unwrap(), t);
            assert_eq!(Truncation::from_code(t.code()), Some(t));
        }
        assert_eq!(Truncation::default(), Truncation::Head);
        let err = "middle".parse::<Truncation>().unwrap_err().to_string();
        assert!(err.contains("middle") && err.contains("head-tail"), "{err}");
    }
}
