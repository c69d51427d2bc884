//! A tiny seeded PRNG (SplitMix64) for election timeouts: deterministic for a seed, no
//! dependency, no global state.

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state, good statistical quality for timers.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // Scramble the seed first so that nearby seeds (node ids 1, 2, 3) start far apart.
        let mut r = Rng { state: seed.wrapping_mul(0xD605_BBB5_8C8A_BBA5) ^ 0x5DEE_CE66_D1CE_4E5B };
        r.state = r.next_u64();
        r
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[lo, hi)`.
    pub(crate) fn range(&mut self, lo: u32, hi: u32) -> u32 {
        assert!(lo < hi, "empty range {lo}..{hi}");
        lo + ((self.next_u64() >> 16) % u64::from(hi - lo)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_values_stay_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.range(10, 20);
            assert_eq!(x, b.range(10, 20));
            assert!((10..20).contains(&x));
        }
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[(a.range(10, 20) - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "every value of the range is drawn");
    }
}
