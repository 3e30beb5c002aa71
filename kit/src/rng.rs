//! A small seeded generator (xorshift64*) for test tables and bench
//! traffic: the same seed gives the same sequence.

/// The state; seed it with any non-zero value.
pub struct Rng(pub u64);

impl Rng {
    /// The next value (an endless generator, not an `Iterator`).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
