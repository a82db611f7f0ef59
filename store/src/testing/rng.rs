//! A small deterministic random number generator (SplitMix64) for generated
//! test data: the benchmark's synthetic catalogs and the store's generated
//! filters. Written here rather than taken from `rand` so that a seed gives
//! the same data in every version of this repository: `rand` does not
//! promise stable streams.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    /// Skewed towards 0: the square of a uniform fraction, so that the first
    /// few indices are picked far more often (the hubs of the graph).
    pub fn skewed_below(&mut self, bound: usize) -> usize {
        let fraction = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((fraction * fraction * fraction) * bound as f64) as usize % bound
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let mut first = Rng::new(7);
        let mut second = Rng::new(7);
        let a: Vec<u64> = (0..5).map(|_| first.next_u64()).collect();
        let b: Vec<u64> = (0..5).map(|_| second.next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(a, (0..5).map(|_| Rng::new(8).next_u64()).collect::<Vec<_>>());
    }

    #[test]
    fn skewed_picks_favour_low_indices() {
        let mut rng = Rng::new(1);
        let picks: Vec<usize> = (0..10_000).map(|_| rng.skewed_below(100)).collect();
        let low = picks.iter().filter(|pick| **pick < 10).count();
        assert!(low > 4_000, "{low} of 10,000 picks under 10");
        assert!(picks.iter().all(|pick| *pick < 100));
    }
}
