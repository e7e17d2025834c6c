//! Mixed precision: matrix products with bf16 operands and f32 accumulation.
//!
//! With [`Precision::Bf16`] switched on (see [`set_precision`]), the large matrix products of the
//! linear layers — forward and both backward products — round their two operands to bfloat16 and
//! multiply them with AVX-512 BF16's `vdpbf16ps`, which adds pairs of bf16 products into f32
//! accumulators at twice the rate of f32 FMAs. Everything else stays f32: the weights (the master
//! copy the optimizer updates), gradients, activations, norms, softmax and the loss. That is what
//! `torch.autocast("cpu", dtype=torch.bfloat16)` does to `nn.Linear`, without its bf16 outputs.
//!
//! The CPU is asked at run time; on one without AVX-512 BF16 (or with `LINGO_NO_BF16` set) the
//! request falls back to f32 and [`set_precision`] says so.
//!
//! The product is blocked as in GotoBLAS: both operands are packed once into bf16 pairs (`A` as
//! [`MR`]-row micro-panels, `B` as [`NR`]-column micro-panels, each k-pair of a column one 32-bit
//! lane), and [`MR`]×[`NR`] tiles of `C` are computed in parallel over blocks of rows and columns,
//! k in L1-sized slices. Each element of `C` is summed by one thread in a fixed order, so the
//! result does not depend on the number of threads.

use crate::cpu::{Mat, SendPtr};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};

/// The precision of the matrix products in the linear layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 operands and accumulation.
    F32,
    /// bf16 operands, f32 accumulation (AVX-512 BF16 CPUs).
    Bf16,
}

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Whether this CPU multiplies bf16 pairs into f32 (`vdpbf16ps`), and `LINGO_NO_BF16` is not set.
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::env::var_os("LINGO_NO_BF16").is_none()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Sets the precision of the matrix products for the whole process and returns the one in force:
/// [`Precision::F32`] when bf16 is asked for on a CPU without it.
pub fn set_precision(requested: Precision) -> Precision {
    let effective = match requested {
        Precision::Bf16 if bf16_supported() => Precision::Bf16,
        _ => Precision::F32,
    };
    PRECISION.store(effective as u8, Ordering::Relaxed);
    effective
}

/// The precision in force.
pub fn precision() -> Precision {
    match PRECISION.load(Ordering::Relaxed) {
        1 => Precision::Bf16,
        _ => Precision::F32,
    }
}

/// Rows of a micro-tile of `C`.
pub const MR: usize = 8;
/// Columns of a micro-tile of `C`: two 16-lane registers.
pub const NR: usize = 32;
/// k-pairs per L1 slice: a `B` micro-panel of `KC · NR · 4` bytes = 16 KiB.
const KC: usize = 128;
/// Rows and columns of `C` per parallel task.
const MC: usize = 64;
const NC: usize = 256;
/// Below this many multiply-adds the packing costs more than bf16 saves.
const MIN_WORK: usize = 1 << 18;

/// Whether [`gemm`] should take a product of this size.
pub(crate) fn takes(m: usize, n: usize, k: usize) -> bool {
    precision() == Precision::Bf16 && m * n * k >= MIN_WORK && k >= 16
}

/// f32 → bf16 bits, rounding to nearest even (as `vcvtne2ps2bf16` and PyTorch do).
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

/// bf16 bits → f32 (exact).
#[inline(always)]
pub fn from_bf16(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | ((to_bf16(hi) as u32) << 16)
}

/// `A[m×k]` as `ceil(m/MR)` micro-panels of `kp` k-pairs × [`MR`] rows, zero-padded.
pub(crate) fn pack_a(a: Mat, m: usize, k: usize, kp: usize) -> Vec<u32> {
    let mut packed = vec![0u32; m.div_ceil(MR) * kp * MR];
    packed
        .par_chunks_mut(kp * MR)
        .enumerate()
        .for_each(|(t, panel)| {
            let rows = (m - t * MR).min(MR);
            // SAFETY: the block read is inside `a`, as the caller described it.
            unsafe { pack_panel(a.shifted(t * MR, 0), rows, k, MR, panel) }
        });
    packed
}

/// `B[k×n]` as `ceil(n/NR)` micro-panels of `kp` k-pairs × [`NR`] columns, zero-padded.
pub(crate) fn pack_b(b: Mat, k: usize, n: usize, kp: usize) -> Vec<u32> {
    let mut packed = vec![0u32; n.div_ceil(NR) * kp * NR];
    packed
        .par_chunks_mut(kp * NR)
        .enumerate()
        .for_each(|(t, panel)| {
            let cols = (n - t * NR).min(NR);
            // SAFETY: as above; packing `Bᵀ` by rows is packing `B` by columns.
            unsafe { pack_panel(b.shifted(0, t * NR).transposed(), cols, k, NR, panel) }
        });
    packed
}

/// Packs `lines` lines of `src` (each `k` long, line `r` element `l` at `src.get(r, l)`) into
/// `panel[p · width + r] = (src[r][2p], src[r][2p+1])` as a bf16 pair.
///
/// The two layouts the linear layer produces get vector paths: lines contiguous (pairs are adjacent
/// floats) and lines interleaved (the pair's halves are two contiguous runs across lines).
unsafe fn pack_panel(src: Mat, lines: usize, k: usize, width: usize, panel: &mut [u32]) {
    let kp = k.div_ceil(2);
    let full = k / 2;
    if src.cs == 1 {
        let mut pairs = vec![0u32; kp];
        for r in 0..lines {
            let line = std::slice::from_raw_parts(src.ptr.offset(r as isize * src.rs), k);
            convert_adjacent(&line[..2 * full], &mut pairs[..full]);
            if k % 2 == 1 {
                pairs[full] = pair(line[k - 1], 0.0);
            }
            for (p, &v) in pairs.iter().enumerate() {
                panel[p * width + r] = v;
            }
        }
    } else if src.rs == 1 {
        for p in 0..kp {
            let lo = std::slice::from_raw_parts(src.ptr.offset(2 * p as isize * src.cs), lines);
            let out = &mut panel[p * width..p * width + lines];
            if 2 * p + 1 < k {
                let hi = std::slice::from_raw_parts(
                    src.ptr.offset((2 * p + 1) as isize * src.cs),
                    lines,
                );
                convert_interleaved(lo, hi, out);
            } else {
                for (o, &x) in out.iter_mut().zip(lo) {
                    *o = pair(x, 0.0);
                }
            }
        }
    } else {
        for r in 0..lines {
            for p in 0..kp {
                let hi = if 2 * p + 1 < k {
                    src.get(r, 2 * p + 1)
                } else {
                    0.0
                };
                panel[p * width + r] = pair(src.get(r, 2 * p), hi);
            }
        }
    }
}

/// `out[p] = (x[2p], x[2p+1])`: a bf16 conversion in place order.
pub(crate) fn convert_adjacent(x: &[f32], out: &mut [u32]) {
    let vectors = out.len() / 16;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `gemm` runs only where `bf16_supported`; 16 pairs read 32 floats of `x`.
    unsafe {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f,avx512bf16")]
        unsafe fn sixteen(x: *const f32, out: *mut u32) {
            let lo = _mm512_loadu_ps(x);
            let hi = _mm512_loadu_ps(x.add(16));
            let bf: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(out.cast(), bf);
        }
        for v in 0..vectors {
            sixteen(x.as_ptr().add(32 * v), out.as_mut_ptr().add(16 * v));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let vectors = 0;
    for p in 16 * vectors..out.len() {
        out[p] = pair(x[2 * p], x[2 * p + 1]);
    }
}

/// `out[j] = (lo[j], hi[j])`.
fn convert_interleaved(lo: &[f32], hi: &[f32], out: &mut [u32]) {
    let vectors = out.len() / 16;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `convert_adjacent`; 16 outputs read 16 floats of each input.
    unsafe {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
        unsafe fn sixteen(lo: *const f32, hi: *const f32, out: *mut u32) {
            let bf: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(
                _mm512_loadu_ps(hi),
                _mm512_loadu_ps(lo),
            ));
            // Lanes 0..16 hold lo, 16..32 hi: interleave them into (lo, hi) pairs.
            let order = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            );
            _mm512_storeu_si512(out.cast(), _mm512_permutexvar_epi16(order, bf));
        }
        for v in 0..vectors {
            let j = 16 * v;
            sixteen(
                lo.as_ptr().add(j),
                hi.as_ptr().add(j),
                out.as_mut_ptr().add(j),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let vectors = 0;
    for j in 16 * vectors..out.len() {
        out[j] = pair(lo[j], hi[j]);
    }
}

/// `dst[m×n] = (accumulate ? dst : 0) + lhs[m×k] · rhs[k×n]` with bf16 operands and f32 sums.
///
/// # Safety
/// As [`crate::cpu::gemm`]: every pointer valid for the region its strides and the sizes describe,
/// `dst` not overlapping the inputs; and [`bf16_supported`] must hold.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    let kp = k.div_ceil(2);
    let a = pack_a(lhs, m, k, kp);
    let b = pack_b(rhs, k, n, kp);
    gemm_packed(m, n, kp, dst, dst_rs, accumulate, &a, &b);
}

/// [`gemm`] on operands already packed: `a` by [`pack_a`], `b` by [`pack_b`], both `kp` k-pairs
/// deep. A weight packed once (see [`crate::bf16::Bf16Matrix`]) is multiplied with no conversion.
///
/// # Safety
/// `dst` valid for `m` rows of stride `dst_rs` and `n` columns; `a` and `b` packed for `m`, `n` and
/// `kp`; and [`bf16_supported`] must hold.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_packed(
    m: usize,
    n: usize,
    kp: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: &[u32],
    b: &[u32],
) {
    debug_assert!(a.len() >= m.div_ceil(MR) * kp * MR && b.len() >= n.div_ceil(NR) * kp * NR);
    // Few rows (decoding, one sentence): narrower column blocks, so both threads get work.
    let nc = if m <= MC {
        (n.div_ceil(4 * rayon::current_num_threads())
            .next_multiple_of(NR))
        .clamp(NR, NC)
    } else {
        NC
    };
    let blocks: Vec<(usize, usize)> = (0..m.div_ceil(MC))
        .flat_map(|i| (0..n.div_ceil(nc)).map(move |j| (i * MC, j * nc)))
        .collect();
    let dst = SendPtr(dst);
    let block = |&(row0, col0): &(usize, usize)| {
        let rows = (m - row0).min(MC);
        let cols = (n - col0).min(nc);
        for p0 in (0..kp).step_by(KC) {
            let pairs = (kp - p0).min(KC);
            let load = accumulate || p0 > 0;
            for j in (0..cols).step_by(NR) {
                let b_panel = &b[((col0 + j) / NR * kp + p0) * NR..];
                for i in (0..rows).step_by(MR) {
                    let a_panel = &a[((row0 + i) / MR * kp + p0) * MR..];
                    let tile = Tile {
                        ptr: dst.get().add((row0 + i) * dst_rs + col0 + j),
                        rs: dst_rs,
                        rows: (rows - i).min(MR),
                        cols: (cols - j).min(NR),
                    };
                    micro_tile(pairs, a_panel, b_panel, tile, load);
                }
            }
        }
    };
    // A product too small to share pays more in wake-ups than it saves.
    if m * n * kp < MIN_WORK / 4 || blocks.len() == 1 {
        blocks.iter().for_each(block);
    } else {
        blocks.par_iter().for_each(block);
    }
}

/// Where one micro-tile of `C` lives, and how much of it is inside `C`.
struct Tile {
    ptr: *mut f32,
    rs: usize,
    rows: usize,
    cols: usize,
}

/// One micro-tile: edge tiles go through a full-size scratch tile.
unsafe fn micro_tile(pairs: usize, a: &[u32], b: &[u32], tile: Tile, load: bool) {
    if tile.cols == NR {
        kernel(
            tile.rows,
            pairs,
            a.as_ptr(),
            b.as_ptr(),
            tile.ptr,
            tile.rs,
            load,
        );
        return;
    }
    let mut scratch = [0f32; MR * NR];
    if load {
        for r in 0..tile.rows {
            std::ptr::copy_nonoverlapping(
                tile.ptr.add(r * tile.rs),
                scratch.as_mut_ptr().add(r * NR),
                tile.cols,
            );
        }
    }
    kernel(
        tile.rows,
        pairs,
        a.as_ptr(),
        b.as_ptr(),
        scratch.as_mut_ptr(),
        NR,
        load,
    );
    for r in 0..tile.rows {
        std::ptr::copy_nonoverlapping(
            scratch.as_ptr().add(r * NR),
            tile.ptr.add(r * tile.rs),
            tile.cols,
        );
    }
}

/// The micro-kernel for `rows` rows of `C` (1..=MR): a short tile (one row when decoding) does
/// only its own rows' products.
#[cfg(target_arch = "x86_64")]
unsafe fn kernel(
    rows: usize,
    pairs: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    rs: usize,
    load: bool,
) {
    match rows {
        1 => kernel_avx512::<1>(pairs, a, b, c, rs, load),
        2 => kernel_avx512::<2>(pairs, a, b, c, rs, load),
        3 => kernel_avx512::<3>(pairs, a, b, c, rs, load),
        4 => kernel_avx512::<4>(pairs, a, b, c, rs, load),
        5 => kernel_avx512::<5>(pairs, a, b, c, rs, load),
        6 => kernel_avx512::<6>(pairs, a, b, c, rs, load),
        7 => kernel_avx512::<7>(pairs, a, b, c, rs, load),
        _ => kernel_avx512::<MR>(pairs, a, b, c, rs, load),
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(_: usize, _: usize, _: *const u32, _: *const u32, _: *mut f32, _: usize, _: bool) {
    unreachable!("bf16 products are only switched on where the CPU has them")
}

/// `C[R×NR] (+)= Σ_p A[:, p] · B[p, :]` over `pairs` k-pairs: per pair, two loads of `B`, one
/// broadcast of each row's pair of `A` and `2·R` `vdpbf16ps` into `2·R` accumulator registers.
/// `A`'s micro-panel is [`MR`] rows wide whatever `R` is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel_avx512<const R: usize>(
    pairs: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    rs: usize,
    load: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if load {
        for (r, row) in acc.iter_mut().enumerate() {
            row[0] = _mm512_loadu_ps(c.add(r * rs));
            row[1] = _mm512_loadu_ps(c.add(r * rs + 16));
        }
    }
    for p in 0..pairs {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
        for (r, row) in acc.iter_mut().enumerate() {
            let ar: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(p * MR + r) as i32));
            row[0] = _mm512_dpbf16_ps(row[0], ar, b0);
            row[1] = _mm512_dpbf16_ps(row[1], ar, b1);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        _mm512_storeu_ps(c.add(r * rs), row[0]);
        _mm512_storeu_ps(c.add(r * rs + 16), row[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The exact product of the bf16-rounded operands, in f64.
    fn reference(
        a: &[f32],
        b: &[f32],
        (m, n, k): (usize, usize, usize),
        a_t: bool,
        b_t: bool,
    ) -> Vec<f64> {
        let r = |x: f32| from_bf16(to_bf16(x)) as f64;
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|l| {
                        let x = if a_t { a[l * m + i] } else { a[i * k + l] };
                        let y = if b_t { b[j * k + l] } else { b[l * n + j] };
                        r(x) * r(y)
                    })
                    .sum();
            }
        }
        c
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between two bf16 values: it rounds to the even one, 1.0.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
    }

    #[test]
    fn products_match_the_rounded_operands_on_every_edge() {
        if !bf16_supported() {
            eprintln!("skipping: this CPU has no AVX-512 BF16");
            return;
        }
        // Odd sizes: partial micro-tiles, a k-pair padded with zero, several KC slices and tasks.
        for &(m, n, k) in &[(1, 1, 1), (13, 45, 7), (70, 300, 301), (9, 33, 600)] {
            for (a_t, b_t) in [(false, false), (true, false), (false, true)] {
                let a = random(m * k, (m * 31 + k) as u64);
                let b = random(k * n, (n * 17 + k) as u64);
                let bias = random(m * n, 5);
                for accumulate in [false, true] {
                    let mut c = bias.clone();
                    let lhs = if a_t {
                        Mat::rows_t(a.as_ptr(), m)
                    } else {
                        Mat::rows(a.as_ptr(), k)
                    };
                    let rhs = if b_t {
                        Mat::rows_t(b.as_ptr(), k)
                    } else {
                        Mat::rows(b.as_ptr(), n)
                    };
                    // SAFETY: the buffers have the sizes described.
                    unsafe { gemm(m, n, k, c.as_mut_ptr(), n, accumulate, lhs, rhs) };
                    let want = reference(&a, &b, (m, n, k), a_t, b_t);
                    for (idx, (&got, &w)) in c.iter().zip(&want).enumerate() {
                        let w = w + if accumulate { bias[idx] as f64 } else { 0.0 };
                        assert!(
                            (got as f64 - w).abs() < 1e-4 * (1.0 + k as f64).sqrt(),
                            "{m}×{n}×{k} (a_t {a_t}, b_t {b_t}, acc {accumulate}) at {idx}: {got} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
