//! Truncation strategies and `[CLS] tokens [SEP]` packing (tested here, where they are used).

// The strategy is a run setting, so it is defined (with its `split` and `pack_into`) in
// bertlab-run, the crate of run settings that carries no tokenizer; this crate re-exports it.
pub use bertlab_run::Truncation;

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
