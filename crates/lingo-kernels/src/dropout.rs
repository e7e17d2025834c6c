//! Dropout, `x ⊙ m / (1 − p)` with `m` a Bernoulli(1 − p) mask, fused and stateless.
//!
//! The mask is not stored: element `i` is kept when a counter-based hash of `(seed, i)` lands above
//! `p`, so the backward regenerates exactly the forward's mask from the seed alone (no mask tensor
//! is allocated, written or read), any element's draw is independent of how the work is split
//! across threads, and a run that draws its seeds from a checkpointed RNG resumes exactly. The
//! fused attention kernel drops attention probabilities with the same [`keeps`] rule, indexed by the
//! probability's position in `[batch, heads, queries, keys]`.

use crate::cpu;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};
use multiversion::multiversion;

/// Element `index` of a dropout draw seeded with `seed` survives (SplitMix64's finaliser on the
/// pair, compared as 32 bits with `threshold = ⌊p · 2³²⌋`).
#[inline(always)]
pub fn keeps(seed: u64, index: u64, threshold: u32) -> bool {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 32) as u32) >= threshold
}

/// The comparison threshold of probability `p`.
pub fn threshold(p: f32) -> u32 {
    ((p as f64).clamp(0.0, 1.0) * 4_294_967_296.0).min(u32::MAX as f64) as u32
}

/// `y[j] = x[j] · scale` where element `first + j` is kept, 0 elsewhere.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
pub fn apply(seed: u64, first: u64, threshold: u32, scale: f32, x: &[f32], y: &mut [f32]) {
    for (j, (o, &v)) in y.iter_mut().zip(x).enumerate() {
        let keep = keeps(seed, first + j as u64, threshold);
        *o = if keep { v * scale } else { 0.0 };
    }
}

/// In place: `x[j] *= scale` where element `first + j` is kept, 0 elsewhere.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
pub fn apply_in_place(seed: u64, first: u64, threshold: u32, scale: f32, x: &mut [f32]) {
    for (j, v) in x.iter_mut().enumerate() {
        let keep = keeps(seed, first + j as u64, threshold);
        *v = if keep { *v * scale } else { 0.0 };
    }
}

struct DropoutOp {
    p: f32,
    seed: u64,
}

impl DropoutOp {
    /// The mask applied to `x` (forward) or to the upstream gradient (backward): the same rule, so
    /// the same elements.
    fn run(&self, x: &[f32]) -> Vec<f32> {
        let (t, scale) = (threshold(self.p), 1.0 / (1.0 - self.p));
        let mut y = vec![0f32; x.len()];
        let width = BLOCK.min(x.len().max(1));
        cpu::par_rows(&mut y, width, |row0, block| {
            let start = row0 * width;
            let x = &x[start..start + block.len()];
            apply(self.seed, start as u64, t, scale, x, block);
        });
        y
    }
}

const BLOCK: usize = 4096;

impl candle_core::CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "lingo-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s, l, "dropout")?;
        Ok((CpuStorage::F32(self.run(x)), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = cpu::with_data(grad, "dropout", |dy| self.run(dy))?;
        Ok(Some(cpu::tensor(dx, arg.shape())?))
    }
}

/// Dropout of `x` with probability `p` and the mask of `seed` (the identity for `p = 0`).
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout: probability {p} is not in [0, 1)");
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return dropout_composed(x, p, seed);
    }
    x.contiguous()?.apply_op1(DropoutOp { p, seed })
}

/// The composed expression the fused op replaces: `x` times the mask tensor of the same rule.
pub fn dropout_composed(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let (t, scale) = (threshold(p), 1.0 / (1.0 - p));
    let mask: Vec<f32> = (0..x.elem_count() as u64)
        .map(|i| if keeps(seed, i, t) { scale } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x.contiguous()? * mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, check_parity, random_tensor, GradCheck};

    #[test]
    fn drops_the_asked_share_and_scales_the_rest() -> Result<()> {
        let x = Tensor::ones(100_000, DType::F32, &candle_core::Device::Cpu)?;
        for p in [0.1f32, 0.5] {
            let y = dropout(&x, p, 7)?.to_vec1::<f32>()?;
            let zeros = y.iter().filter(|&&v| v == 0.0).count() as f32 / y.len() as f32;
            assert!((zeros - p).abs() < 0.01, "p {p}: dropped {zeros}");
            assert!(y
                .iter()
                .all(|&v| v == 0.0 || (v - 1.0 / (1.0 - p)).abs() < 1e-6));
            // The seed decides the mask; another seed gives another.
            assert_eq!(y, dropout(&x, p, 7)?.to_vec1::<f32>()?);
            assert_ne!(y, dropout(&x, p, 8)?.to_vec1::<f32>()?);
        }
        Ok(())
    }

    #[test]
    fn gradients_and_parity_with_composed() -> Result<()> {
        // More than one block, with a ragged tail: the mask does not depend on the split.
        let x = random_tensor(&[3, 5000], 2)?;
        check_parity(
            &|t| dropout(&t[0], 0.3, 11),
            &|t| dropout_composed(&t[0], 0.3, 11),
            std::slice::from_ref(&x),
            1e-6,
        )?;
        let small = random_tensor(&[4, 9], 3)?;
        check_gradients(
            &|t| dropout(&t[0], 0.25, 5),
            std::slice::from_ref(&small),
            GradCheck::default(),
        )
    }
}
