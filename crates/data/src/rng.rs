//! numpy's `default_rng(seed)` random stream, bit for bit: `SeedSequence` → PCG64 (XSL-RR 128/64),
//! and the few draws HF `datasets` uses to split (`permutation`, `choice` without replacement).
//!
//! Matching numpy exactly is what makes `bertlab`'s splits hold the *same rows* as the notebook's
//! `Dataset.train_test_split(..., seed=S)`. The algorithm is written out in `shared/SPLIT.md`;
//! all arithmetic wraps, as numpy's C code does.

/// numpy `SeedSequence` constants (numpy/random/bit_generator.pyx).
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// PCG64's 128-bit LCG multiplier.
const PCG_MULT: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;

/// The 4 × u64 state words numpy's `SeedSequence(seed).generate_state(4, uint64)` returns.
pub fn seed_sequence_words(seed: u64) -> [u64; 4] {
    // numpy coerces the integer seed into little-endian u32 words, at least one.
    let entropy: Vec<u32> =
        if seed >> 32 == 0 { vec![seed as u32] } else { vec![seed as u32, (seed >> 32) as u32] };
    let mut hash_const = INIT_A;
    let mut hashmix = |value: u32| -> u32 {
        let mut v = value ^ hash_const;
        hash_const = hash_const.wrapping_mul(MULT_A);
        v = v.wrapping_mul(hash_const);
        v ^ (v >> XSHIFT)
    };
    let mix = |x: u32, y: u32| -> u32 {
        let r = MIX_MULT_L.wrapping_mul(x).wrapping_sub(MIX_MULT_R.wrapping_mul(y));
        r ^ (r >> XSHIFT)
    };
    let mut pool = [0u32; POOL_SIZE];
    for (i, slot) in pool.iter_mut().enumerate() {
        *slot = hashmix(entropy.get(i).copied().unwrap_or(0));
    }
    for src in 0..POOL_SIZE {
        for dst in 0..POOL_SIZE {
            if src != dst {
                let h = hashmix(pool[src]);
                pool[dst] = mix(pool[dst], h);
            }
        }
    }
    for &word in entropy.iter().skip(POOL_SIZE) {
        for slot in pool.iter_mut() {
            let h = hashmix(word);
            *slot = mix(*slot, h);
        }
    }
    let mut out = [0u32; 8];
    let mut hash_b = INIT_B;
    for (i, o) in out.iter_mut().enumerate() {
        let mut v = pool[i % POOL_SIZE] ^ hash_b;
        hash_b = hash_b.wrapping_mul(MULT_B);
        v = v.wrapping_mul(hash_b);
        *o = v ^ (v >> XSHIFT);
    }
    std::array::from_fn(|k| out[2 * k] as u64 | (out[2 * k + 1] as u64) << 32)
}

/// numpy's PCG64 bit generator as created by `numpy.random.default_rng(seed)`.
///
/// ```
/// use bertlab_data::rng::Pcg64;
/// let mut rng = Pcg64::new(42);
/// let p = rng.permutation(5);
/// let mut sorted = p.clone();
/// sorted.sort();
/// assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
/// ```
// Serialisable so that a run's checkpoint can resume the batch order exactly.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pcg64 {
    state: u128,
    inc: u128,
    /// numpy buffers the upper half of a u64 for the next 32-bit draw.
    buffered_u32: Option<u32>,
}

impl Pcg64 {
    /// The generator `numpy.random.default_rng(seed)` holds.
    pub fn new(seed: u64) -> Self {
        let w = seed_sequence_words(seed);
        let initstate = (w[0] as u128) << 64 | w[1] as u128;
        let initseq = (w[2] as u128) << 64 | w[3] as u128;
        let mut rng = Pcg64 { state: 0, inc: (initseq << 1) | 1, buffered_u32: None };
        rng.step();
        rng.state = rng.state.wrapping_add(initstate);
        rng.step();
        rng
    }

    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    /// Next 64 random bits (XSL-RR output of the stepped state).
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let hi = (self.state >> 64) as u64;
        let lo = self.state as u64;
        (hi ^ lo).rotate_right((hi >> 58) as u32)
    }

    /// Next 32 random bits: half of a buffered u64, low half first (numpy's `next_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if let Some(v) = self.buffered_u32.take() {
            return v;
        }
        let v = self.next_u64();
        self.buffered_u32 = Some((v >> 32) as u32);
        v as u32
    }

    /// Uniform integer in `0..=max` by masked rejection (numpy's `random_interval`).
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        if max <= u32::MAX as u64 {
            loop {
                let v = (self.next_u32() as u64) & mask;
                if v <= max {
                    return v;
                }
            }
        } else {
            loop {
                let v = self.next_u64() & mask;
                if v <= max {
                    return v;
                }
            }
        }
    }

    /// Uniform integer in `0..=range` by Lemire's method (numpy's `random_bounded_uint64`
    /// without masking), the draw `choice(replace=False)` uses.
    pub fn bounded(&mut self, range: u64) -> u64 {
        if range == 0 {
            return 0;
        }
        if range <= u32::MAX as u64 {
            if range == u32::MAX as u64 {
                return self.next_u32() as u64;
            }
            let range_excl = range as u32 + 1;
            let mut m = self.next_u32() as u64 * range_excl as u64;
            let mut leftover = m as u32;
            if leftover < range_excl {
                let threshold = (u32::MAX - range as u32) % range_excl;
                while leftover < threshold {
                    m = self.next_u32() as u64 * range_excl as u64;
                    leftover = m as u32;
                }
            }
            m >> 32
        } else {
            if range == u64::MAX {
                return self.next_u64();
            }
            let range_excl = range + 1;
            let mut m = self.next_u64() as u128 * range_excl as u128;
            let mut leftover = m as u64;
            if leftover < range_excl {
                let threshold = (u64::MAX - range) % range_excl;
                while leftover < threshold {
                    m = self.next_u64() as u128 * range_excl as u128;
                    leftover = m as u64;
                }
            }
            (m >> 64) as u64
        }
    }

    /// In-place Fisher–Yates shuffle, numpy's `Generator.shuffle` for a 1-D array.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u64) as usize;
            items.swap(i, j);
        }
    }

    /// `Generator.permutation(n)`: a shuffled `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }

    /// `Generator.choice(items, size, replace=False)` on a small population (≤ 10,000 items,
    /// numpy's tail-shuffle path; the only use here is tie breaking among classes).
    pub fn choice_without_replacement<T: Copy>(&mut self, items: &[T], size: usize) -> Vec<T> {
        let len = items.len();
        assert!(size <= len, "cannot choose {size} of {len} without replacement");
        assert!(len <= 10_000, "numpy uses Floyd's algorithm above 10,000 items; not implemented");
        let mut idx: Vec<usize> = (0..len).collect();
        if len > 0 {
            let first = len.saturating_sub(size).max(1);
            for i in (first..len).rev() {
                let j = self.bounded(i as u64) as usize;
                idx.swap(i, j);
            }
        }
        idx[len - size..].iter().map(|&i| items[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values printed by numpy 2.4: SeedSequence(s).generate_state(4, np.uint64),
    // default_rng(42).bit_generator.random_raw(3), default_rng(s).permutation(10) and
    // default_rng(42).permutation(10) followed by .choice(np.arange(7), 3, replace=False).
    #[test]
    fn seed_sequence_matches_numpy() {
        assert_eq!(
            seed_sequence_words(42),
            [0x9f1e_2e6d_cd54_0ab7, 0xd578_73dc_79fb_94b6, 0x7d28_2a1b_64d4_20b7, 0x3365_7971_4692_d5ff]
        );
        // A seed wider than 32 bits becomes two entropy words.
        assert_eq!(
            seed_sequence_words((1 << 32) + 5),
            [0xf9c1_5bd6_e249_d9ac, 0xb202_1b40_3632_0ed7, 0x9388_b47f_e6dc_f739, 0x5eeb_a8d9_ad64_39e1]
        );
    }

    #[test]
    fn raw_draws_match_numpy() {
        let mut rng = Pcg64::new(42);
        let raw: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(raw, [14276969152011380360, 8095878257575067585, 15838336090824644132]);
    }

    #[test]
    fn permutation_and_choice_match_numpy() {
        let mut rng = Pcg64::new(42);
        assert_eq!(rng.permutation(10), [5, 6, 0, 7, 3, 2, 4, 9, 1, 8]);
        assert_eq!(rng.choice_without_replacement(&[0, 1, 2, 3, 4, 5, 6], 3), [3, 4, 5]);
        let mut rng = Pcg64::new((1 << 32) + 5);
        assert_eq!(rng.permutation(10), [6, 7, 4, 2, 5, 0, 9, 8, 3, 1]);
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut rng = Pcg64::new(7);
        let mut p = rng.permutation(1000);
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
