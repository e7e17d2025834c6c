//! Branch-free polynomial `exp`, `erf` and `tanh` that the compiler vectorises, and the row primitives
//! built on them. libm's scalar `expf`/`erff`/`tanhf` calls were most of candle's non-matmul time.
//!
//! The `#[multiversion]` functions are compiled for AVX-512, AVX2+FMA and baseline x86-64 and pick the
//! best at run time, so the binary stays portable.

use multiversion::multiversion;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` to about 1 ulp over the f32 range (Cephes `expf`); `exp(-inf) = 0`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.5, 88.5);
    // Round to nearest by adding and subtracting 1.5·2²³ (exact for |x·log₂e| < 2²²): plain
    // arithmetic that vectorises on every x86-64 level, where `round()` and `round_ties_even()`
    // become libm calls without SSE4.1 and stop the loops around them from vectorising.
    const ROUND: f32 = 12_582_912.0;
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n by building the exponent bits directly. n is read from `shifted`'s low mantissa bits
    // (its bits are those of 1.5·2²³ plus n) rather than converted with `as i32`, which saturates:
    // x86 has no vector instruction for that, and the loops around it fell back to scalar.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    y * scale
}

/// `erf(x)` to a few ulp: Eigen's rational approximation `x·P(x²)/Q(x²)` on [-4, 4] (erf is ±1 in
/// f32 beyond), which keeps its relative accuracy near zero where `1 − e^{−x²}·poly` forms cancel.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.9546e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// `tanh(x)`, absolute error about 1e-7.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs().min(9.0);
    let e = exp(2.0 * a);
    let y = 1.0 - 2.0 / (e + 1.0);
    y.copysign(x)
}

/// Largest element (`-inf` for an empty slice).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn max(xs: &[f32]) -> f32 {
    // Eight independent lanes so the reduction vectorises.
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            lanes[i] = lanes[i].max(c[i]);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &l in lanes.iter().chain(tail) {
        m = m.max(l);
    }
    m
}

/// Largest magnitude of the elements (0 for an empty slice), or NaN if any is not finite.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn max_abs(xs: &[f32]) -> f32 {
    // The bits of |x| order as the magnitudes do, infinities and NaNs above every finite value,
    // and an integer max vectorises where a float max that must notice NaN does not.
    let mut lanes = [0u32; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            lanes[i] = lanes[i].max(c[i].to_bits() & 0x7fff_ffff);
        }
    }
    let tail = tail.iter().map(|x| x.to_bits() & 0x7fff_ffff);
    let m = lanes.into_iter().chain(tail).max().unwrap_or(0);
    if m >= 0x7f80_0000 {
        f32::NAN
    } else {
        f32::from_bits(m)
    }
}

/// `q[i] = round(x[i] · scale) + offset` (to nearest, ties to even; clamped to −127…127 before
/// the offset) as bytes: two's-complement int8 with offset 0, `q + 128` as u8 with offset 128.
/// The values must be finite.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn round_to_bytes(xs: &[f32], scale: f32, offset: f32, q: &mut [u8]) {
    // Adding and subtracting 1.5·2²³ rounds to nearest even (see `exp`).
    const ROUND: f32 = 12_582_912.0;
    for (q, &x) in q.iter_mut().zip(xs) {
        let r = ((x * scale).clamp(-127.0, 127.0) + ROUND) - ROUND + offset;
        // SAFETY: `r` is a whole number in −127…255 (finite inputs), so the conversion is exact;
        // the checked `as` would keep the loop from vectorising.
        *q = unsafe { r.to_int_unchecked::<i32>() } as u8;
    }
}

/// Sum of the elements, accumulated in 16 lanes.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            lanes[i] += c[i];
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// `Σ (x − mean)²`, accumulated in 16 lanes.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn sum_squared_deviations(xs: &[f32], mean: f32) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    for c in chunks {
        for i in 0..16 {
            lanes[i] += (c[i] - mean) * (c[i] - mean);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `Σ a·b`, accumulated in 16 lanes.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_inline(a, b)
}

/// [`dot`]'s body, for kernels that call it in their own loops: inlined there, it is compiled for
/// each of their targets instead of dispatched on every call.
#[inline(always)]
pub(crate) fn dot_inline(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `dst += src`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// `dst[i] = exp(src[i] - shift)`, returning the sum of `dst`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn exp_shifted(dst: &mut [f32], src: &[f32], shift: f32) -> f32 {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = exp(s - shift);
    }
    sum(dst)
}

/// `xs[i] = exp(xs[i] - shift)`, returning the sum.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn exp_shifted_in_place(xs: &mut [f32], shift: f32) -> f32 {
    for x in xs.iter_mut() {
        *x = exp(*x - shift);
    }
    sum(xs)
}

/// `Σ exp(src[i] - shift)` without writing anything.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn sum_exp_shifted(src: &[f32], shift: f32) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = src.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&s| exp(s - shift)).sum();
    for c in chunks {
        for i in 0..16 {
            lanes[i] += exp(c[i] - shift);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `xs *= k`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn scale(xs: &mut [f32], k: f32) {
    for x in xs {
        *x *= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0f32.max(exp(-1e30)));
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn erf_and_tanh_match_reference() {
        let mut x = -6.0f32;
        while x < 6.0 {
            let erf_ref = libm_erf(x as f64);
            assert!(
                (erf(x) as f64 - erf_ref).abs() < 4.5e-7 * erf_ref.abs() + 3e-8,
                "erf({x}): {} vs {erf_ref}",
                erf(x)
            );
            assert!((tanh(x) - x.tanh()).abs() < 3e-7, "tanh({x})");
            x += 0.001;
        }
    }

    /// erf by its Taylor series / continued fraction in f64, as an independent reference.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut term = x;
            let mut total = x;
            let mut n = 0.0;
            loop {
                n += 1.0;
                term *= -x * x / n;
                let add = term / (2.0 * n + 1.0);
                total += add;
                if add.abs() < 1e-17 {
                    break;
                }
            }
            total * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc continued fraction (Lentz), accurate for |x| >= 3.
            let a = x.abs();
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            let erfc = (-a * a).exp() / (f * std::f64::consts::PI.sqrt());
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn reductions_cover_tails() {
        let xs: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        assert_eq!(max(&xs), 15.0);
        assert!((sum(&xs) - xs.iter().sum::<f32>()).abs() < 1e-4);
        assert!((dot(&xs, &xs) - xs.iter().map(|x| x * x).sum::<f32>()).abs() < 1e-2);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }
}
