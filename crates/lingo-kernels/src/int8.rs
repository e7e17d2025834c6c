//! Dynamic int8 quantization of linear layers: `y = x Wᵀ + b` with int8 weights and activations
//! and int32 accumulation.
//!
//! The weight `[out, in]` is quantized once, symmetrically per output channel (`sw[n] =
//! max|W[n,:]| / 127`, values in −127…127), and packed for the kernels: panels of [`PANEL`] output
//! columns, each group of four consecutive inputs of a column one 32-bit lane, so one 64-byte load
//! is a 16-column × 4-input block. Each call quantizes the activations per row the same way
//! (`sa[m] = max|x[m,:]| / 127`), multiplies in integers, and writes
//! `y[m,n] = acc[m,n] · (sa[m] · sw[n]) + b[n]` (one fused multiply-add).
//!
//! Three kernels compute the same integers, chosen at run time ([`Int8Kernel::detect`]):
//! - AVX-512 VNNI: `vpdpbusd` adds four u8 × s8 products into each i32 lane. Its left operand is
//!   unsigned, so activations are stored `q + 128` and `128 · Σₖ W[n,k]` (kept per column) is
//!   subtracted once at the end.
//! - AVX2: `vpmaddubsw` (u8 × s8, pairs summed into a *saturating* i16) then `vpmaddwd` by ones.
//!   A u8 activation up to 255 could overflow the pair (2 · 255 · 127 > 32767), so the sign trick
//!   is used instead: `|a| × (b · sign a)` with both in −127…127, whose pairs stay within
//!   2 · 127 · 127 = 32258.
//! - Portable: the same sums in plain Rust.
//!
//! Integer sums are exact, and the epilogue is the same fused multiply-add everywhere, so the three
//! kernels give bit-identical outputs (tested). `LINGO_INT8_KERNEL=vnni|avx2|portable` forces one.

use crate::cpu::SendPtr;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// Output columns per packed panel (one 512-bit register of i32 lanes).
pub const PANEL: usize = 16;
/// Inputs per packed lane.
const GROUP: usize = 4;

/// The integer kernel a product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AVX-512 VNNI (`vpdpbusd`): Intel from Cascade Lake, AMD from Zen 4.
    Vnni,
    /// AVX2 (`vpmaddubsw` with the sign trick).
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

impl Int8Kernel {
    /// The fastest kernel this CPU runs, or the one `LINGO_INT8_KERNEL` names (if the CPU runs it).
    pub fn detect() -> Int8Kernel {
        static KERNEL: OnceLock<Int8Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            let available = Self::available();
            let forced = std::env::var("LINGO_INT8_KERNEL").ok().and_then(|name| {
                available
                    .iter()
                    .copied()
                    .find(|k| k.name().eq_ignore_ascii_case(name.trim()))
            });
            forced.unwrap_or(available[0])
        })
    }

    /// Every kernel this CPU runs, fastest first.
    pub fn available() -> &'static [Int8Kernel] {
        static AVAILABLE: OnceLock<Vec<Int8Kernel>> = OnceLock::new();
        AVAILABLE.get_or_init(Self::detect_available)
    }

    fn detect_available() -> Vec<Int8Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                kernels.push(Int8Kernel::Vnni);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                kernels.push(Int8Kernel::Avx2);
            }
        }
        kernels.push(Int8Kernel::Portable);
        kernels
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Vnni => "vnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Portable => "portable",
        }
    }
}

/// A weight matrix `[out, in]` quantized to int8 per output channel, packed for the kernels.
#[derive(Clone)]
pub struct Int8Matrix {
    out: usize,
    inp: usize,
    /// `inp` rounded up to a multiple of [`GROUP`]; the padding is zero.
    k4: usize,
    /// `ceil(out / PANEL)` panels of `k4 · PANEL` bytes; padding columns are zero.
    packed: Vec<i8>,
    /// Per output channel (padded with zeros to whole panels).
    scales: Vec<f32>,
    /// `128 · Σₖ q[n,k]`, what the VNNI kernel's unsigned activations add to column `n`.
    offsets: Vec<i32>,
}

impl std::fmt::Debug for Int8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Int8Matrix[{}, {}]", self.out, self.inp)
    }
}

/// Symmetric per-row quantization: `scale = max|x| / 127` (0 for an all-zero row, NaN for a row
/// with a non-finite value) and `q = round(x / scale)` in −127…127, written as bytes plus
/// `offset` (0: int8; 128: the unsigned `q + 128` of the VNNI kernel).
fn quantize_row(x: &[f32], q: &mut [u8], offset: u8) -> f32 {
    let max = crate::math::max_abs(x);
    if max == 0.0 || max.is_nan() {
        q.fill(offset);
        return if max.is_nan() { f32::NAN } else { 0.0 };
    }
    crate::math::round_to_bytes(x, 127.0 / max, offset as f32, q);
    max / 127.0
}

impl Int8Matrix {
    /// Quantizes `w` (`[out, in]`, row-major) per output channel.
    pub fn quantize(w: &[f32], out: usize, inp: usize) -> Result<Self> {
        if w.len() != out * inp {
            bail!(
                "int8: a [{out}, {inp}] weight needs {} values, got {}",
                out * inp,
                w.len()
            );
        }
        let mut q = vec![0u8; out * inp];
        let mut scales = vec![0f32; out];
        q.par_chunks_mut(inp.max(1))
            .zip(scales.par_iter_mut())
            .zip(w.par_chunks(inp.max(1)))
            .for_each(|((q, s), w)| *s = quantize_row(w, q, 0));
        let q: Vec<i8> = q.into_iter().map(|v| v as i8).collect();
        if let Some(n) = scales.iter().position(|s| !s.is_finite()) {
            bail!("int8: row {n} of the weight is not finite");
        }
        Self::from_quantized(&q, &scales, out, inp)
    }

    /// Packs stored int8 values (`[out, in]`, row-major) and their per-channel scales.
    pub fn from_quantized(q: &[i8], scales: &[f32], out: usize, inp: usize) -> Result<Self> {
        if q.len() != out * inp || scales.len() != out {
            bail!(
                "int8: a [{out}, {inp}] weight needs {} values and {out} scales, got {} and {}",
                out * inp,
                q.len(),
                scales.len()
            );
        }
        if q.contains(&i8::MIN) {
            bail!("int8: weights are quantized to −127…127; −128 found");
        }
        let k4 = inp.div_ceil(GROUP) * GROUP;
        let panels = out.div_ceil(PANEL);
        let mut packed = vec![0i8; panels * k4 * PANEL];
        packed
            .par_chunks_mut(k4 * PANEL)
            .enumerate()
            .for_each(|(p, panel)| {
                for c in 0..PANEL.min(out - p * PANEL) {
                    let row = &q[(p * PANEL + c) * inp..][..inp];
                    for (k, &v) in row.iter().enumerate() {
                        panel[(k / GROUP) * GROUP * PANEL + c * GROUP + k % GROUP] = v;
                    }
                }
            });
        let mut padded_scales = vec![0f32; panels * PANEL];
        padded_scales[..out].copy_from_slice(scales);
        let mut offsets = vec![0i32; panels * PANEL];
        for (n, o) in offsets.iter_mut().take(out).enumerate() {
            *o = 128 * q[n * inp..][..inp].iter().map(|&v| v as i32).sum::<i32>();
        }
        Ok(Int8Matrix {
            out,
            inp,
            k4,
            packed,
            scales: padded_scales,
            offsets,
        })
    }

    /// `[out, in]`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// The int8 values row-major `[out, in]` and the per-channel scales: what a folder stores.
    pub fn to_quantized(&self) -> (Vec<i8>, Vec<f32>) {
        let mut q = vec![0i8; self.out * self.inp];
        for (n, row) in q.chunks_mut(self.inp.max(1)).enumerate() {
            for (k, v) in row.iter_mut().enumerate() {
                *v = self.packed[self.index(n, k)];
            }
        }
        (q, self.scales[..self.out].to_vec())
    }

    fn index(&self, n: usize, k: usize) -> usize {
        (n / PANEL) * self.k4 * PANEL
            + (k / GROUP) * GROUP * PANEL
            + (n % PANEL) * GROUP
            + k % GROUP
    }

    /// Row `n` dequantized (`q · scale`): an embedding lookup through a table stored as int8.
    pub fn row(&self, n: usize) -> Vec<f32> {
        let s = self.scales[n];
        (0..self.inp)
            .map(|k| self.packed[self.index(n, k)] as f32 * s)
            .collect()
    }

    /// The whole matrix dequantized, `[out, in]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        (0..self.out).flat_map(|n| self.row(n)).collect()
    }

    /// Bytes held: the int8 values (with panel padding), the scales and the column offsets.
    pub fn bytes(&self) -> usize {
        self.packed.len() + 4 * self.scales.len() + 4 * self.offsets.len()
    }

    /// `y = x Wᵀ + b` for `x` of `m` rows of `in` values, on the detected kernel.
    pub fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Result<Vec<f32>> {
        self.matmul_with(Int8Kernel::detect(), x, m, bias)
    }

    /// [`Self::matmul`] on a given kernel (which must be one [`Int8Kernel::available`] lists).
    pub fn matmul_with(
        &self,
        kernel: Int8Kernel,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        if x.len() != m * self.inp {
            bail!(
                "int8 linear: {m} rows of {} inputs need {} values, got {}",
                self.inp,
                m * self.inp,
                x.len()
            );
        }
        if let Some(b) = bias {
            if b.len() != self.out {
                bail!("int8 linear: bias of {} for {} outputs", b.len(), self.out);
            }
        }
        if !Int8Kernel::available().contains(&kernel) {
            bail!(
                "int8 linear: this CPU does not run the {} kernel",
                kernel.name()
            );
        }
        let acts = Activations::quantize(x, m, self.inp, self.k4, kernel)?;
        self.product_of(&acts, bias)
    }

    /// `y = x Wᵀ + b` for activations already quantized (for this matrix's input width).
    fn product_of(&self, acts: &Activations, bias: Option<&[f32]>) -> Result<Vec<f32>> {
        if acts.k4 != self.k4 {
            bail!("int8 linear: inputs quantized for another width");
        }
        let (kernel, m) = (acts.kernel, acts.rows);
        let len = m * self.out;
        let mut y: Vec<f32> = Vec::with_capacity(len);
        self.product(
            kernel,
            acts,
            bias,
            y.spare_capacity_mut().as_mut_ptr().cast(),
        );
        // SAFETY: the tiles of `product` cover every row and output column once.
        unsafe { y.set_len(len) };
        Ok(y)
    }

    /// Runs the kernel over tiles of `y` in parallel: blocks of [`ROW_BLOCK`] rows × a few tiles of
    /// columns, each tile's weight panels reused across the block's rows.
    fn product(&self, kernel: Int8Kernel, acts: &Activations, bias: Option<&[f32]>, y: *mut f32) {
        #[cfg(target_arch = "x86_64")]
        if uses_amx(kernel, acts.rows, self.k4) {
            return self.product_amx(acts, bias, y);
        }
        let m = acts.rows;
        let (mr, nrr) = kernel.tile();
        let panels = self.out.div_ceil(PANEL);
        let col_tiles = panels.div_ceil(nrr);
        let row_blocks = m.div_ceil(ROW_BLOCK);
        let threads = rayon::current_num_threads().max(1);
        // Enough tasks to balance the threads, each at least a few tiles.
        let tiles_per_task = (col_tiles * row_blocks)
            .div_ceil(threads * 4)
            .clamp(1, col_tiles.max(1));
        let col_chunks = col_tiles.div_ceil(tiles_per_task);
        let out = SendPtr(y);
        let epilogue = Epilogue {
            scales: &self.scales,
            offsets: &self.offsets,
            bias,
        };
        (0..row_blocks * col_chunks)
            .into_par_iter()
            .for_each(|task| {
                let (rb, cc) = (task / col_chunks, task % col_chunks);
                let rows = rb * ROW_BLOCK..(m.min((rb + 1) * ROW_BLOCK));
                let tiles = cc * tiles_per_task..col_tiles.min((cc + 1) * tiles_per_task);
                for tile in tiles {
                    let first_panel = tile * nrr;
                    let tile_panels = nrr.min(panels - first_panel);
                    let col0 = first_panel * PANEL;
                    let cols = (tile_panels * PANEL).min(self.out - col0);
                    let mut r = rows.start;
                    while r < rows.end {
                        let tile_rows = mr.min(rows.end - r);
                        let t = Tile {
                            a: acts.row(r),
                            lda: self.k4,
                            b: self.packed[first_panel * self.k4 * PANEL..].as_ptr(),
                            panel_stride: self.k4 * PANEL,
                            groups: self.k4 / GROUP,
                            row_scales: acts.scales[r..].as_ptr(),
                            // SAFETY: tiles of different tasks write disjoint regions of `y`.
                            out: unsafe { out.get().add(r * self.out + col0) },
                            ldo: self.out,
                            col0,
                            cols,
                        };
                        // SAFETY: the tile lies inside the packed weight, the activations and `y`.
                        unsafe { kernel.run(tile_rows, tile_panels, &t, &epilogue) };
                        r += tile_rows;
                    }
                }
            });
    }
}

impl Int8Matrix {
    /// [`Self::product`] on AMX tiles (`tdpbusd`), for the VNNI kernel's activations: blocks of 32
    /// rows × 2 panels, the integer sums exactly the VNNI kernel's, then its epilogue.
    #[cfg(target_arch = "x86_64")]
    fn product_amx(&self, acts: &Activations, bias: Option<&[f32]>, y: *mut f32) {
        use crate::amx::{self, ROWS};
        let (m, k4) = (acts.rows, self.k4);
        let rows_padded = m.next_multiple_of(ROWS);
        // `Activations::quantize` padded the VNNI activations to whole 32-row blocks.
        let data = &acts.data;
        debug_assert!(data.len() >= rows_padded * k4);
        let panels = self.out.div_ceil(PANEL);
        let blocks: Vec<(usize, usize)> = (0..rows_padded / ROWS)
            .flat_map(|i| (0..panels.div_ceil(2)).map(move |j| (i, j)))
            .collect();
        let per_task = blocks
            .len()
            .div_ceil(4 * rayon::current_num_threads())
            .max(1);
        let out = SendPtr(y);
        let epilogue = Epilogue {
            scales: &self.scales,
            offsets: &self.offsets,
            bias,
        };
        blocks.par_chunks(per_task).for_each(|task| {
            let mut c = [0i32; ROWS * 2 * PANEL];
            // SAFETY: AMX is available (checked by the caller); each block reads 32 whole rows
            // of `data` and its panels of `packed`, and writes its own rows × columns of `y`.
            unsafe {
                amx::configure();
                for &(i, j) in task {
                    let np = (panels - 2 * j).min(2);
                    amx::int8_block(
                        k4 / GROUP,
                        data[i * ROWS * k4..].as_ptr(),
                        k4,
                        self.packed[2 * j * k4 * PANEL..].as_ptr(),
                        k4 * PANEL,
                        np,
                        &mut c,
                    );
                    let col0 = 2 * j * PANEL;
                    let cols = (np * PANEL).min(self.out - col0);
                    for r in 0..(m - i * ROWS).min(ROWS) {
                        let row = i * ROWS + r;
                        epilogue_avx512(
                            &c[r * 2 * PANEL..][..cols],
                            acts.scales[row],
                            col0,
                            &epilogue,
                            out.get().add(row * self.out + col0),
                        );
                    }
                }
                amx::release();
            }
        });
    }
}

/// The VNNI kernel's epilogue for one row of i32 sums (columns `col0..col0 + acc.len()`), 16
/// columns a vector: `(acc − offset) · (row scale · column scale) + bias`, as `tile_vnni` writes it.
///
/// # Safety
/// `dst` valid for `acc.len()` values; the CPU has AVX-512 (AMX implies it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn epilogue_avx512(acc: &[i32], row_scale: f32, col0: usize, e: &Epilogue, dst: *mut f32) {
    use std::arch::x86_64::*;
    let rs = _mm512_set1_ps(row_scale);
    for c in (0..acc.len()).step_by(PANEL) {
        let cols = (acc.len() - c).min(PANEL);
        let mask: __mmask16 = if cols == PANEL {
            !0
        } else {
            (1u16 << cols) - 1
        };
        let first = col0 + c;
        // Offsets and scales are padded to whole panels; the bias is not.
        let offset = _mm512_loadu_si512(e.offsets.as_ptr().add(first).cast());
        let scale = _mm512_loadu_ps(e.scales.as_ptr().add(first));
        let bias = match e.bias {
            Some(b) => _mm512_maskz_loadu_ps(mask, b.as_ptr().add(first)),
            None => _mm512_setzero_ps(),
        };
        let a = _mm512_maskz_loadu_epi32(mask, acc.as_ptr().add(c));
        let sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(a, offset));
        let y = _mm512_fmadd_ps(sum, _mm512_mul_ps(rs, scale), bias);
        _mm512_mask_storeu_ps(dst.add(c), mask, y);
    }
}

/// Rows of `y` per parallel task.
const ROW_BLOCK: usize = 72;

/// Rows of one AMX block ([`crate::amx::ROWS`]), named where the activations are laid out.
const AMX_ROWS: usize = crate::amx::ROWS;

/// Whether a product of `rows` VNNI-format rows of `k4` inputs runs on AMX tiles: 32 rows or
/// more, whole 64-input tile steps, and a CPU (and kernel) that grants the tiles.
fn uses_amx(kernel: Int8Kernel, rows: usize, k4: usize) -> bool {
    cfg!(target_arch = "x86_64")
        && kernel == Int8Kernel::Vnni
        && rows >= AMX_ROWS
        && k4.is_multiple_of(4 * GROUP * GROUP)
        && crate::amx::available()
}

/// Activations quantized per row, padded to `k4` with zeros: i8, or u8 (`q + 128`) for VNNI.
struct Activations {
    kernel: Int8Kernel,
    rows: usize,
    k4: usize,
    data: Vec<u8>,
    scales: Vec<f32>,
}

impl Activations {
    fn quantize(x: &[f32], rows: usize, inp: usize, k4: usize, kernel: Int8Kernel) -> Result<Self> {
        let offset = if kernel == Int8Kernel::Vnni { 128 } else { 0 };
        // AMX tiles read whole blocks of 32 rows: padding rows stand for zeros (`q + 128 = 128`),
        // so the product never copies the activations.
        let padded_rows = match uses_amx(kernel, rows, k4) {
            true => rows.next_multiple_of(AMX_ROWS),
            false => rows,
        };
        let mut data = vec![offset; padded_rows * k4];
        let mut scales = vec![0f32; rows];
        let quantize = |(q, s): (&mut [u8], &mut f32), x: &[f32]| {
            *s = quantize_row(x, &mut q[..inp], offset);
            // The padding stands for zeros (it meets zero weights either way).
            q[inp..].fill(offset);
        };
        if rows * inp >= 1 << 16 {
            let per_task = rows.div_ceil(4 * rayon::current_num_threads()).max(1);
            data.par_chunks_mut(k4 * per_task)
                .zip(scales.par_chunks_mut(per_task))
                .zip(x.par_chunks(inp * per_task))
                .for_each(|((q, s), x)| {
                    (q.chunks_mut(k4).zip(s.iter_mut()).zip(x.chunks(inp)))
                        .for_each(|(qs, x)| quantize(qs, x))
                });
        } else {
            data.chunks_mut(k4)
                .zip(scales.iter_mut())
                .zip(x.chunks(inp.max(1)))
                .for_each(|(qs, x)| quantize(qs, x));
        }
        if let Some(r) = scales.iter().position(|s| !s.is_finite()) {
            bail!("int8 linear: input row {r} is not finite");
        }
        Ok(Activations {
            kernel,
            rows,
            k4,
            data,
            scales,
        })
    }

    fn row(&self, r: usize) -> *const u8 {
        self.data[r * self.k4..].as_ptr()
    }
}

/// One tile of the product: up to `MR` rows of activations against up to `NRR` weight panels.
struct Tile {
    a: *const u8,
    lda: usize,
    b: *const i8,
    panel_stride: usize,
    groups: usize,
    row_scales: *const f32,
    out: *mut f32,
    ldo: usize,
    /// The tile's first output column, and how many of its columns are real.
    col0: usize,
    cols: usize,
}

struct Epilogue<'a> {
    scales: &'a [f32],
    offsets: &'a [i32],
    bias: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// `acc · (sa · sw) + b` for the column `n`, as every kernel computes it.
    #[inline(always)]
    fn scalar(&self, acc: i32, row_scale: f32, n: usize) -> f32 {
        let b = self.bias.map_or(0.0, |b| b[n]);
        (acc as f32).mul_add(row_scale * self.scales[n], b)
    }
}

/// Calls `$f::<MR, NRR>` for the runtime tile shape (`$rows` ≤ `$mr`, `$panels` ≤ `$nrr`).
macro_rules! dispatch_tile {
    ($f:ident, $rows:expr, $panels:expr, $($arg:expr),*) => {
        match ($rows, $panels) {
            (1, 1) => $f::<1, 1>($($arg),*), (1, 2) => $f::<1, 2>($($arg),*), (1, 3) => $f::<1, 3>($($arg),*), (1, 4) => $f::<1, 4>($($arg),*),
            (2, 1) => $f::<2, 1>($($arg),*), (2, 2) => $f::<2, 2>($($arg),*), (2, 3) => $f::<2, 3>($($arg),*), (2, 4) => $f::<2, 4>($($arg),*),
            (3, 1) => $f::<3, 1>($($arg),*), (3, 2) => $f::<3, 2>($($arg),*), (3, 3) => $f::<3, 3>($($arg),*), (3, 4) => $f::<3, 4>($($arg),*),
            (4, 1) => $f::<4, 1>($($arg),*), (4, 2) => $f::<4, 2>($($arg),*), (4, 3) => $f::<4, 3>($($arg),*), (4, 4) => $f::<4, 4>($($arg),*),
            (5, 1) => $f::<5, 1>($($arg),*), (5, 2) => $f::<5, 2>($($arg),*), (5, 3) => $f::<5, 3>($($arg),*), (5, 4) => $f::<5, 4>($($arg),*),
            (6, 1) => $f::<6, 1>($($arg),*), (6, 2) => $f::<6, 2>($($arg),*), (6, 3) => $f::<6, 3>($($arg),*), (6, 4) => $f::<6, 4>($($arg),*),
            (7, 1) => $f::<7, 1>($($arg),*), (7, 2) => $f::<7, 2>($($arg),*), (7, 3) => $f::<7, 3>($($arg),*), (7, 4) => $f::<7, 4>($($arg),*),
            (8, 1) => $f::<8, 1>($($arg),*), (8, 2) => $f::<8, 2>($($arg),*), (8, 3) => $f::<8, 3>($($arg),*), (8, 4) => $f::<8, 4>($($arg),*),
            (r, p) => unreachable!("int8 tile of {r} rows × {p} panels"),
        }
    };
}

impl Int8Kernel {
    /// The tile of each kernel: rows × panels (accumulators in registers).
    fn tile(self) -> (usize, usize) {
        match self {
            // 6 × 4 zmm accumulators of the 32 registers (faster here than 8 × 3).
            Int8Kernel::Vnni => (6, 4),
            // 4 × 2 ymm accumulators (one panel is two ymm) of the 16 registers.
            Int8Kernel::Avx2 => (4, 1),
            Int8Kernel::Portable => (4, 1),
        }
    }

    /// # Safety
    /// `t` must describe memory inside the operands, and `self` must run on this CPU.
    unsafe fn run(self, rows: usize, panels: usize, t: &Tile, e: &Epilogue) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Vnni => dispatch_tile!(tile_vnni, rows, panels, t, e),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 => dispatch_tile!(tile_avx2, rows, panels, t, e),
            _ => dispatch_tile!(tile_portable, rows, panels, t, e),
        }
    }
}

/// The reference the SIMD kernels must equal: i8 activations, plain integer sums.
unsafe fn tile_portable<const MR: usize, const NRR: usize>(t: &Tile, e: &Epilogue) {
    let a = t.a as *const i8;
    for i in 0..MR {
        let row = std::slice::from_raw_parts(a.add(i * t.lda), t.groups * GROUP);
        let row_scale = *t.row_scales.add(i);
        for c in 0..t.cols {
            let (p, col) = (c / PANEL, c % PANEL);
            let panel =
                std::slice::from_raw_parts(t.b.add(p * t.panel_stride), t.groups * GROUP * PANEL);
            let mut acc = 0i32;
            for g in 0..t.groups {
                let w = &panel[g * GROUP * PANEL + col * GROUP..][..GROUP];
                let x = &row[g * GROUP..][..GROUP];
                for j in 0..GROUP {
                    acc += x[j] as i32 * w[j] as i32;
                }
            }
            *t.out.add(i * t.ldo + c) = e.scalar(acc, row_scale, t.col0 + c);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni<const MR: usize, const NRR: usize>(t: &Tile, e: &Epilogue) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_si512(); NRR]; MR];
    for g in 0..t.groups {
        let mut b = [_mm512_setzero_si512(); NRR];
        for (j, b) in b.iter_mut().enumerate() {
            *b = _mm512_loadu_si512(t.b.add(j * t.panel_stride + g * GROUP * PANEL).cast());
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_epi32(
                t.a.add(i * t.lda + g * GROUP)
                    .cast::<i32>()
                    .read_unaligned(),
            );
            for (acc, b) in acc.iter_mut().zip(&b) {
                *acc = _mm512_dpbusd_epi32(*acc, a, *b);
            }
        }
    }
    for j in 0..NRR {
        let first = t.col0 + j * PANEL;
        let cols = t.cols.saturating_sub(j * PANEL).min(PANEL);
        if cols == 0 {
            break;
        }
        let mask: __mmask16 = if cols == PANEL {
            !0
        } else {
            (1u16 << cols) - 1
        };
        let offset = _mm512_loadu_si512(e.offsets.as_ptr().add(first).cast());
        let scale = _mm512_loadu_ps(e.scales.as_ptr().add(first));
        let bias = match e.bias {
            Some(b) => _mm512_maskz_loadu_ps(mask, b.as_ptr().add(first)),
            None => _mm512_setzero_ps(),
        };
        for (i, acc) in acc.iter().enumerate() {
            let sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[j], offset));
            let s = _mm512_mul_ps(_mm512_set1_ps(*t.row_scales.add(i)), scale);
            let y = _mm512_fmadd_ps(sum, s, bias);
            _mm512_mask_storeu_ps(t.out.add(i * t.ldo + j * PANEL), mask, y);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const MR: usize, const NRR: usize>(t: &Tile, e: &Epilogue) {
    use std::arch::x86_64::*;
    // Each panel is two ymm halves of 8 columns.
    let mut acc = [[[_mm256_setzero_si256(); 2]; NRR]; MR];
    let ones = _mm256_set1_epi16(1);
    for g in 0..t.groups {
        let mut b = [[_mm256_setzero_si256(); 2]; NRR];
        for (j, b) in b.iter_mut().enumerate() {
            let p = t.b.add(j * t.panel_stride + g * GROUP * PANEL);
            b[0] = _mm256_loadu_si256(p.cast());
            b[1] = _mm256_loadu_si256(p.add(32).cast());
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            let a = _mm256_set1_epi32(
                t.a.add(i * t.lda + g * GROUP)
                    .cast::<i32>()
                    .read_unaligned(),
            );
            let magnitude = _mm256_abs_epi8(a);
            for (acc, b) in acc.iter_mut().zip(&b) {
                for h in 0..2 {
                    let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(b[h], a));
                    acc[h] = _mm256_add_epi32(acc[h], _mm256_madd_epi16(pairs, ones));
                }
            }
        }
    }
    for j in 0..NRR {
        for h in 0..2 {
            let start = j * PANEL + h * 8;
            let cols = t.cols.saturating_sub(start).min(8);
            if cols == 0 {
                break;
            }
            let first = t.col0 + start;
            let scale = _mm256_loadu_ps(e.scales.as_ptr().add(first));
            let bias = match e.bias {
                Some(b) if cols == 8 => _mm256_loadu_ps(b.as_ptr().add(first)),
                Some(b) => {
                    let mut part = [0f32; 8];
                    part[..cols].copy_from_slice(&b[first..first + cols]);
                    _mm256_loadu_ps(part.as_ptr())
                }
                None => _mm256_setzero_ps(),
            };
            for (i, acc) in acc.iter().enumerate() {
                let sum = _mm256_cvtepi32_ps(acc[j][h]);
                let s = _mm256_mul_ps(_mm256_set1_ps(*t.row_scales.add(i)), scale);
                let y = _mm256_fmadd_ps(sum, s, bias);
                let dst = t.out.add(i * t.ldo + start);
                if cols == 8 {
                    _mm256_storeu_ps(dst, y);
                } else {
                    let mut part = [0f32; 8];
                    _mm256_storeu_ps(part.as_mut_ptr(), y);
                    std::ptr::copy_nonoverlapping(part.as_ptr(), dst, cols);
                }
            }
        }
    }
}

/// `linear` through an int8 weight: `x [.., in] → [.., out]`. Inference only: its backward is an
/// error, since an int8 weight has no gradient and a model quantized for inference is not trained.
pub fn linear_int8(x: &Tensor, w: &Arc<Int8Matrix>, bias: Option<&Tensor>) -> Result<Tensor> {
    let x = x.contiguous()?;
    x.apply_op1(Int8Linear::new(w, bias, None)?)
}

/// Several int8 layers applied to one input (a self-attention's query, key and value), which is
/// quantized once for all of them. The weights must share the input width.
pub fn linear_int8_many(
    x: &Tensor,
    layers: &[(&Arc<Int8Matrix>, Option<&Tensor>)],
) -> Result<Vec<Tensor>> {
    let x = x.contiguous()?;
    let Some(&(first, _)) = layers.first() else {
        return Ok(Vec::new());
    };
    let (_, inp) = first.dims();
    if layers.iter().any(|(w, _)| w.dims().1 != inp) || x.dims().last() != Some(&inp) {
        bail!("int8 linear: layers sharing an input must take its width");
    }
    let acts = crate::cpu::with_data(&x, "linear-int8", |data| {
        let rows = data.len() / inp.max(1);
        Activations::quantize(data, rows, inp, first.k4, Int8Kernel::detect())
    })??;
    let acts = Arc::new(acts);
    layers
        .iter()
        .map(|&(w, b)| x.apply_op1(Int8Linear::new(w, b, Some(acts.clone()))?))
        .collect()
}

struct Int8Linear {
    w: Arc<Int8Matrix>,
    bias: Option<Vec<f32>>,
    /// The input already quantized (shared by layers reading one input).
    acts: Option<Arc<Activations>>,
}

impl Int8Linear {
    fn new(
        w: &Arc<Int8Matrix>,
        bias: Option<&Tensor>,
        acts: Option<Arc<Activations>>,
    ) -> Result<Self> {
        Ok(Int8Linear {
            w: w.clone(),
            bias: crate::cpu::bias_values(bias)?,
            acts,
        })
    }
}

impl candle_core::CustomOp1 for Int8Linear {
    fn name(&self) -> &'static str {
        "linear-int8"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, inp) = self.w.dims();
        let (x, m) = crate::cpu::linear_input(storage, layout, inp, "int8 linear")?;
        let y = match &self.acts {
            Some(acts) if acts.rows == m => self.w.product_of(acts, self.bias.as_deref())?,
            _ => self.w.matmul(x, m, self.bias.as_deref())?,
        };
        Ok((CpuStorage::F32(y), crate::cpu::with_last_dim(layout, out)))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        bail!(
            "an int8 linear layer is for inference and has no gradient: train the f32 model, \
             then quantize it"
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

    /// Every kernel on this CPU gives bit-identical outputs (AMX's tiles included, where the CPU
    /// has them), over shapes with ragged rows, columns and inputs (tile and panel remainders, k
    /// not a multiple of 4).
    #[test]
    fn kernels_agree_exactly() -> Result<()> {
        for &(m, out, inp) in &[
            (1, 1, 1),
            (3, 17, 5),
            (9, 50, 33),
            (70, 100, 130),
            (128, 48, 64),
            // AMX blocks (inputs a multiple of 64, 32 rows or more): ragged rows, one panel,
            // an odd panel count.
            (70, 50, 192),
            (33, 17, 64),
            (40, 10, 128),
            (64, 80, 256),
        ] {
            let w = Int8Matrix::quantize(&random(out * inp, 1), out, inp)?;
            let x = random(m * inp, 2);
            let b = random(out, 3);
            let reference = w.matmul_with(Int8Kernel::Portable, &x, m, Some(&b))?;
            for &kernel in Int8Kernel::available() {
                let y = w.matmul_with(kernel, &x, m, Some(&b))?;
                assert_eq!(y, reference, "{} on {m}×{out}×{inp}", kernel.name());
                let y = w.matmul_with(kernel, &x, m, None)?;
                let r = w.matmul_with(Int8Kernel::Portable, &x, m, None)?;
                assert_eq!(y, r, "{} without bias", kernel.name());
            }
        }
        Ok(())
    }

    /// The portable kernel is the integer product of the quantized operands, scaled back.
    #[test]
    fn portable_kernel_is_the_dequantized_product() -> Result<()> {
        let (m, out, inp) = (5, 21, 37);
        let wf = random(out * inp, 4);
        let x = random(m * inp, 5);
        let w = Int8Matrix::quantize(&wf, out, inp)?;
        let (q, scales) = w.to_quantized();
        let y = w.matmul_with(Int8Kernel::Portable, &x, m, None)?;
        for r in 0..m {
            let row = &x[r * inp..][..inp];
            let mut qx = vec![0u8; inp];
            let sa = quantize_row(row, &mut qx, 0);
            let qx: Vec<i8> = qx.into_iter().map(|v| v as i8).collect();
            for n in 0..out {
                let acc: i32 = (0..inp).map(|k| qx[k] as i32 * q[n * inp + k] as i32).sum();
                let expect = acc as f32 * (sa * scales[n]);
                assert!((y[r * out + n] - expect).abs() <= 1e-5 * expect.abs().max(1.0));
            }
        }
        Ok(())
    }

    /// Against the f32 product, the error is what 8-bit rounding of both operands allows.
    #[test]
    fn close_to_the_f32_product() -> Result<()> {
        let (m, out, inp) = (16, 64, 256);
        let wf = random(out * inp, 6);
        let x = random(m * inp, 7);
        let w = Int8Matrix::quantize(&wf, out, inp)?;
        let y = w.matmul(&x, m, None)?;
        let mut err = 0f64;
        let mut norm = 0f64;
        for r in 0..m {
            for n in 0..out {
                let exact: f32 = (0..inp).map(|k| x[r * inp + k] * wf[n * inp + k]).sum();
                err += ((y[r * out + n] - exact) as f64).powi(2);
                norm += (exact as f64).powi(2);
            }
        }
        let relative = (err / norm).sqrt();
        assert!(relative < 0.01, "relative error {relative}");
        Ok(())
    }

    /// Layers sharing an input quantize it once and give what each gives alone.
    #[test]
    fn layers_sharing_an_input_agree_with_each_alone() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::from_vec(random(4 * 24, 13), (2, 2, 24), &dev)?;
        let w1 = Arc::new(Int8Matrix::quantize(&random(10 * 24, 14), 10, 24)?);
        let w2 = Arc::new(Int8Matrix::quantize(&random(7 * 24, 15), 7, 24)?);
        let b = Tensor::from_vec(random(10, 16), 10, &dev)?;
        let both = linear_int8_many(&x, &[(&w1, Some(&b)), (&w2, None)])?;
        let alone = [linear_int8(&x, &w1, Some(&b))?, linear_int8(&x, &w2, None)?];
        for (a, b) in both.iter().zip(&alone) {
            assert_eq!(a.dims(), b.dims());
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0);
        }
        let w3 = Arc::new(Int8Matrix::quantize(&random(5 * 8, 17), 5, 8)?);
        assert!(linear_int8_many(&x, &[(&w1, None), (&w3, None)]).is_err());
        Ok(())
    }

    #[test]
    fn round_trips_through_stored_values() -> Result<()> {
        let (out, inp) = (19, 10);
        let w = Int8Matrix::quantize(&random(out * inp, 8), out, inp)?;
        let (q, s) = w.to_quantized();
        let again = Int8Matrix::from_quantized(&q, &s, out, inp)?;
        assert_eq!(again.dequantize(), w.dequantize());
        assert_eq!(w.row(7), w.dequantize()[7 * inp..8 * inp].to_vec());
        assert!(Int8Matrix::from_quantized(&q[1..], &s, out, inp).is_err());
        Ok(())
    }

    #[test]
    fn zero_rows_and_non_finite_inputs() -> Result<()> {
        let w = Int8Matrix::quantize(&[0.0; 12], 3, 4)?;
        assert_eq!(
            w.matmul(&[1.0; 8], 2, Some(&[1.0, 2.0, 3.0]))?,
            [1., 2., 3., 1., 2., 3.]
        );
        let w = Int8Matrix::quantize(&random(12, 9), 3, 4)?;
        assert_eq!(w.matmul(&[0.0; 4], 1, None)?, [0.0; 3]);
        assert!(w.matmul(&[f32::NAN, 0.0, 0.0, 0.0], 1, None).is_err());
        assert!(Int8Matrix::quantize(&[f32::INFINITY; 4], 1, 4).is_err());
        Ok(())
    }

    #[test]
    fn tensor_op_keeps_leading_dims() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let wf = random(6 * 8, 10);
        let w = Arc::new(Int8Matrix::quantize(&wf, 6, 8)?);
        let x = candle_core::Var::from_vec(random(2 * 3 * 8, 11), (2, 3, 8), &dev)?;
        let x = x.as_tensor();
        let b = Tensor::from_vec(random(6, 12), 6, &dev)?;
        let y = linear_int8(x, &w, Some(&b))?;
        assert_eq!(y.dims(), &[2, 3, 6]);
        let reference =
            crate::linear::linear_composed(x, &Tensor::from_vec(wf, (6, 8), &dev)?, Some(&b))?;
        let diff = (&y - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 0.05, "{diff}");
        let err = y.sum_all()?.backward().unwrap_err().to_string();
        assert!(err.contains("for inference"), "{err}");
        Ok(())
    }
}
