//! Lingo's one source of randomness: weight init, data order, dropout masks and sampling all draw from
//! a seeded ChaCha8 stream whose position can be saved and restored, so runs reproduce and resume exactly.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug)]
pub struct LingoRng {
    seed: u64,
    inner: ChaCha8Rng,
}

/// Where a [`LingoRng`] stands: enough to continue its stream exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    /// The stream position in 32-bit words, as a decimal string (it is a u128).
    pub word_pos: String,
}

impl LingoRng {
    pub fn new(seed: u64) -> Self {
        LingoRng {
            seed,
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// An independent stream derived from this one's seed (e.g. one for init, one for data).
    pub fn fork(&self, salt: u64) -> Self {
        LingoRng::new(self.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn state(&self) -> RngState {
        RngState {
            seed: self.seed,
            word_pos: self.inner.get_word_pos().to_string(),
        }
    }

    pub fn from_state(state: &RngState) -> Result<Self, String> {
        let pos: u128 = state
            .word_pos
            .parse()
            .map_err(|_| format!("bad RNG position {:?}", state.word_pos))?;
        let mut rng = LingoRng::new(state.seed);
        rng.inner.set_word_pos(pos);
        Ok(rng)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        self.inner.random::<f32>()
    }

    /// Uniform integer in `[0, n)`.
    pub fn below(&mut self, n: usize) -> usize {
        self.inner.random_range(0..n)
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f32 {
        StandardNormal.sample(&mut self.inner)
    }

    /// Shuffles `xs` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_continues_the_stream() {
        let mut a = LingoRng::new(42);
        for _ in 0..37 {
            a.normal();
        }
        let saved = a.state();
        let next: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let mut b = LingoRng::from_state(&saved).unwrap();
        let again: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(next, again);
    }

    #[test]
    fn same_seed_same_stream_different_seed_different() {
        let (mut a, mut b, mut c) = (LingoRng::new(1), LingoRng::new(1), LingoRng::new(2));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(a.next_u64(), c.next_u64());
    }
}
