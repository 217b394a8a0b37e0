//! Truncation strategies and `[CLS] tokens [SEP]` packing: which tokens of a long text are kept,
//! and how the kept ones become a model's ids.

// The strategy is a run setting, so its name and spellings are defined in bertlab-run (the
// crate of run settings, which carries no tokenizer); what it does to tokens is defined here.
pub use bertlab_run::Truncation;

/// The `(head, tail)` token counts `truncation` keeps from a text of `len` tokens within
/// `budget` (`max_len - 2`: room left for `[CLS]` and `[SEP]`).
///
/// `head + tail == min(len, budget)`; texts that fit are kept whole whatever the strategy.
/// [`Truncation::HeadTail`] gives the head `round(budget / 4)` tokens, halves rounded up, which
/// at max_len 512 is Sun et al.'s 128 + 382.
pub fn kept_counts(truncation: Truncation, len: usize, budget: usize) -> (usize, usize) {
    if len <= budget {
        return (len, 0);
    }
    match truncation {
        Truncation::Head => (budget, 0),
        Truncation::Tail => (0, budget),
        Truncation::HeadTail => {
            let head = (budget + 2) / 4;
            (head, budget - head)
        }
    }
}

/// Append `[CLS] kept-tokens [SEP]` to `out`, at most `max_len` ids (`max_len >= 2`), keeping
/// the tokens [`kept_counts`] says.
pub fn pack_into<T: Copy>(
    truncation: Truncation,
    tokens: &[T],
    cls: T,
    sep: T,
    max_len: usize,
    out: &mut Vec<T>,
) {
    debug_assert!(max_len >= 2);
    let (head, tail) = kept_counts(truncation, tokens.len(), max_len - 2);
    out.reserve(head + tail + 2);
    out.push(cls);
    out.extend_from_slice(&tokens[..head]);
    out.extend_from_slice(&tokens[tokens.len() - tail..]);
    out.push(sep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(t: Truncation, n: u32, max_len: usize) -> Vec<u32> {
        let tokens: Vec<u32> = (1..=n).collect();
        let mut out = Vec::new();
        pack_into(t, &tokens, 100, 200, max_len, &mut out);
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

    /// Moved with the packing from bertlab-run's `Truncation`.
    #[test]
    fn truncation_keeps_head_tail_or_both() {
        assert_eq!(pack(Truncation::Head, 5, 5), vec![100, 1, 2, 3, 200]);
        assert_eq!(pack(Truncation::Tail, 5, 5), vec![100, 3, 4, 5, 200]);
        assert_eq!(pack(Truncation::HeadTail, 3, 8), vec![100, 1, 2, 3, 200]);
        assert_eq!(kept_counts(Truncation::HeadTail, 1000, 510), (128, 382));
    }

    #[test]
    fn head_tail_split_matches_sun_et_al_at_512() {
        assert_eq!(kept_counts(Truncation::HeadTail, 1000, 510), (128, 382));
        assert_eq!(kept_counts(Truncation::HeadTail, 1000, 254), (64, 190));
        assert_eq!(kept_counts(Truncation::HeadTail, 1000, 126), (32, 94));
        assert_eq!(kept_counts(Truncation::HeadTail, 1000, 1), (0, 1));
        assert_eq!(kept_counts(Truncation::HeadTail, 1000, 2), (1, 1));
        assert_eq!(kept_counts(Truncation::HeadTail, 510, 510), (510, 0));
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
