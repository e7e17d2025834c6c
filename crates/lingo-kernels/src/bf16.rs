//! bf16 weights for inference: each linear weight held once, as bfloat16, and multiplied with f32
//! accumulation.
//!
//! A [`Bf16Matrix`] is a weight `W [out, in]` rounded to bf16 (to nearest even) and packed once as
//! `Wᵀ`'s micro-panels, the layout [`crate::mixed_precision`]'s blocked product reads — so a call
//! converts only the activations, and the weight costs half its f32 memory and half its bandwidth,
//! which is what bounds decoding. On a CPU with AVX-512 BF16 the product runs on `vdpbf16ps`; on
//! any other, a portable loop reads the same packed weight (correct and slower): the halved memory
//! holds everywhere, the speed where the instruction is.
//!
//! Activations are rounded to bf16 too (the instruction multiplies bf16 pairs); sums, the bias and
//! everything outside the linear layers stay f32. That is `model.to(torch.bfloat16)` for the matrix
//! products, without bf16 activations between them.

use crate::cpu::{Mat, SendPtr};
use crate::mixed_precision::{self, bf16_supported, from_bf16, to_bf16, MR, NR};
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// The bf16 product kernels, chosen per call at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AMX tiles (`tdpbf16ps`), for 32 rows or more.
    Amx,
    /// AVX-512 BF16 (`vdpbf16ps`) micro-tiles.
    Avx512,
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs for `m` rows: AMX for whole blocks of rows, AVX-512 BF16
    /// below (decoding: bound by streaming the weight, where the tiles gain nothing).
    pub fn best(m: usize) -> Kernel {
        if !bf16_supported() {
            Kernel::Portable
        } else if m >= crate::amx::ROWS && amx_runs() {
            Kernel::Amx
        } else {
            Kernel::Avx512
        }
    }

    /// The kernels this CPU runs, fastest first.
    pub fn available() -> Vec<Kernel> {
        let mut kernels = Vec::new();
        if bf16_supported() {
            if amx_runs() {
                kernels.push(Kernel::Amx);
            }
            kernels.push(Kernel::Avx512);
        }
        kernels.push(Kernel::Portable);
        kernels
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx",
            Kernel::Avx512 => "avx512bf16",
            Kernel::Portable => "portable",
        }
    }
}

/// Whether the AMX kernel is compiled in and can run here.
fn amx_runs() -> bool {
    cfg!(target_arch = "x86_64") && crate::amx::available()
}

/// A linear weight `[out, in]` in bf16, packed for `x · Wᵀ`.
pub struct Bf16Matrix {
    out: usize,
    inp: usize,
    /// k-pairs: `ceil(in / 2)` rounded up to a whole AMX tile step (zero pairs past the end).
    kp: usize,
    /// `ceil(out / NR)` panels of `kp` pairs × `NR` columns; each u32 holds the bf16 pair
    /// `(W[c][2p], W[c][2p+1])`, zero past the edges.
    packed: Vec<u32>,
}

impl std::fmt::Debug for Bf16Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bf16Matrix[{}×{}]", self.out, self.inp)
    }
}

impl Bf16Matrix {
    /// `w` row-major `[out, in]`, rounded to bf16.
    pub fn from_f32(w: &[f32], out: usize, inp: usize) -> Result<Self> {
        if w.len() != out * inp || out == 0 || inp == 0 {
            bail!("bf16 weight: {} values for a {out}×{inp} matrix", w.len());
        }
        let kp = inp.div_ceil(2).next_multiple_of(crate::amx::PAIRS);
        // `Wᵀ [in, out]` has element (l, c) at `w[c·in + l]`.
        let wt = Mat {
            ptr: w.as_ptr(),
            rs: 1,
            cs: inp as isize,
        };
        let packed = mixed_precision::pack_b(wt, inp, out, kp);
        Ok(Bf16Matrix {
            out,
            inp,
            kp,
            packed,
        })
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// The bf16 bits of `W [out, in]`, row-major (what a bf16 safetensors file stores).
    pub fn to_bits(&self) -> Vec<u16> {
        let mut bits = vec![0u16; self.out * self.inp];
        for c in 0..self.out {
            let panel = &self.packed[c / NR * self.kp * NR..];
            for l in 0..self.inp {
                let pair = panel[l / 2 * NR + c % NR];
                bits[c * self.inp + l] = (pair >> (16 * (l % 2))) as u16;
            }
        }
        bits
    }

    /// `W` back in f32 (exactly the bf16 values).
    pub fn to_f32(&self) -> Vec<f32> {
        self.to_bits().into_iter().map(from_bf16).collect()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * self.packed.len()
    }

    /// `x [m, in] · Wᵀ (+ bias)` → `[m, out]`.
    pub fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Result<Vec<f32>> {
        if x.len() != m * self.inp {
            bail!(
                "bf16 linear: {} input values for {m} rows of {}",
                x.len(),
                self.inp
            );
        }
        if let Some(b) = bias {
            if b.len() != self.out {
                bail!("bf16 linear: bias of {} for {} outputs", b.len(), self.out);
            }
        }
        let mut y = vec![0f32; m * self.out];
        if let Some(b) = bias {
            for row in y.chunks_mut(self.out) {
                row.copy_from_slice(b);
            }
        }
        if m > 0 {
            self.product(x, m, &mut y, bias.is_some(), Kernel::best(m));
        }
        Ok(y)
    }

    /// `y (+)= x · Wᵀ` with `kernel`, which must run on this CPU.
    fn product(&self, x: &[f32], m: usize, y: &mut [f32], accumulate: bool, kernel: Kernel) {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => {
                let a = self.rows_as_pairs(x, m);
                // SAFETY: AMX is available (`Kernel::best`); `a` holds whole 32-row blocks of
                // `kp` pairs, `packed` the weight's panels, `y` is `m × out`.
                unsafe {
                    crate::amx::gemm(
                        m,
                        self.out,
                        self.kp,
                        y.as_mut_ptr(),
                        self.out,
                        accumulate,
                        &a,
                        &self.packed,
                    )
                }
            }
            Kernel::Avx512 => {
                let a =
                    mixed_precision::pack_a(Mat::rows(x.as_ptr(), self.inp), m, self.inp, self.kp);
                // SAFETY: `y` is `m × out`, `a` and `packed` were packed for these sizes, and the
                // CPU has AVX-512 BF16 (`Kernel::best`).
                unsafe {
                    mixed_precision::gemm_packed(
                        m,
                        self.out,
                        self.kp,
                        y.as_mut_ptr(),
                        self.out,
                        accumulate,
                        &a,
                        &self.packed,
                    )
                }
            }
            _ => {
                if !accumulate {
                    y.fill(0.0);
                }
                self.matmul_portable(x, m, y)
            }
        }
    }

    /// `x [m, in]` as rows of `kp` bf16 pairs, in whole blocks of [`crate::amx::ROWS`] rows
    /// (zero past `m` and past `in`): AMX's left operand.
    fn rows_as_pairs(&self, x: &[f32], m: usize) -> Vec<u32> {
        let (inp, kp) = (self.inp, self.kp);
        let mut a = vec![0u32; m.next_multiple_of(crate::amx::ROWS) * kp];
        let full = inp / 2;
        let convert = |(i, row): (usize, &mut [u32])| {
            if i < m {
                let src = &x[i * inp..(i + 1) * inp];
                mixed_precision::convert_adjacent(&src[..2 * full], &mut row[..full]);
                if inp % 2 == 1 {
                    row[full] = to_bf16(src[inp - 1]) as u32;
                }
            }
        };
        if m * inp >= 1 << 16 {
            a.par_chunks_mut(kp).enumerate().for_each(convert);
        } else {
            a.chunks_mut(kp).enumerate().for_each(convert);
        }
        a
    }

    /// `y += x · Wᵀ` in plain Rust over the packed weight, rounding `x` to bf16 as the instruction
    /// does: column panels in parallel, each one's `NR` sums vectorised by the compiler.
    fn matmul_portable(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let (inp, out, kp) = (self.inp, self.out, self.kp);
        let pairs = inp.div_ceil(2);
        let xr: Vec<f32> = x.iter().map(|&v| from_bf16(to_bf16(v))).collect();
        let y = SendPtr(y.as_mut_ptr());
        (0..out.div_ceil(NR)).into_par_iter().for_each(|t| {
            let panel = &self.packed[t * kp * NR..(t + 1) * kp * NR];
            let cols = (out - t * NR).min(NR);
            for rows in (0..m).step_by(MR) {
                let rows = rows..(rows + MR).min(m);
                let mut acc = [[0f32; NR]; MR];
                for p in 0..pairs {
                    let pairs = &panel[p * NR..(p + 1) * NR];
                    for (r, i) in rows.clone().enumerate() {
                        let lo = xr[i * inp + 2 * p];
                        let hi = if 2 * p + 1 < inp {
                            xr[i * inp + 2 * p + 1]
                        } else {
                            0.0
                        };
                        for (a, &w) in acc[r].iter_mut().zip(pairs) {
                            *a += lo * from_bf16(w as u16) + hi * from_bf16((w >> 16) as u16);
                        }
                    }
                }
                for (r, i) in rows.enumerate() {
                    // SAFETY: each task writes only its own panel's columns of `y` (`m × out`).
                    unsafe {
                        let dst = y.get().add(i * out + t * NR);
                        for (c, &a) in acc[r][..cols].iter().enumerate() {
                            *dst.add(c) += a;
                        }
                    }
                }
            }
        });
    }
}

/// `linear` through a bf16 weight: `x [.., in] → [.., out]`. Inference only: a bf16 weight held for
/// inference has no gradient (train in f32 or bf16 mixed precision, then load with bf16 weights).
pub fn linear_bf16(x: &Tensor, w: &Arc<Bf16Matrix>, bias: Option<&Tensor>) -> Result<Tensor> {
    let bias = crate::cpu::bias_values(bias)?;
    x.contiguous()?.apply_op1(Bf16Linear { w: w.clone(), bias })
}

struct Bf16Linear {
    w: Arc<Bf16Matrix>,
    bias: Option<Vec<f32>>,
}

impl candle_core::CustomOp1 for Bf16Linear {
    fn name(&self) -> &'static str {
        "linear-bf16"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, inp) = self.w.dims();
        let (x, m) = crate::cpu::linear_input(storage, layout, inp, "bf16 linear")?;
        let y = self.w.matmul(x, m, self.bias.as_deref())?;
        Ok((CpuStorage::F32(y), crate::cpu::with_last_dim(layout, out)))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        bail!(
            "a bf16-weight linear layer is for inference and has no gradient: train in f32 \
             (or with --precision bf16), then load with --dtype bf16"
        )
    }
}

/// `x [m, in] · Tᵀ (+ bias)` for a row-major bf16 matrix `T [out, in]` read where it lies — an
/// embedding table held in bf16 and tied to the output projection, so the head costs no copy.
/// With AMX, from 32 rows and `in` a multiple of 32: `yᵀ = T · xᵀ` on tiles whose left operand is
/// `T`'s rows as they are (their bf16 pairs are the tile layout) and whose right is `x` packed;
/// otherwise one dot product per output and row (`vdpbf16ps` where the CPU has it).
pub fn matmul_rows(
    table: &[u16],
    out: usize,
    inp: usize,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    if table.len() != out * inp || x.len() != m * inp {
        bail!(
            "bf16 rows product: a {}-value table for {out}×{inp}, {} inputs for {m} rows",
            table.len(),
            x.len()
        );
    }
    if bias.is_some_and(|b| b.len() != out) {
        bail!("bf16 rows product: bias for {out} outputs expected");
    }
    let mut y = vec![0f32; m * out];
    let done = rows_amx(table, out, inp, x, m, &mut y);
    rows_dot(table, (done, out), inp, x, m, &mut y);
    if let Some(b) = bias {
        for row in y.chunks_mut(out) {
            for (v, &b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
    Ok(y)
}

/// The AMX part of [`matmul_rows`]: the first whole 32-row blocks of `T` into `y`; how many rows
/// it did (0 where it does not apply).
fn rows_amx(table: &[u16], out: usize, inp: usize, x: &[f32], m: usize, y: &mut [f32]) -> usize {
    let blocks = out / crate::amx::ROWS * crate::amx::ROWS;
    let aligned = (table.as_ptr() as usize).is_multiple_of(4);
    let applies = Kernel::best(m) == Kernel::Amx
        && inp.is_multiple_of(2 * crate::amx::PAIRS)
        && aligned
        && blocks > 0;
    if !applies {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let kp = inp / 2;
        // SAFETY: 4-byte aligned (checked), and `out · in` u16 values are `out · kp` pairs.
        let pairs = unsafe { std::slice::from_raw_parts(table.as_ptr().cast::<u32>(), out * kp) };
        // `x` as the right operand: element (l, i) = x[i][l], the layout of a packed weight.
        let xt = Mat {
            ptr: x.as_ptr(),
            rs: 1,
            cs: inp as isize,
        };
        let b = mixed_precision::pack_b(xt, inp, m, kp);
        let mut yt = vec![0f32; blocks * m];
        // SAFETY: AMX is available; `pairs` holds `blocks` whole 32-row blocks of `kp` pairs,
        // `b` the packed `x`, `yt` is `blocks × m`.
        unsafe { crate::amx::gemm(blocks, m, kp, yt.as_mut_ptr(), m, false, pairs, &b) };
        for (c, row) in yt.chunks(m).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                y[i * out + c] = v;
            }
        }
    }
    blocks
}

/// Outputs `from..to` of [`matmul_rows`] by dot products over `T`'s rows, in parallel over rows
/// of `T`; `x` rounded to bf16 as the instruction rounds it.
fn rows_dot(
    table: &[u16],
    (from, to): (usize, usize),
    inp: usize,
    x: &[f32],
    m: usize,
    y: &mut [f32],
) {
    if from >= to {
        return;
    }
    let out = table.len() / inp.max(1);
    let xb: Vec<u16> = x.iter().map(|&v| to_bf16(v)).collect();
    let fast = bf16_supported() && inp.is_multiple_of(2);
    let y = SendPtr(y.as_mut_ptr());
    (from..to).into_par_iter().with_min_len(64).for_each(|c| {
        let row = &table[c * inp..(c + 1) * inp];
        for i in 0..m {
            let xi = &xb[i * inp..(i + 1) * inp];
            let v = if fast {
                dot_avx512(row, xi)
            } else {
                dot_portable(row, xi)
            };
            // SAFETY: each task writes column `c` of `y` (`m × out`) only.
            unsafe { *y.get().add(i * out + c) = v };
        }
    });
}

fn dot_portable(a: &[u16], b: &[u16]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| from_bf16(a) * from_bf16(b))
        .sum()
}

/// `Σ a·b` of two bf16 vectors of even length, 32 values a `vdpbf16ps`.
fn dot_avx512(a: &[u16], b: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bf16")]
        unsafe fn dot(a: &[u16], b: &[u16]) -> f32 {
            use std::arch::x86_64::*;
            let mut acc = _mm512_setzero_ps();
            let full = a.len() / 32 * 32;
            for j in (0..full).step_by(32) {
                let va: __m512bh = std::mem::transmute(_mm512_loadu_si512(a[j..].as_ptr().cast()));
                let vb: __m512bh = std::mem::transmute(_mm512_loadu_si512(b[j..].as_ptr().cast()));
                acc = _mm512_dpbf16_ps(acc, va, vb);
            }
            _mm512_reduce_add_ps(acc) + dot_portable(&a[full..], &b[full..])
        }
        // SAFETY: callers check `bf16_supported`.
        unsafe { dot(a, b) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    dot_portable(a, b)
}

/// `linear` through a row-major bf16 weight `[out, in]` (a bf16 embedding table tied to the
/// head): `x [.., in] → [.., out]`, reading the table where it lies. Inference only.
pub fn linear_bf16_rows(x: &Tensor, table: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if table.dtype() != candle_core::DType::BF16 {
        bail!(
            "bf16 rows product: the table is {:?}, not bf16",
            table.dtype()
        );
    }
    let bias = crate::cpu::bias_values(bias)?;
    x.contiguous()?.apply_op1(Bf16RowsLinear {
        table: table.contiguous()?,
        bias,
    })
}

struct Bf16RowsLinear {
    table: Tensor,
    bias: Option<Vec<f32>>,
}

impl candle_core::CustomOp1 for Bf16RowsLinear {
    fn name(&self) -> &'static str {
        "linear-bf16-rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, inp) = self.table.dims2()?;
        let (x, m) = crate::cpu::linear_input(storage, layout, inp, "bf16 linear")?;
        let (table_storage, table_layout) = self.table.storage_and_layout();
        let candle_core::Storage::Cpu(CpuStorage::BF16(values)) = &*table_storage else {
            bail!("bf16 rows product: the table must be a bf16 CPU tensor");
        };
        let Some((start, end)) = table_layout.contiguous_offsets() else {
            bail!("bf16 rows product: the table must be contiguous");
        };
        // SAFETY: `half::bf16` is a transparent u16.
        let bits = unsafe {
            std::slice::from_raw_parts(values[start..end].as_ptr().cast::<u16>(), end - start)
        };
        let y = matmul_rows(bits, out, inp, x, m, self.bias.as_deref())?;
        Ok((CpuStorage::F32(y), crate::cpu::with_last_dim(layout, out)))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        bail!(
            "a bf16-weight linear layer is for inference and has no gradient: train in f32 \
             (or with --precision bf16), then load with --dtype bf16"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// The exact product of the bf16-rounded operands, plus the bias, in f64.
    fn reference(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        (m, out, inp): (usize, usize, usize),
    ) -> Vec<f64> {
        let r = |v: f32| from_bf16(to_bf16(v)) as f64;
        let mut y = vec![0f64; m * out];
        for i in 0..m {
            for c in 0..out {
                y[i * out + c] = b[c] as f64
                    + (0..inp)
                        .map(|l| r(x[i * inp + l]) * r(w[c * inp + l]))
                        .sum::<f64>();
            }
        }
        y
    }

    /// `got` within f32 rounding of the exact `want` (tolerance growing with `√in`).
    fn assert_near(name: &str, got: &[f32], want: &[f64], (m, out, inp): (usize, usize, usize)) {
        let tol = 1e-4 * (1.0 + inp as f64).sqrt();
        assert_eq!(got.len(), want.len(), "{name} {m}×{out}×{inp}");
        for (idx, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() < tol,
                "{name} {m}×{out}×{inp} at {idx}: {g} vs {w}"
            );
        }
    }

    const SHAPES: [(usize, usize, usize); 7] = [
        (1, 1, 1),
        (1, 70, 33),
        (3, 17, 5),
        (9, 50, 301),
        (32, 32, 32),
        (70, 100, 130),
        (130, 300, 64),
    ];

    /// The packed weight gives back exactly its bf16 values, and holds half of f32's bytes (up to
    /// panel padding).
    #[test]
    fn packing_round_trips_the_rounded_weight() -> Result<()> {
        for &(_, out, inp) in &SHAPES {
            let w = random(out * inp, 7);
            let q = Bf16Matrix::from_f32(&w, out, inp)?;
            let want: Vec<u16> = w.iter().map(|&v| to_bf16(v)).collect();
            assert_eq!(q.to_bits(), want, "{out}×{inp}");
            let kp = inp.div_ceil(2).next_multiple_of(crate::amx::PAIRS);
            assert_eq!(q.bytes(), 4 * out.next_multiple_of(NR) * kp);
        }
        Ok(())
    }

    /// Every kernel this CPU runs (AMX, AVX-512 BF16, portable) equals the product of the rounded
    /// operands, over ragged rows, columns, an odd `in` and several 32-row blocks.
    #[test]
    fn products_match_the_rounded_operands() -> Result<()> {
        for &(m, out, inp) in &SHAPES {
            let w = random(out * inp, 1);
            let x = random(m * inp, 2);
            let b = random(out, 3);
            let q = Bf16Matrix::from_f32(&w, out, inp)?;
            let want = reference(&x, &w, &b, (m, out, inp));
            assert_near(
                "dispatched",
                &q.matmul(&x, m, Some(&b))?,
                &want,
                (m, out, inp),
            );
            for kernel in Kernel::available() {
                let mut y = b.repeat(m);
                q.product(&x, m, &mut y, true, kernel);
                assert_near(kernel.name(), &y, &want, (m, out, inp));
            }
        }
        Ok(())
    }

    /// A row-major bf16 table multiplies as the same matrix packed does: AMX blocks, the
    /// dot-product remainder and the portable path, odd widths included.
    #[test]
    fn row_major_tables_multiply_as_packed_ones() -> Result<()> {
        for &(m, out, inp) in &[
            (1, 70, 64),
            (5, 33, 7),
            (40, 100, 64),
            (70, 65, 96),
            (33, 40, 30),
        ] {
            let w: Vec<f32> = random(out * inp, 4)
                .iter()
                .map(|&v| from_bf16(to_bf16(v)))
                .collect();
            let bits: Vec<u16> = w.iter().map(|&v| to_bf16(v)).collect();
            let x = random(m * inp, 5);
            let b = random(out, 6);
            let want = reference(&x, &w, &b, (m, out, inp));
            let got = matmul_rows(&bits, out, inp, &x, m, Some(&b))?;
            let mut portable = vec![0f32; m * out];
            let xb: Vec<u16> = x.iter().map(|&v| to_bf16(v)).collect();
            for c in 0..out {
                for i in 0..m {
                    portable[i * out + c] = b[c]
                        + dot_portable(&bits[c * inp..(c + 1) * inp], &xb[i * inp..(i + 1) * inp]);
                }
            }
            assert_near("dispatched", &got, &want, (m, out, inp));
            assert_near("portable", &portable, &want, (m, out, inp));
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Bf16Matrix::from_f32(&[1.0; 5], 2, 3).is_err());
        let q = Bf16Matrix::from_f32(&[1.0; 6], 2, 3).unwrap();
        assert!(q.matmul(&[1.0; 5], 2, None).is_err());
        assert!(q.matmul(&[1.0; 3], 1, Some(&[0.0; 3])).is_err());
    }
}
