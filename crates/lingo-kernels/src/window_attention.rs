//! Sliding-window (local, banded) self-attention: query `i` attends to keys `i − left ..= i + right`
//! only — `left = w − 1, right = 0` is a causal window of `w` tokens (Mistral), `left = right = w/2`
//! a centred one (Longformer's local attention).
//!
//! Fused like [`crate::attention`], but by blocks of [`BLOCK`] queries: a block's keys are the
//! `BLOCK + left + right` around it, so scores, probabilities (kept for the backward) and work are
//! `O(n · (w + BLOCK))`, never `O(n²)`. Per block, two `gemm`s and a masked softmax forward; four
//! `gemm`s and the softmax backward in the backward pass. Key padding and dropout on the
//! probabilities work as in the dense kernel, with the same dropout mask (drawn at the probability's
//! index in `[batch, heads, queries, keys]`), so a window covering the whole sequence is exactly
//! dense attention.

use crate::attention::{checked_dropout, keep_flags, softmax_row, AttentionDropout, AttentionMask};
use crate::cpu::{self, Mat, SendPtr};
use crate::math;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Queries per block.
pub const BLOCK: usize = 64;

/// Which keys each query sees, relative to its own position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Keys this many positions back are visible…
    pub left: usize,
    /// …and this many ahead.
    pub right: usize,
}

impl Window {
    /// A causal window of `size` tokens, the query's own included.
    pub fn causal(size: usize) -> Window {
        Window {
            left: size.saturating_sub(1),
            right: 0,
        }
    }

    /// `size / 2` tokens either side.
    pub fn centred(size: usize) -> Window {
        Window {
            left: size / 2,
            right: size / 2,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Geometry {
    b: usize,
    t: usize,
    h: usize,
    d: usize,
    scale: f32,
    window: Window,
    /// Dropout on the probabilities: (threshold, survivor scale, seed).
    drop: Option<(u32, f32, u64)>,
}

/// One block of queries and the keys they may see.
struct Block {
    /// Queries `i0..i1`, keys `k0..k1`.
    i0: usize,
    i1: usize,
    k0: usize,
    k1: usize,
}

impl Geometry {
    fn blocks(&self) -> usize {
        self.t.div_ceil(BLOCK)
    }

    /// Columns of a stored probability block.
    fn width(&self) -> usize {
        (BLOCK + self.window.left + self.window.right).min(self.t)
    }

    fn block(&self, n: usize) -> Block {
        let i0 = n * BLOCK;
        let i1 = (i0 + BLOCK).min(self.t);
        Block {
            i0,
            i1,
            k0: i0.saturating_sub(self.window.left),
            k1: (i1 + self.window.right).min(self.t),
        }
    }

    /// The columns of query `i`'s row (relative to the block's `k0`) that its window covers.
    fn span(&self, blk: &Block, i: usize) -> (usize, usize) {
        let lo = i.saturating_sub(self.window.left).max(blk.k0) - blk.k0;
        let hi = (i + self.window.right + 1).min(blk.k1) - blk.k0;
        (lo, hi)
    }

    /// Element `(b, t, h, 0)` of a contiguous `[b, t, h, d]` tensor.
    fn at(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.t + t) * self.h + h) * self.d
    }

    /// Row stride of one head's `[t, d]` view.
    fn row(&self) -> usize {
        self.h * self.d
    }

    /// The probabilities of query `i`'s row as they weigh the values: dropped out in place of a
    /// copy, by the dense kernel's index (`[b, h, i, key]`).
    fn drop_row(&self, bh: usize, i: usize, k0: usize, row: &mut [f32]) {
        if let Some((threshold, scale, seed)) = self.drop {
            let first = ((bh * self.t + i) * self.t + k0) as u64;
            crate::dropout::apply_in_place(seed, first, threshold, scale, row);
        }
    }
}

/// Forward: fills `out` (`[B, T, H, D]`) and `probs` (`[B·H, blocks, BLOCK, width]`).
fn forward(
    g: &Geometry,
    [q, k, v]: [&[f32]; 3],
    keep: Option<&[u8]>,
    out: &mut [f32],
    probs: &mut [f32],
) {
    let w = g.width();
    let out_ptr = SendPtr(out.as_mut_ptr());
    probs
        .par_chunks_mut(BLOCK * w)
        .enumerate()
        .for_each(|(task, p)| {
            let (bh, n) = (task / g.blocks(), task % g.blocks());
            let (b, h) = (bh / g.h, bh % g.h);
            let blk = g.block(n);
            let (rows, cols) = (blk.i1 - blk.i0, blk.k1 - blk.k0);
            // SAFETY: each (b, h, block) reads its own rows of q/k/v and writes its own rows of
            // out and its own probability block.
            unsafe {
                cpu::gemm(
                    rows,
                    cols,
                    g.d,
                    p.as_mut_ptr(),
                    w,
                    false,
                    Mat::rows(q.as_ptr().add(g.at(b, blk.i0, h)), g.row()),
                    Mat::rows_t(k.as_ptr().add(g.at(b, blk.k0, h)), g.row()),
                    false,
                );
            }
            let keep_b = keep.map(|k| &k[b * g.t..(b + 1) * g.t]);
            let mut weighed = vec![0f32; rows * w];
            for r in 0..rows {
                let i = blk.i0 + r;
                let (lo, hi) = g.span(&blk, i);
                let row = &mut p[r * w..(r + 1) * w];
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                let keep_row = keep_b.map(|kb| &kb[blk.k0 + lo..blk.k0 + hi]);
                softmax_row(&mut row[lo..hi], hi - lo, keep_row, g.scale);
                let wr = &mut weighed[r * w..r * w + cols];
                wr.copy_from_slice(&row[..cols]);
                g.drop_row(bh, i, blk.k0, wr);
            }
            let o = out_ptr;
            unsafe {
                cpu::gemm(
                    rows,
                    g.d,
                    cols,
                    o.0.add(g.at(b, blk.i0, h)),
                    g.row(),
                    false,
                    Mat::rows(weighed.as_ptr(), w),
                    Mat::rows(v.as_ptr().add(g.at(b, blk.k0, h)), g.row()),
                    false,
                );
            }
        });
}

/// Backward: `dq`, `dk`, `dv` (`[B, T, H, D]`, zeroed) from `dout`. Blocks of one (batch, head)
/// share keys, so they run in order within it; (batch, head) pairs run in parallel.
fn backward(
    g: &Geometry,
    [q, k, v]: [&[f32]; 3],
    probs: &[f32],
    dout: &[f32],
    grads: [SendPtr; 3],
) {
    let w = g.width();
    (0..g.b * g.h).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / g.h, bh % g.h);
        let [dq, dk, dv] = grads;
        let mut ds = vec![0f32; BLOCK * w];
        let mut weighed = vec![0f32; BLOCK * w];
        for n in 0..g.blocks() {
            let blk = g.block(n);
            let (rows, cols) = (blk.i1 - blk.i0, blk.k1 - blk.k0);
            let p = &probs[(bh * g.blocks() + n) * BLOCK * w..][..rows * w];
            for r in 0..rows {
                let wr = &mut weighed[r * w..r * w + cols];
                wr.copy_from_slice(&p[r * w..r * w + cols]);
                g.drop_row(bh, blk.i0 + r, blk.k0, wr);
            }
            // SAFETY: (b, h) writes only its own rows of dq, dk and dv.
            unsafe {
                let dout_blk = Mat::rows(dout.as_ptr().add(g.at(b, blk.i0, h)), g.row());
                // dV += P'ᵀ dO
                cpu::gemm(
                    cols,
                    g.d,
                    rows,
                    dv.0.add(g.at(b, blk.k0, h)),
                    g.row(),
                    true,
                    Mat::rows_t(weighed.as_ptr(), w),
                    dout_blk,
                    false,
                );
                // dP' = dO Vᵀ
                cpu::gemm(
                    rows,
                    cols,
                    g.d,
                    ds.as_mut_ptr(),
                    w,
                    false,
                    dout_blk,
                    Mat::rows_t(v.as_ptr().add(g.at(b, blk.k0, h)), g.row()),
                    false,
                );
            }
            for r in 0..rows {
                let dr = &mut ds[r * w..r * w + cols];
                // Through the dropout: dP = dP' ⊙ M / (1 − p).
                g.drop_row(bh, blk.i0 + r, blk.k0, dr);
                // dS = P ⊙ (dP − Σ dP⊙P) · scale
                let pr = &p[r * w..r * w + cols];
                let s = math::dot(pr, dr);
                for (d, &pi) in dr.iter_mut().zip(pr) {
                    *d = pi * (*d - s) * g.scale;
                }
            }
            unsafe {
                // dQ = dS K (each query row is in one block)
                cpu::gemm(
                    rows,
                    g.d,
                    cols,
                    dq.0.add(g.at(b, blk.i0, h)),
                    g.row(),
                    false,
                    Mat::rows(ds.as_ptr(), w),
                    Mat::rows(k.as_ptr().add(g.at(b, blk.k0, h)), g.row()),
                    false,
                );
                // dK += dSᵀ Q
                cpu::gemm(
                    cols,
                    g.d,
                    rows,
                    dk.0.add(g.at(b, blk.k0, h)),
                    g.row(),
                    true,
                    Mat::rows_t(ds.as_ptr(), w),
                    Mat::rows(q.as_ptr().add(g.at(b, blk.i0, h)), g.row()),
                    false,
                );
            }
        }
    });
}

struct WindowOp {
    window: Window,
    scale: Option<f32>,
    keep: Option<Vec<u8>>,
    dropout: Option<(u32, f32, u64)>,
    probs: Arc<Mutex<Vec<f32>>>,
}

impl WindowOp {
    fn geometry(&self, dims: &[usize]) -> Result<Geometry> {
        let [b, t, h, d] = dims else {
            bail!("window attention: expected [batch, time, heads, head_dim], got {dims:?}");
        };
        if let Some(keep) = &self.keep {
            if keep.len() != b * t {
                bail!(
                    "window attention: key padding mask has {} entries, expected batch {b} × keys {t}",
                    keep.len()
                );
            }
        }
        Ok(Geometry {
            b: *b,
            t: *t,
            h: *h,
            d: *d,
            scale: self.scale.unwrap_or(1.0 / (*d as f32).sqrt()),
            window: self.window,
            drop: self.dropout,
        })
    }
}

/// The contiguous f32 data of a storage, from its layout's start.
fn data<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&cpu::strided(s, "window attention")?[start..end]),
        None => bail!("window attention: inputs must be contiguous"),
    }
}

impl candle_core::CustomOp3 for WindowOp {
    fn name(&self) -> &'static str {
        "lingo-window-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry(ql.dims())?;
        let mut out = vec![0f32; g.b * g.t * g.h * g.d];
        let mut probs = vec![0f32; g.b * g.h * g.blocks() * BLOCK * g.width()];
        let inputs = [data(qs, ql)?, data(ks, kl)?, data(vs, vl)?];
        forward(&g, inputs, self.keep.as_deref(), &mut out, &mut probs);
        *self.probs.lock().expect("probs lock") = probs;
        Ok((CpuStorage::F32(out), Shape::from(ql.dims())))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let probs = self.probs.lock().expect("probs lock");
        let g = self.geometry(q.dims())?;
        let n = q.elem_count();
        let (mut dq, mut dk, mut dv) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        let ptrs = [
            SendPtr(dq.as_mut_ptr()),
            SendPtr(dk.as_mut_ptr()),
            SendPtr(dv.as_mut_ptr()),
        ];
        let dout = grad.contiguous()?;
        let guards = [q, k, v, &dout].map(|t| t.storage_and_layout());
        let [qd, kd, vd, dout] = [0, 1, 2, 3].map(|i| match &*guards[i].0 {
            Storage::Cpu(s) => data(s, guards[i].1),
            _ => bail!("window attention runs on the CPU only"),
        });
        backward(&g, [qd?, kd?, vd?], &probs, dout?, ptrs);
        Ok((
            Some(cpu::tensor(dq, q.shape())?),
            Some(cpu::tensor(dk, k.shape())?),
            Some(cpu::tensor(dv, v.shape())?),
        ))
    }
}

/// Sliding-window self-attention over `q, k, v: [B, T, H, D]`: query `i` sees keys within
/// `window` of it (and not padding, per `mask.key_padding`), scaled by `mask.scale` (default
/// `1/√D`), with `mask.dropout` on the probabilities. `mask.causal` is the window's business and
/// must be unset. Returns `[B, T, H, D]`.
pub fn window_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window: Window,
    mask: &AttentionMask,
) -> Result<Tensor> {
    let (b, t, _, _) = q.dims4()?;
    if k.dims() != q.dims() || v.dims() != q.dims() {
        bail!(
            "window attention: q {:?}, k {:?} and v {:?} must have one shape",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if mask.causal || mask.query_offset != 0 {
        bail!("window attention: a causal window is Window::causal, not a causal mask");
    }
    if !q.device().is_cpu() || q.dtype() != DType::F32 {
        return window_attention_composed(q, k, v, window, mask);
    }
    let op = WindowOp {
        window,
        scale: mask.scale.map(|s| s as f32),
        keep: keep_flags(mask, b, t)?,
        dropout: checked_dropout(mask)?.map(AttentionDropout::parts),
        probs: Arc::new(Mutex::new(Vec::new())),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// The composed reference: dense attention with every key outside the window masked, `O(n²)`.
pub fn window_attention_composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window: Window,
    mask: &AttentionMask,
) -> Result<Tensor> {
    let (b, t, _, d) = q.dims4()?;
    let scale = mask.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let qt = q.transpose(1, 2)?.contiguous()?;
    let kt = k.transpose(1, 2)?.contiguous()?;
    let scores = (qt.matmul(&kt.t()?)? * scale)?;
    let band: Vec<u8> = (0..t)
        .flat_map(|i| (0..t).map(move |j| u8::from(j + window.left >= i && j <= i + window.right)))
        .collect();
    let mut keep = Tensor::from_vec(band, (1, 1, t, t), q.device())?;
    if let Some(kp) = &mask.key_padding {
        keep = keep.broadcast_mul(&kp.ne(0.0)?.reshape((b, 1, 1, t))?)?;
    }
    let p =
        crate::softmax::softmax_masked(&scores, &keep.broadcast_as(scores.shape())?.contiguous()?)?;
    let p = match mask.dropout {
        Some(dr) if dr.p > 0.0 => crate::dropout::dropout_composed(&p, dr.p, dr.seed)?,
        _ => p,
    };
    crate::attention::weighted_values(&p, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{attention, AttentionDropout};
    use crate::gradcheck::{check_gradients, check_parity, random_tensor, GradCheck};
    use candle_core::Device;

    fn padding(b: usize, t: usize) -> Tensor {
        let flags: Vec<u8> = (0..b * t)
            .map(|i| u8::from(i % t < t - (i / t) * 3))
            .collect();
        Tensor::from_vec(flags, (b, t), &Device::Cpu).unwrap()
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        // Two blocks and a ragged end: 150 positions, a causal and a centred window.
        let shape = [1, 150, 2, 4];
        let inputs = [1, 2, 3].map(|s| random_tensor(&shape, s).unwrap());
        for window in [Window::causal(20), Window::centred(10)] {
            let mask = AttentionMask {
                key_padding: Some(padding(1, 150)),
                dropout: Some(AttentionDropout { p: 0.2, seed: 4 }),
                ..Default::default()
            };
            check_gradients(
                &move |t| window_attention(&t[0], &t[1], &t[2], window, &mask),
                &inputs,
                GradCheck::default(),
            )?;
        }
        Ok(())
    }

    #[test]
    fn matches_the_masked_dense_reference() -> Result<()> {
        let (b, t, h, d) = (2, 140, 3, 8);
        let inputs = [5, 6, 7].map(|s| random_tensor(&[b, t, h, d], s).unwrap());
        let drops = [None, Some(AttentionDropout { p: 0.3, seed: 9 })];
        for window in [Window::causal(1), Window::causal(33), Window::centred(70)] {
            for dropout in drops {
                let mask = AttentionMask {
                    key_padding: Some(padding(b, t)),
                    dropout,
                    ..Default::default()
                };
                let m2 = mask.clone();
                check_parity(
                    &move |x| window_attention(&x[0], &x[1], &x[2], window, &mask),
                    &move |x| window_attention_composed(&x[0], &x[1], &x[2], window, &m2),
                    &inputs,
                    1e-5,
                )?;
            }
        }
        Ok(())
    }

    #[test]
    fn a_window_over_everything_is_dense_attention() -> Result<()> {
        let (b, t, h, d) = (2, 100, 2, 8);
        let inputs = [8, 9, 10].map(|s| random_tensor(&[b, t, h, d], s).unwrap());
        let dropout = Some(AttentionDropout { p: 0.25, seed: 2 });
        for (window, causal) in [(Window::causal(t), true), (Window::centred(2 * t), false)] {
            let mask = AttentionMask {
                key_padding: Some(padding(b, t)),
                dropout,
                ..Default::default()
            };
            let dense = AttentionMask {
                causal,
                ..mask.clone()
            };
            check_parity(
                &move |x| window_attention(&x[0], &x[1], &x[2], window, &mask),
                &move |x| attention(&x[0], &x[1], &x[2], &dense),
                &inputs,
                1e-5,
            )?;
        }
        Ok(())
    }

    #[test]
    fn probabilities_take_memory_in_proportion_to_the_window() -> Result<()> {
        let g = |t, w: Window| Geometry {
            b: 1,
            t,
            h: 1,
            d: 1,
            scale: 1.0,
            window: w,
            drop: None,
        };
        let stored = |t| {
            let g = g(t, Window::causal(128));
            g.blocks() * BLOCK * g.width()
        };
        // Twice the sequence, twice the memory (dense would take four times).
        assert_eq!(stored(8192) * 2, stored(16384));
        assert!(stored(16384) < 16384 * (128 + BLOCK + 1));
        Ok(())
    }
}
