//! Matrix products with a handful of rows — decoding one token, or a few beams — where the weight is
//! read once and the time is the memory traffic of reading it. `gemm`'s general path packs and
//! tiles for reuse that a product of one row does not have; here each thread streams its own
//! columns of the weight straight into 16-lane accumulators.
//!
//! The weight comes in either layout Lingo holds: columns contiguous (`[out, in]`, the stored
//! layout: a dot product per output) or rows contiguous (`[in, out]`, the inference copy: each
//! input scales a row of the weight into the outputs).

use crate::cpu::Mat;
use multiversion::multiversion;
use rayon::prelude::*;

/// Products with at most this many rows take this path.
pub(crate) const MAX_ROWS: usize = 8;
/// Below this many weight elements one thread does it all (a hand-off costs more).
const PARALLEL_WORK: usize = 1 << 16;
/// Most output columns per task, so that the rows' accumulators stay in L1.
const MAX_CHUNK: usize = 1024;

/// `dst[r, j] = (accumulate ? dst[r, j] : 0) + Σ_p lhs[r, p]·rhs[p, j]` for `m ≤ MAX_ROWS` rows;
/// `false` (nothing written) when `rhs` has neither unit stride.
///
/// # Safety
/// As [`crate::cpu::gemm`]: every pointer valid for the region its strides and sizes describe,
/// `dst` not overlapping the inputs, strides non-negative.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    parallel: bool,
) -> bool {
    let columns_contiguous = rhs.rs == 1 && rhs.cs >= 0;
    let rows_contiguous = rhs.cs == 1 && rhs.rs >= 0;
    if m == 0 || m > MAX_ROWS || n == 0 || k == 0 || !(columns_contiguous || rows_contiguous) {
        return false;
    }
    // The inputs' rows, gathered when they are strided.
    let xs: Vec<Vec<f32>> = (0..m)
        .map(|r| (0..k).map(|p| unsafe { lhs.get(r, p) }).collect())
        .collect();
    let xs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
    let (len, stride) = if columns_contiguous {
        ((n - 1) * rhs.cs as usize + k, rhs.cs as usize)
    } else {
        ((k - 1) * rhs.rs as usize + n, rhs.rs as usize)
    };
    let w = unsafe { std::slice::from_raw_parts(rhs.ptr, len) };
    let parallel = parallel && n * k >= PARALLEL_WORK;
    // Four tasks per thread (in multiples of 16 columns) balance the threads.
    let tasks = if parallel {
        4 * rayon::current_num_threads()
    } else {
        1
    };
    let chunk_len = n.div_ceil(tasks).next_multiple_of(16).clamp(16, MAX_CHUNK);
    let chunk = |start: usize| {
        let cols = start..(start + chunk_len).min(n);
        if columns_contiguous {
            dot_columns(&xs, w, stride, k, cols)
        } else {
            scale_rows(&xs, w, stride, k, cols)
        }
    };
    let starts: Vec<usize> = (0..n).step_by(chunk_len).collect();
    let parts: Vec<Vec<f32>> = if parallel && starts.len() > 1 {
        starts.par_iter().map(|&s| chunk(s)).collect()
    } else {
        starts.iter().map(|&s| chunk(s)).collect()
    };
    for (&start, part) in starts.iter().zip(&parts) {
        let width = part.len() / m;
        for (r, values) in part.chunks_exact(width).enumerate() {
            let out = unsafe { std::slice::from_raw_parts_mut(dst.add(r * dst_rs + start), width) };
            if accumulate {
                crate::math::add_assign(out, values);
            } else {
                out.copy_from_slice(values);
            }
        }
    }
    true
}

/// Columns `cols` of `x_r · W` with `W`'s column `j` at `w[j·stride ..][..k]`: row-major
/// `[rows, cols.len()]`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn dot_columns(
    xs: &[&[f32]],
    w: &[f32],
    stride: usize,
    k: usize,
    cols: std::ops::Range<usize>,
) -> Vec<f32> {
    let width = cols.len();
    let mut out = vec![0f32; xs.len() * width];
    for c in 0..width {
        let j = cols.start + c;
        let column = &w[j * stride..j * stride + k];
        for (r, x) in xs.iter().enumerate() {
            out[r * width + c] = crate::math::dot_inline(x, column);
        }
    }
    out
}

/// Columns `cols` of `x_r · W` with `W`'s row `p` at `w[p·stride ..]`: row-major
/// `[rows, cols.len()]`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn scale_rows(
    xs: &[&[f32]],
    w: &[f32],
    stride: usize,
    k: usize,
    cols: std::ops::Range<usize>,
) -> Vec<f32> {
    let width = cols.len();
    let mut out = vec![0f32; xs.len() * width];
    for p in 0..k {
        let row = &w[p * stride + cols.start..p * stride + cols.end];
        for (r, x) in xs.iter().enumerate() {
            let a = x[p];
            for (y, v) in out[r * width..(r + 1) * width].iter_mut().zip(row) {
                *y += a * v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row count, both weight layouts, strided inputs, accumulation and odd sizes against
    /// the plain triple loop.
    #[test]
    fn matches_the_definition() {
        let mut seed = 1u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 3000, 77),
            (3, 1025, 130),
            (8, 2500, 700),
            (2, 5, 40_000),
        ] {
            let a: Vec<f32> = (0..m * k * 2).map(|_| next()).collect();
            let w: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let start: Vec<f32> = (0..m * n).map(|_| next()).collect();
            // lhs: every other element of a row-major [m, 2k] buffer.
            let lhs = Mat {
                ptr: a.as_ptr(),
                rs: 2 * k as isize,
                cs: 2,
            };
            let expected = |accumulate: bool| -> Vec<f32> {
                let mut e = if accumulate {
                    start.clone()
                } else {
                    vec![0.0; m * n]
                };
                for r in 0..m {
                    for j in 0..n {
                        let s: f64 = (0..k)
                            .map(|p| a[r * 2 * k + 2 * p] as f64 * w[p * n + j] as f64)
                            .sum();
                        e[r * n + j] += s as f32;
                    }
                }
                e
            };
            // The same weight as [k, n] rows and as [n, k] columns.
            let mut wt = vec![0f32; k * n];
            for p in 0..k {
                for j in 0..n {
                    wt[j * k + p] = w[p * n + j];
                }
            }
            for (rhs, name) in [
                (Mat::rows(w.as_ptr(), n), "rows"),
                (Mat::rows_t(wt.as_ptr(), k), "columns"),
            ] {
                for accumulate in [false, true] {
                    for parallel in [false, true] {
                        let mut dst = start.clone();
                        // SAFETY: the buffers have the sizes the strides describe.
                        let done = unsafe {
                            product(m, n, k, dst.as_mut_ptr(), n, accumulate, lhs, rhs, parallel)
                        };
                        assert!(done);
                        for (got, want) in dst.iter().zip(expected(accumulate)) {
                            let tol = 1e-4 * (k as f32).sqrt().max(1.0);
                            assert!(
                                (got - want).abs() <= tol,
                                "{name} m={m} n={n} k={k}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        // Neither unit stride: not this path's.
        let w = [0f32; 4];
        let x = [0f32; 2];
        let mut d = [0f32; 2];
        let strided = Mat {
            ptr: w.as_ptr(),
            rs: 2,
            cs: 2,
        };
        // SAFETY: never read: the layout is refused first.
        assert!(!unsafe {
            product(
                1,
                2,
                2,
                d.as_mut_ptr(),
                2,
                false,
                Mat::rows(x.as_ptr(), 2),
                strided,
                false,
            )
        });
    }
}
