//! Plumbing shared by the CPU kernels: borrowing f32 data out of candle storage, building result tensors,
//! row-parallel loops and a thin wrapper over `gemm`.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// The contiguous f32 data that `layout` views in `storage`.
/// An inference linear layer's input `[.., inp]` (contiguous f32) with its number of rows, or an
/// error naming `op` if its width is not the weight's.
pub(crate) fn linear_input<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    inp: usize,
    op: &str,
) -> Result<(&'a [f32], usize)> {
    let x = slice(storage, layout, op)?;
    let last = layout.dims().last().copied().unwrap_or(0);
    if last != inp {
        bail!("{op}: input width {last}, the weight takes {inp}");
    }
    Ok((x, x.len() / inp.max(1)))
}

/// The shape of `layout`'s dims with the last one replaced by `out`.
pub(crate) fn with_last_dim(layout: &Layout, out: usize) -> candle_core::Shape {
    let mut dims = layout.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    candle_core::Shape::from(dims)
}

/// A bias as f32 values, for the inference linear kernels.
pub(crate) fn bias_values(bias: Option<&Tensor>) -> Result<Option<Vec<f32>>> {
    bias.map(|b| {
        b.to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()
    })
    .transpose()
}

pub(crate) fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(data) => data.as_slice(),
        other => bail!("{op}: expected an f32 tensor, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!(
            "{op}: expected a contiguous tensor, got strides {:?}",
            layout.stride()
        ),
    }
}

/// All of the f32 data of `storage` plus the layout's start offset, for strided kernels.
pub(crate) fn strided<'a>(storage: &'a CpuStorage, op: &str) -> Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(data) => Ok(data.as_slice()),
        other => bail!("{op}: expected an f32 tensor, got {:?}", other.dtype()),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (making it contiguous first if needed).
pub(crate) fn with_data<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(slice(cpu, layout, op)?)),
        _ => bail!("{op}: the fused kernel runs on the CPU only"),
    }
}

/// Wraps a freshly computed buffer as a tensor on the CPU.
pub(crate) fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape.into(), &candle_core::Device::Cpu)
}

/// How many rows one parallel task handles so that each task does at least ~`min_work` element-ops.
pub(crate) fn rows_per_task(rows: usize, row_len: usize, min_work: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_work = min_work.div_ceil(row_len.max(1)).max(1);
    let by_threads = rows.div_ceil(threads * 4).max(1);
    by_work.max(by_threads).min(rows.max(1))
}

/// Calls `f(first_row, rows)` for disjoint blocks of `row_len`-wide rows of `out`, in parallel.
pub(crate) fn par_rows(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.is_empty() || row_len == 0 {
        return;
    }
    let rows = out.len() / row_len;
    let per_task = rows_per_task(rows, row_len, 16 * 1024);
    out.par_chunks_mut(per_task * row_len)
        .enumerate()
        .for_each(|(task, chunk)| f(task * per_task, chunk));
}

/// Like [`par_rows`] for a computation that also produces per-block partial sums of width `acc_len`
/// (e.g. the weight gradient of a norm). Blocks have a fixed size, and the partials are added in block
/// order, so the result does not depend on the number of threads.
pub(crate) fn par_rows_reduce(
    out: &mut [f32],
    row_len: usize,
    acc_len: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut total = vec![0f32; acc_len];
    if out.is_empty() || row_len == 0 {
        return total;
    }
    const ROWS_PER_BLOCK: usize = 32;
    let partials: Vec<Vec<f32>> = out
        .par_chunks_mut(ROWS_PER_BLOCK * row_len)
        .enumerate()
        .map(|(block, chunk)| {
            let mut acc = vec![0f32; acc_len];
            f(block * ROWS_PER_BLOCK, chunk, &mut acc);
            acc
        })
        .collect();
    for partial in &partials {
        crate::math::add_assign(&mut total, partial);
    }
    total
}

/// A raw pointer that may cross threads; each task writes a disjoint region through it.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so a closure captures the whole `SendPtr`, not its raw field).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// One matrix operand: a pointer plus row and column strides (in elements).
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a `Mat` is only read, and only while the buffer it points into is borrowed by the caller.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    pub fn rows(ptr: *const f32, row_stride: usize) -> Self {
        Mat {
            ptr,
            rs: row_stride as isize,
            cs: 1,
        }
    }
    /// The element at row `i`, column `j`.
    ///
    /// # Safety
    /// `(i, j)` must be inside the matrix the pointer and strides describe.
    #[inline(always)]
    pub unsafe fn get(&self, i: usize, j: usize) -> f32 {
        *self.ptr.offset(i as isize * self.rs + j as isize * self.cs)
    }
    /// The sub-matrix starting at row `i`, column `j`.
    ///
    /// # Safety
    /// `(i, j)` must be inside the matrix.
    pub unsafe fn shifted(&self, i: usize, j: usize) -> Self {
        Mat {
            ptr: self.ptr.offset(i as isize * self.rs + j as isize * self.cs),
            ..*self
        }
    }
    /// The same matrix read transposed.
    pub fn transposed(&self) -> Self {
        Mat {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// The transpose of a row-major matrix with the given row stride.
    pub fn rows_t(ptr: *const f32, row_stride: usize) -> Self {
        Mat {
            ptr,
            rs: 1,
            cs: row_stride as isize,
        }
    }
}

/// `dst[m×n] = (accumulate ? dst : 0) + lhs[m×k] · rhs[k×n]`; a large `parallel` product takes bf16
/// operands when [`crate::mixed_precision`] is switched on.
///
/// # Safety
/// Every pointer must be valid for the region its strides and the sizes describe, and `dst` must not
/// overlap the inputs.
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
    parallel: bool,
) {
    if parallel && crate::mixed_precision::takes(m, n, k) {
        return crate::mixed_precision::gemm(m, n, k, dst, dst_rs, accumulate, lhs, rhs);
    }
    // SAFETY: the caller's guarantees are the same.
    if m <= crate::few_rows::MAX_ROWS
        && unsafe { crate::few_rows::product(m, n, k, dst, dst_rs, accumulate, lhs, rhs, parallel) }
    {
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        parallelism,
    )
}
