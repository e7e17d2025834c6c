//! Sliding-window (local, banded) self-attention: query `i` attends to keys `i − left ..= i + right`
//! only — `left = w − 1, right = 0` is a causal window of `w` tokens (Mistral), `left = right = w/2`
//! a centred one (Longformer's local attention). Optionally the first `global` positions are
//! global tokens, as Longformer's: every query also sees them, and they see every key (every
//! earlier key, causally) — a classifier's `[CLS]`, a question before its context, or the
//! "attention sinks" that keep a streaming causal model stable.
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
    /// The first `global` positions are global tokens (see the module's documentation).
    pub global: usize,
    /// Nothing ahead of a query is visible, global tokens included.
    pub causal: bool,
}

impl Window {
    /// A causal window of `size` tokens, the query's own included.
    pub fn causal(size: usize) -> Window {
        Window {
            left: size.saturating_sub(1),
            right: 0,
            global: 0,
            causal: true,
        }
    }

    /// `size / 2` tokens either side.
    pub fn centred(size: usize) -> Window {
        Window {
            left: size / 2,
            right: size / 2,
            global: 0,
            causal: false,
        }
    }

    /// This window with the first `global` positions global.
    pub fn with_global(self, global: usize) -> Window {
        Window { global, ..self }
    }

    /// Whether query `i` sees key `j` (the dense reference's mask).
    pub fn sees(&self, i: usize, j: usize) -> bool {
        let ahead_ok = !self.causal || j <= i;
        let local = j + self.left >= i && j <= i + self.right;
        local || (ahead_ok && (j < self.global || i < self.global))
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

/// One block of queries and the keys they may see: the window's range `k0..k1` in columns
/// `off..off + (k1 − k0)` of a probability row, and global keys `0..pre` before it in columns
/// `0..pre` (when the range does not already start at 0).
struct Block {
    /// Queries `i0..i1`, keys `k0..k1`.
    i0: usize,
    i1: usize,
    k0: usize,
    k1: usize,
    pre: usize,
    off: usize,
}

impl Block {
    /// Columns of a probability row this block uses.
    fn len(&self) -> usize {
        self.off + self.k1 - self.k0
    }
}

impl Geometry {
    fn blocks(&self) -> usize {
        self.t.div_ceil(BLOCK)
    }

    fn global(&self) -> usize {
        self.window.global.min(self.t)
    }

    /// Columns of a stored probability block.
    fn width(&self) -> usize {
        (self.global() + BLOCK + self.window.left + self.window.right).min(self.t)
    }

    fn block(&self, n: usize) -> Block {
        let i0 = n * BLOCK;
        let i1 = (i0 + BLOCK).min(self.t);
        let (mut k0, mut k1) = (
            i0.saturating_sub(self.window.left),
            (i1 + self.window.right).min(self.t),
        );
        let global = self.global();
        if k0 <= global {
            // The range meets the global tokens: widen it to take them in (ahead too, unless
            // causal), so they need no columns of their own.
            k0 = 0;
            if !self.window.causal {
                k1 = k1.max(global);
            }
            return Block {
                i0,
                i1,
                k0,
                k1,
                pre: 0,
                off: 0,
            };
        }
        Block {
            i0,
            i1,
            k0,
            k1,
            pre: global,
            off: global,
        }
    }

    /// Which columns of query `i`'s row it may see (before key padding): `valid[c]`.
    fn visible(&self, blk: &Block, i: usize, valid: &mut [u8]) {
        valid[..blk.pre].fill(1);
        valid[blk.pre..blk.off].fill(0);
        for (c, v) in valid[blk.off..blk.len()].iter_mut().enumerate() {
            *v = u8::from(self.window.sees(i, blk.k0 + c));
        }
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
    fn drop_row(&self, bh: usize, i: usize, blk: &Block, row: &mut [f32]) {
        if let Some((threshold, scale, seed)) = self.drop {
            let first = |key: usize| ((bh * self.t + i) * self.t + key) as u64;
            let (globals, rest) = row[..blk.len()].split_at_mut(blk.off);
            crate::dropout::apply_in_place(
                seed,
                first(0),
                threshold,
                scale,
                &mut globals[..blk.pre],
            );
            crate::dropout::apply_in_place(seed, first(blk.k0), threshold, scale, rest);
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
            let (rows, cols, len) = (blk.i1 - blk.i0, blk.k1 - blk.k0, blk.len());
            let queries = || Mat::rows(q[g.at(b, blk.i0, h)..].as_ptr(), g.row());
            // SAFETY: each (b, h, block) reads its own rows of q/k/v and writes its own rows of
            // out and its own probability block.
            unsafe {
                cpu::gemm(
                    rows,
                    cols,
                    g.d,
                    p.as_mut_ptr().add(blk.off),
                    w,
                    false,
                    queries(),
                    Mat::rows_t(k.as_ptr().add(g.at(b, blk.k0, h)), g.row()),
                    false,
                );
                if blk.pre > 0 {
                    cpu::gemm(
                        rows,
                        blk.pre,
                        g.d,
                        p.as_mut_ptr(),
                        w,
                        false,
                        queries(),
                        Mat::rows_t(k.as_ptr().add(g.at(b, 0, h)), g.row()),
                        false,
                    );
                }
            }
            let keep_b = keep.map(|k| &k[b * g.t..(b + 1) * g.t]);
            let mut weighed = vec![0f32; rows * w];
            let mut valid = vec![0u8; w];
            for r in 0..rows {
                let i = blk.i0 + r;
                g.visible(&blk, i, &mut valid);
                if let Some(kb) = keep_b {
                    let (globals, rest) = valid[..len].split_at_mut(blk.off);
                    for (v, &k) in globals[..blk.pre].iter_mut().zip(kb) {
                        *v &= u8::from(k != 0);
                    }
                    for (v, &k) in rest.iter_mut().zip(&kb[blk.k0..blk.k1]) {
                        *v &= u8::from(k != 0);
                    }
                }
                let row = &mut p[r * w..(r + 1) * w];
                softmax_row(row, len, Some(&valid[..len]), g.scale);
                let wr = &mut weighed[r * w..r * w + len];
                wr.copy_from_slice(&row[..len]);
                g.drop_row(bh, i, &blk, wr);
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
                    Mat::rows(weighed.as_ptr().add(blk.off), w),
                    Mat::rows(v.as_ptr().add(g.at(b, blk.k0, h)), g.row()),
                    false,
                );
                if blk.pre > 0 {
                    cpu::gemm(
                        rows,
                        g.d,
                        blk.pre,
                        o.0.add(g.at(b, blk.i0, h)),
                        g.row(),
                        true,
                        Mat::rows(weighed.as_ptr(), w),
                        Mat::rows(v.as_ptr().add(g.at(b, 0, h)), g.row()),
                        false,
                    );
                }
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
            let (rows, cols, len, off, pre) = (
                blk.i1 - blk.i0,
                blk.k1 - blk.k0,
                blk.len(),
                blk.off,
                blk.pre,
            );
            let p = &probs[(bh * g.blocks() + n) * BLOCK * w..][..rows * w];
            for r in 0..rows {
                let wr = &mut weighed[r * w..r * w + len];
                wr.copy_from_slice(&p[r * w..r * w + len]);
                g.drop_row(bh, blk.i0 + r, &blk, wr);
            }
            // The parts of a row: the window's range, then (if any) the global keys before it.
            let parts = [(off, blk.k0, cols), (0, 0, pre)];
            // SAFETY: (b, h) writes only its own rows of dq, dk and dv.
            unsafe {
                let dout_blk = Mat::rows(dout.as_ptr().add(g.at(b, blk.i0, h)), g.row());
                for &(col, key, n) in parts.iter().filter(|p| p.2 > 0) {
                    // dV += P'ᵀ dO
                    cpu::gemm(
                        n,
                        g.d,
                        rows,
                        dv.0.add(g.at(b, key, h)),
                        g.row(),
                        true,
                        Mat::rows_t(weighed.as_ptr().add(col), w),
                        dout_blk,
                        false,
                    );
                    // dP' = dO Vᵀ
                    cpu::gemm(
                        rows,
                        n,
                        g.d,
                        ds.as_mut_ptr().add(col),
                        w,
                        false,
                        dout_blk,
                        Mat::rows_t(v.as_ptr().add(g.at(b, key, h)), g.row()),
                        false,
                    );
                }
            }
            for r in 0..rows {
                let dr = &mut ds[r * w..r * w + len];
                dr[pre..off].fill(0.0);
                // Through the dropout: dP = dP' ⊙ M / (1 − p).
                g.drop_row(bh, blk.i0 + r, &blk, dr);
                // dS = P ⊙ (dP − Σ dP⊙P) · scale
                let pr = &p[r * w..r * w + len];
                let s = math::dot(pr, dr);
                for (d, &pi) in dr.iter_mut().zip(pr) {
                    *d = pi * (*d - s) * g.scale;
                }
            }
            unsafe {
                for (first, &(col, key, n)) in parts.iter().filter(|p| p.2 > 0).enumerate() {
                    // dQ = dS K (each query row is in one block)
                    cpu::gemm(
                        rows,
                        g.d,
                        n,
                        dq.0.add(g.at(b, blk.i0, h)),
                        g.row(),
                        first > 0,
                        Mat::rows(ds.as_ptr().add(col), w),
                        Mat::rows(k.as_ptr().add(g.at(b, key, h)), g.row()),
                        false,
                    );
                    // dK += dSᵀ Q
                    cpu::gemm(
                        n,
                        g.d,
                        rows,
                        dk.0.add(g.at(b, key, h)),
                        g.row(),
                        true,
                        Mat::rows_t(ds.as_ptr().add(col), w),
                        Mat::rows(q.as_ptr().add(g.at(b, blk.i0, h)), g.row()),
                        false,
                    );
                }
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
/// `window` of it and the window's global tokens (and not padding, per `mask.key_padding`),
/// scaled by `mask.scale` (default `1/√D`), with `mask.dropout` on the probabilities. The global
/// tokens' own rows attend over every key (causally, in a causal window) through the dense kernel.
/// `mask.causal` is the window's business and must be unset. Returns `[B, T, H, D]`.
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
    let local = q
        .contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?;
    let global = window.global.min(t);
    if global == 0 {
        return Ok(local);
    }
    let rows = global_rows(q, k, v, window, mask)?;
    Tensor::cat(&[rows, local.narrow(1, global, t - global)?], 1)
}

/// The global tokens' rows: dense attention of the first `window.global` queries over every key
/// (over the keys up to each, in a causal window).
fn global_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window: Window,
    mask: &AttentionMask,
) -> Result<Tensor> {
    let t = q.dim(1)?;
    let global = window.global.min(t);
    let queries = q.narrow(1, 0, global)?;
    if window.causal {
        // Keys after the last global token are ahead of every global query.
        let mask = AttentionMask {
            causal: true,
            key_padding: (mask.key_padding.as_ref())
                .map(|p| p.narrow(1, 0, global))
                .transpose()?,
            ..mask.clone()
        };
        let keys = |x: &Tensor| x.narrow(1, 0, global);
        crate::attention::attention(&queries, &keys(k)?, &keys(v)?, &mask)
    } else {
        crate::attention::attention(&queries, k, v, mask)
    }
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
        .flat_map(|i| (0..t).map(move |j| u8::from(window.sees(i, j))))
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

    /// The kernel equals the masked dense reference on `inputs`, forward and backward.
    fn matches_reference(inputs: &[Tensor; 3], window: Window, mask: AttentionMask) -> Result<()> {
        let m2 = mask.clone();
        check_parity(
            &move |x| window_attention(&x[0], &x[1], &x[2], window, &mask),
            &move |x| window_attention_composed(&x[0], &x[1], &x[2], window, &m2),
            inputs,
            1e-5,
        )
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
                matches_reference(&inputs, window, mask)?;
            }
        }
        Ok(())
    }

    /// Global tokens: every query sees them and they see every key (causally in a causal
    /// window); as the masked dense reference, for a few, more than a block, and all positions.
    #[test]
    fn global_tokens_match_the_masked_dense_reference() -> Result<()> {
        let (b, t, h, d) = (2, 150, 2, 8);
        let inputs = [11, 12, 13].map(|s| random_tensor(&[b, t, h, d], s).unwrap());
        for global in [1, 5, 70, 150] {
            for window in [Window::causal(20), Window::centred(16)] {
                let window = window.with_global(global);
                let mask = AttentionMask {
                    key_padding: Some(padding(b, t)),
                    ..Default::default()
                };
                matches_reference(&inputs, window, mask)?;
            }
        }
        Ok(())
    }

    /// Every position global is dense attention (causal or not), whatever the window.
    #[test]
    fn all_global_is_dense_attention() -> Result<()> {
        let (b, t, h, d) = (2, 90, 2, 8);
        let inputs = [14, 15, 16].map(|s| random_tensor(&[b, t, h, d], s).unwrap());
        for (window, causal) in [(Window::causal(4), true), (Window::centred(4), false)] {
            let mask = AttentionMask {
                key_padding: Some(padding(b, t)),
                ..Default::default()
            };
            let dense = AttentionMask {
                causal,
                ..mask.clone()
            };
            let window = window.with_global(t);
            check_parity(
                &move |x| window_attention(&x[0], &x[1], &x[2], window, &mask),
                &move |x| attention(&x[0], &x[1], &x[2], &dense),
                &inputs,
                1e-5,
            )?;
        }
        let w = Window::centred(2).with_global(2);
        assert!(w.sees(50, 0) && w.sees(0, 50) && w.sees(50, 51) && !w.sees(50, 53));
        let c = Window::causal(2).with_global(2);
        assert!(c.sees(50, 1) && !c.sees(1, 50) && c.sees(50, 49) && !c.sees(50, 48));
        Ok(())
    }

    #[test]
    fn global_token_gradients_match_finite_differences() -> Result<()> {
        let shape = [1, 150, 2, 4];
        let inputs = [1, 2, 3].map(|s| random_tensor(&shape, s).unwrap());
        for window in [
            Window::causal(20).with_global(3),
            Window::centred(10).with_global(70),
        ] {
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
