//! Scaled dot-product attention, `softmax(q kᵀ·scale + mask) v`, fused per (batch, head).
//!
//! Inputs are read in place through their strides as `[batch, time, heads, head_dim]` (the layout a
//! linear projection produces), so no transposes or copies happen around the op. Each (batch, head)
//! pair is one parallel task: two small `gemm`s and a masked softmax forward; four `gemm`s and the
//! softmax backward in the backward pass. The probabilities are kept from the forward for the backward,
//! and handed out as attention weights on request.
//!
//! Masks: causal (query `i` at absolute position `query_offset + i` sees keys `0..=query_offset + i`,
//! which is what a KV cache needs) and key padding (`[batch, keys]`, non-zero = real token). A query that
//! may see no key at all gets a zero output instead of NaN.
//!
//! Training may drop attention probabilities (BERT's `attention_probs_dropout_prob`): the values are
//! weighed by `P ⊙ M / (1 − p)` while `P` itself is kept for the softmax backward; the mask `M` is
//! never stored — forward and backward regenerate it from a seed ([`crate::dropout::keeps`]).

use crate::cpu::{self, Mat, SendPtr};
use crate::math;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Masking, scaling and outputs of an attention call.
#[derive(Clone, Debug, Default)]
pub struct AttentionMask {
    /// Query `i` may only attend to keys at positions `<= query_offset + i`.
    pub causal: bool,
    /// Absolute position of the first query (the number of cached keys before it).
    pub query_offset: usize,
    /// `[batch, keys]`, non-zero where the key is a real token.
    pub key_padding: Option<Tensor>,
    /// Multiplies `q kᵀ`; defaults to `1/√head_dim`.
    pub scale: Option<f64>,
    /// Training: dropout on the attention probabilities.
    pub dropout: Option<AttentionDropout>,
}

/// Dropout on attention probabilities: each is zeroed with probability `p` (the rest scaled by
/// `1/(1 − p)`), the mask drawn from `seed` at the probability's index in
/// `[batch, heads, queries, keys]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDropout {
    pub p: f32,
    pub seed: u64,
}

impl AttentionDropout {
    /// What the kernels apply: (keep threshold, survivor scale, seed).
    pub(crate) fn parts(self) -> (u32, f32, u64) {
        (
            crate::dropout::threshold(self.p),
            1.0 / (1.0 - self.p),
            self.seed,
        )
    }
}

/// Where element `(b, t, h, 0)` of a `[batch, time, heads, head_dim]` view lives.
#[derive(Clone, Copy, Debug)]
struct View {
    offset: usize,
    sb: usize,
    st: usize,
    sh: usize,
}

impl View {
    fn of(layout: &Layout, what: &str) -> Result<View> {
        let s = layout.stride();
        if s.len() != 4 || s[3] != 1 {
            bail!("attention: {what} must be [batch, time, heads, head_dim] with a contiguous last dim, got dims {:?} strides {s:?}", layout.dims());
        }
        Ok(View {
            offset: layout.start_offset(),
            sb: s[0],
            st: s[1],
            sh: s[2],
        })
    }
    fn contiguous(t: usize, h: usize, d: usize) -> View {
        View {
            offset: 0,
            sb: t * h * d,
            st: h * d,
            sh: d,
        }
    }
    fn at(&self, b: usize, h: usize) -> usize {
        self.offset + b * self.sb + h * self.sh
    }
}

#[derive(Clone, Copy, Debug)]
struct Geometry {
    b: usize,
    h: usize,
    tq: usize,
    tk: usize,
    d: usize,
    scale: f32,
    causal: bool,
    query_offset: usize,
    /// Dropout on the probabilities: (threshold, survivor scale, seed).
    drop: Option<(u32, f32, u64)>,
}

impl Geometry {
    /// The probabilities `p` of (batch·head) `bh` with dropout applied (a copy), or `p` itself.
    fn dropped<'a>(&self, bh: usize, p: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
        match self.drop {
            None => p,
            Some((t, scale, seed)) => {
                buf.clear();
                buf.extend_from_slice(p);
                let first = (bh * self.tq * self.tk) as u64;
                crate::dropout::apply_in_place(seed, first, t, scale, buf);
                buf
            }
        }
    }

    /// Keys visible to query `i` by causality: `0..limit`.
    fn limit(&self, i: usize) -> usize {
        if self.causal {
            (self.query_offset + i + 1).min(self.tk)
        } else {
            self.tk
        }
    }
}

/// The forward pass: fills `out` (`[B, Tq, H, D]` contiguous) and `probs` (`[B, H, Tq, Tk]`).
fn forward(
    g: &Geometry,
    data: [(&[f32], View); 3],
    keep: Option<&[u8]>,
    out: &mut [f32],
    probs: &mut [f32],
) {
    let [(q, qv), (k, kv), (v, vv)] = data;
    let ov = View::contiguous(g.tq, g.h, g.d);
    let out_ptr = SendPtr(out.as_mut_ptr());
    probs
        .par_chunks_mut(g.tq * g.tk)
        .enumerate()
        .for_each(|(bh, p)| {
            let (b, h) = (bh / g.h, bh % g.h);
            // SAFETY: each (b, h) reads its own rows of q/k/v and writes its own rows of out and probs.
            unsafe {
                cpu::gemm(
                    g.tq,
                    g.tk,
                    g.d,
                    p.as_mut_ptr(),
                    g.tk,
                    false,
                    Mat::rows(q.as_ptr().add(qv.at(b, h)), qv.st),
                    Mat::rows_t(k.as_ptr().add(kv.at(b, h)), kv.st),
                    false,
                );
            }
            let keep_b = keep.map(|k| &k[b * g.tk..(b + 1) * g.tk]);
            for (i, row) in p.chunks_mut(g.tk).enumerate() {
                softmax_row(row, g.limit(i), keep_b, g.scale);
            }
            let mut buf = Vec::new();
            let p = g.dropped(bh, p, &mut buf);
            let o = out_ptr;
            unsafe {
                cpu::gemm(
                    g.tq,
                    g.d,
                    g.tk,
                    o.0.add(ov.at(b, h)),
                    ov.st,
                    false,
                    Mat::rows(p.as_ptr(), g.tk),
                    Mat::rows(v.as_ptr().add(vv.at(b, h)), vv.st),
                    false,
                );
            }
        });
}

/// In-place softmax of `scale · row[..limit]` over the kept keys; everything else becomes 0.
pub(crate) fn softmax_row(row: &mut [f32], limit: usize, keep: Option<&[u8]>, scale: f32) {
    let (live, dead) = row.split_at_mut(limit);
    dead.fill(0.0);
    if let Some(keep) = keep {
        for (x, &k) in live.iter_mut().zip(keep) {
            if k == 0 {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    let m = math::max(live);
    if m == f32::NEG_INFINITY {
        live.fill(0.0);
        return;
    }
    for x in live.iter_mut() {
        *x *= scale;
    }
    let s = math::exp_shifted_in_place(live, m * scale);
    math::scale(live, 1.0 / s);
}

/// Gradient buffers `[dq, dk, dv]` and their views.
struct Grads {
    ptrs: [SendPtr; 3],
    views: [View; 3],
}

/// The backward pass: writes `dq`, `dk`, `dv` through `grads` from `dout` (`[B, Tq, H, D]` contiguous).
fn backward(g: &Geometry, data: [(&[f32], View); 3], probs: &[f32], dout: &[f32], grads: &Grads) {
    let [(q, qv), (k, kv), (v, vv)] = data;
    let ov = View::contiguous(g.tq, g.h, g.d);
    let [dqv, dkv, dvv] = grads.views;
    probs
        .par_chunks(g.tq * g.tk)
        .enumerate()
        .for_each(|(bh, p)| {
            let (b, h) = (bh / g.h, bh % g.h);
            let [dq, dk, dv] = grads.ptrs;
            let mut ds = vec![0f32; g.tq * g.tk];
            let mut buf = Vec::new();
            let weighed = g.dropped(bh, p, &mut buf);
            // SAFETY: each (b, h) writes only its own rows of dq, dk and dv.
            unsafe {
                let dout_bh = Mat::rows(dout.as_ptr().add(ov.at(b, h)), ov.st);
                // dV = P'ᵀ dO, P' the probabilities that weighed the values
                cpu::gemm(
                    g.tk,
                    g.d,
                    g.tq,
                    dv.0.add(dvv.at(b, h)),
                    dvv.st,
                    false,
                    Mat::rows_t(weighed.as_ptr(), g.tk),
                    dout_bh,
                    false,
                );
                // dP = dO Vᵀ
                cpu::gemm(
                    g.tq,
                    g.tk,
                    g.d,
                    ds.as_mut_ptr(),
                    g.tk,
                    false,
                    dout_bh,
                    Mat::rows_t(v.as_ptr().add(vv.at(b, h)), vv.st),
                    false,
                );
            }
            // Through the dropout: dP = dP' ⊙ M / (1 − p).
            if let Some((t, scale, seed)) = g.drop {
                let first = (bh * g.tq * g.tk) as u64;
                crate::dropout::apply_in_place(seed, first, t, scale, &mut ds);
            }
            // dS = P ⊙ (dP − Σ dP⊙P) · scale
            for (pr, dr) in p.chunks(g.tk).zip(ds.chunks_mut(g.tk)) {
                let s = math::dot(pr, dr);
                for (d, &pi) in dr.iter_mut().zip(pr) {
                    *d = pi * (*d - s) * g.scale;
                }
            }
            unsafe {
                // dQ = dS K
                cpu::gemm(
                    g.tq,
                    g.d,
                    g.tk,
                    dq.0.add(dqv.at(b, h)),
                    dqv.st,
                    false,
                    Mat::rows(ds.as_ptr(), g.tk),
                    Mat::rows(k.as_ptr().add(kv.at(b, h)), kv.st),
                    false,
                );
                // dK = dSᵀ Q
                cpu::gemm(
                    g.tk,
                    g.d,
                    g.tq,
                    dk.0.add(dkv.at(b, h)),
                    dkv.st,
                    false,
                    Mat::rows_t(ds.as_ptr(), g.tk),
                    Mat::rows(q.as_ptr().add(qv.at(b, h)), qv.st),
                    false,
                );
            }
        });
}

/// The fused op. `packed`: the single input is `[B, T, 3·H·D]` holding q, k, v side by side.
struct AttentionOp {
    heads: usize,
    causal: bool,
    query_offset: usize,
    scale: Option<f32>,
    keep: Option<Vec<u8>>,
    dropout: Option<AttentionDropout>,
    probs: Arc<Mutex<Vec<f32>>>,
}

impl AttentionOp {
    fn geometry(&self, q: &[usize], k: &[usize]) -> Result<Geometry> {
        let (b, tq, h, d) = (q[0], q[1], q[2], q[3]);
        let tk = k[1];
        if let Some(keep) = &self.keep {
            if keep.len() != b * tk {
                bail!(
                    "attention: key padding mask has {} entries, expected batch {b} × keys {tk}",
                    keep.len()
                );
            }
        }
        let scale = self.scale.unwrap_or(1.0 / (d as f32).sqrt());
        Ok(Geometry {
            b,
            h,
            tq,
            tk,
            d,
            scale,
            causal: self.causal,
            query_offset: self.query_offset,
            drop: self.dropout.map(AttentionDropout::parts),
        })
    }

    fn packed_views(&self, layout: &Layout) -> Result<(Geometry, [View; 3])> {
        let (b, t, c3) = layout.shape().dims3()?;
        if c3 % (3 * self.heads) != 0 || layout.contiguous_offsets().is_none() {
            bail!(
                "self_attention: expected contiguous [batch, time, 3·heads·head_dim], got {:?}",
                layout.dims()
            );
        }
        let c = c3 / 3;
        let d = c / self.heads;
        let g = self.geometry(&[b, t, self.heads, d], &[b, t, self.heads, d])?;
        let view = |part: usize| View {
            offset: layout.start_offset() + part * c,
            sb: t * c3,
            st: c3,
            sh: d,
        };
        Ok((g, [view(0), view(1), view(2)]))
    }

    fn run_forward(&self, g: &Geometry, data: [(&[f32], View); 3]) -> Vec<f32> {
        let mut out = vec![0f32; g.b * g.tq * g.h * g.d];
        let mut probs = vec![0f32; g.b * g.h * g.tq * g.tk];
        forward(g, data, self.keep.as_deref(), &mut out, &mut probs);
        *self.probs.lock().expect("probs lock") = probs;
        out
    }
}

/// Runs `f` on a CPU tensor's whole f32 buffer and its layout.
fn with_strided<R>(t: &Tensor, f: impl FnOnce(&[f32], &Layout) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(cpu::strided(cpu, "attention")?, layout),
        _ => bail!("attention: the fused kernel runs on the CPU only"),
    }
}

impl candle_core::CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "lingo-self-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, [qv, kv, vv]) = self.packed_views(l)?;
        let x = cpu::strided(s, "self_attention")?;
        let out = self.run_forward(&g, [(x, qv), (x, kv), (x, vv)]);
        Ok((CpuStorage::F32(out), Shape::from((g.b, g.tq, g.h * g.d))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let probs = self.probs.lock().expect("probs lock");
        let dx = with_strided(arg, |x, l| {
            let (g, views) = self.packed_views(l)?;
            let mut dx = vec![0f32; g.b * g.tq * 3 * g.h * g.d];
            let c = g.h * g.d;
            let gv = |part: usize| View {
                offset: part * c,
                sb: g.tq * 3 * c,
                st: 3 * c,
                sh: g.d,
            };
            let ptr = SendPtr(dx.as_mut_ptr());
            let grads = Grads {
                ptrs: [ptr; 3],
                views: [gv(0), gv(1), gv(2)],
            };
            cpu::with_data(grad, "self_attention", |dout| {
                backward(
                    &g,
                    [(x, views[0]), (x, views[1]), (x, views[2])],
                    &probs,
                    dout,
                    &grads,
                )
            })?;
            Ok(dx)
        })?;
        Ok(Some(cpu::tensor(dx, arg.shape())?))
    }
}

impl candle_core::CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "lingo-attention"
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
        let g = self.geometry(ql.dims(), kl.dims())?;
        let data = [
            (cpu::strided(qs, "attention")?, View::of(ql, "q")?),
            (cpu::strided(ks, "attention")?, View::of(kl, "k")?),
            (cpu::strided(vs, "attention")?, View::of(vl, "v")?),
        ];
        let out = self.run_forward(&g, data);
        Ok((CpuStorage::F32(out), Shape::from((g.b, g.tq, g.h, g.d))))
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
        let g = self.geometry(q.dims(), k.dims())?;
        let mut dq = vec![0f32; q.elem_count()];
        let mut dk = vec![0f32; k.elem_count()];
        let mut dv = vec![0f32; v.elem_count()];
        let grads = Grads {
            ptrs: [
                SendPtr(dq.as_mut_ptr()),
                SendPtr(dk.as_mut_ptr()),
                SendPtr(dv.as_mut_ptr()),
            ],
            views: [
                View::contiguous(g.tq, g.h, g.d),
                View::contiguous(g.tk, g.h, g.d),
                View::contiguous(g.tk, g.h, g.d),
            ],
        };
        with_strided(q, |qd, ql| {
            with_strided(k, |kd, kl| {
                with_strided(v, |vd, vl| {
                    let data = [
                        (qd, View::of(ql, "q")?),
                        (kd, View::of(kl, "k")?),
                        (vd, View::of(vl, "v")?),
                    ];
                    cpu::with_data(grad, "attention", |dout| {
                        backward(&g, data, &probs, dout, &grads)
                    })
                })
            })
        })?;
        Ok((
            Some(cpu::tensor(dq, q.shape())?),
            Some(cpu::tensor(dk, k.shape())?),
            Some(cpu::tensor(dv, v.shape())?),
        ))
    }
}

pub(crate) fn keep_flags(
    mask: &AttentionMask,
    batch: usize,
    keys: usize,
) -> Result<Option<Vec<u8>>> {
    let Some(kp) = &mask.key_padding else {
        return Ok(None);
    };
    if kp.dims() != [batch, keys] {
        bail!(
            "attention: key padding mask is {:?}, expected [{batch}, {keys}]",
            kp.dims()
        );
    }
    Ok(Some(kp.ne(0.0)?.flatten_all()?.to_vec1::<u8>()?))
}

/// The mask's dropout, if it drops anything; a probability outside [0, 1) is an error.
pub(crate) fn checked_dropout(mask: &AttentionMask) -> Result<Option<AttentionDropout>> {
    match mask.dropout {
        Some(d) if !(0.0..1.0).contains(&d.p) => {
            bail!("attention: dropout probability {} is not in [0, 1)", d.p)
        }
        Some(d) if d.p > 0.0 => Ok(Some(d)),
        _ => Ok(None),
    }
}

fn weights_tensor(probs: &Arc<Mutex<Vec<f32>>>, g: (usize, usize, usize, usize)) -> Result<Tensor> {
    cpu::tensor(probs.lock().expect("probs lock").clone(), g)
}

/// Attention over `q: [B, Tq, H, D]`, `k, v: [B, Tk, H, D]` (any strides with a contiguous last dim).
/// Returns the output `[B, Tq, H, D]` and, if `with_weights`, the probabilities `[B, H, Tq, Tk]`
/// (a plain tensor for inspection: gradients do not flow through it).
pub fn attention_with_weights(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    with_weights: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (b, tq, h, d) = q.dims4()?;
    let (bk, tk, hk, dk) = k.dims4()?;
    if (bk, hk, dk) != (b, h, d) || v.dims() != k.dims() {
        bail!(
            "attention: q {:?}, k {:?} and v {:?} do not fit together",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if !q.device().is_cpu() || q.dtype() != DType::F32 {
        return attention_composed(q, k, v, mask, with_weights);
    }
    let probs = Arc::new(Mutex::new(Vec::new()));
    let op = AttentionOp {
        heads: h,
        causal: mask.causal,
        query_offset: mask.query_offset,
        scale: mask.scale.map(|s| s as f32),
        keep: keep_flags(mask, b, tk)?,
        dropout: checked_dropout(mask)?,
        probs: probs.clone(),
    };
    let contiguous_last = |t: &Tensor| {
        if t.stride()[3] == 1 {
            Ok(t.clone())
        } else {
            t.contiguous()
        }
    };
    let out = contiguous_last(q)?.apply_op3(&contiguous_last(k)?, &contiguous_last(v)?, op)?;
    let weights = if with_weights {
        Some(weights_tensor(&probs, (b, h, tq, tk))?)
    } else {
        None
    };
    Ok((out, weights))
}

/// [`attention_with_weights`] without the weights.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
    Ok(attention_with_weights(q, k, v, mask, false)?.0)
}

/// Self-attention on the packed output of a fused q/k/v projection, `qkv: [B, T, 3·C]`, split into
/// `heads` heads. Returns `[B, T, C]` (heads concatenated) and optionally the weights `[B, H, T, T]`.
pub fn self_attention(
    qkv: &Tensor,
    heads: usize,
    mask: &AttentionMask,
    with_weights: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (b, t, c3) = qkv.dims3()?;
    if heads == 0 || c3 % (3 * heads) != 0 {
        bail!("self_attention: width {c3} is not 3 × heads ({heads}) × head_dim");
    }
    let d = c3 / 3 / heads;
    if !qkv.device().is_cpu() || qkv.dtype() != DType::F32 {
        let qkv = qkv.reshape((b, t, 3, heads, d))?;
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2);
        let (out, w) = attention_composed(&part(0)?, &part(1)?, &part(2)?, mask, with_weights)?;
        return Ok((out.reshape((b, t, heads * d))?, w));
    }
    let probs = Arc::new(Mutex::new(Vec::new()));
    let op = AttentionOp {
        heads,
        causal: mask.causal,
        query_offset: mask.query_offset,
        scale: mask.scale.map(|s| s as f32),
        keep: keep_flags(mask, b, t)?,
        dropout: checked_dropout(mask)?,
        probs: probs.clone(),
    };
    let out = qkv.contiguous()?.apply_op1(op)?;
    let weights = if with_weights {
        Some(weights_tensor(&probs, (b, heads, t, t))?)
    } else {
        None
    };
    Ok((out, weights))
}

/// The composed candle expression the fused attention replaces.
pub fn attention_composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    with_weights: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let p = attention_probs(q, k, mask)?;
    let weighed = match mask.dropout {
        Some(d) if d.p > 0.0 => crate::dropout::dropout_composed(&p, d.p, d.seed)?,
        _ => p.clone(),
    };
    let out = weighted_values(&weighed, v)?;
    Ok((out, if with_weights { Some(p) } else { None }))
}

/// The attention probabilities `[B, H, Tq, Tk]` of `q: [B, Tq, H, D]` over `k: [B, Tk, H, D]`,
/// composed and differentiable: for what must touch them before they weigh the values (dropout on
/// attention probabilities in training).
pub fn attention_probs(q: &Tensor, k: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
    let (b, tq, _, d) = q.dims4()?;
    let tk = k.dim(1)?;
    let scale = mask.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let q = q.transpose(1, 2)?.contiguous()?;
    let k = k.transpose(1, 2)?.contiguous()?;
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let mut keep = Tensor::ones((b, 1, tq, tk), DType::U8, q.device())?;
    if mask.causal {
        let allowed: Vec<u8> = (0..tq)
            .flat_map(|i| (0..tk).map(move |j| u8::from(j <= mask.query_offset + i)))
            .collect();
        keep = keep.broadcast_mul(&Tensor::from_vec(allowed, (1, 1, tq, tk), q.device())?)?;
    }
    if let Some(kp) = &mask.key_padding {
        keep = keep.broadcast_mul(&kp.ne(0.0)?.reshape((b, 1, 1, tk))?)?;
    }
    crate::softmax::softmax_masked(&scores, &keep)
}

/// `p v` for probabilities `p: [B, H, Tq, Tk]` and values `v: [B, Tk, H, D]`, as `[B, Tq, H, D]`.
pub fn weighted_values(p: &Tensor, v: &Tensor) -> Result<Tensor> {
    p.matmul(&v.transpose(1, 2)?.contiguous()?)?.transpose(1, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{assert_close, check_gradients, check_parity, random_tensor, GradCheck};
    use candle_core::Device;

    fn padding() -> Tensor {
        Tensor::from_vec(vec![1u8, 1, 1, 1, 1, 1, 1, 0, 0, 0], (2, 5), &Device::Cpu).unwrap()
    }

    /// With dropout on the probabilities, the mask fixed by its seed: finite differences agree.
    #[test]
    fn gradients_with_dropout() -> Result<()> {
        let q = random_tensor(&[2, 5, 2, 3], 11)?;
        let k = random_tensor(&[2, 5, 2, 3], 12)?;
        let v = random_tensor(&[2, 5, 2, 3], 13)?;
        let mask = AttentionMask {
            key_padding: Some(padding()),
            dropout: Some(AttentionDropout { p: 0.4, seed: 3 }),
            ..Default::default()
        };
        check_gradients(
            &|t| attention(&t[0], &t[1], &t[2], &mask),
            &[q, k, v],
            GradCheck::default(),
        )
    }

    #[test]
    fn gradients_causal_and_padded() -> Result<()> {
        let q = random_tensor(&[2, 5, 2, 3], 1)?;
        let k = random_tensor(&[2, 5, 2, 3], 2)?;
        let v = random_tensor(&[2, 5, 2, 3], 3)?;
        for causal in [false, true] {
            let mask = AttentionMask {
                causal,
                key_padding: Some(padding()),
                ..Default::default()
            };
            check_gradients(
                &move |t| attention(&t[0], &t[1], &t[2], &mask),
                &[q.clone(), k.clone(), v.clone()],
                GradCheck::default(),
            )?;
        }
        Ok(())
    }

    #[test]
    fn packed_self_attention_gradients() -> Result<()> {
        let qkv = random_tensor(&[2, 5, 12], 4)?;
        let mask = AttentionMask {
            causal: true,
            key_padding: Some(padding()),
            ..Default::default()
        };
        check_gradients(
            &move |t| Ok(self_attention(&t[0], 2, &mask, false)?.0),
            &[qkv],
            GradCheck::default(),
        )
    }

    #[test]
    fn parity_with_composed_on_strided_inputs() -> Result<()> {
        // q/k/v as strided views into one projection, like a transformer block produces them.
        let (b, t, h, d) = (3, 17, 4, 8);
        let qkv = random_tensor(&[b, t, 3 * h * d], 5)?;
        let kp = Tensor::from_vec(
            (0..b * t)
                .map(|i| u8::from(i % t < t - i / t * 3))
                .collect::<Vec<_>>(),
            (b, t),
            &Device::Cpu,
        )?;
        let drops = [None, Some(AttentionDropout { p: 0.3, seed: 9 })];
        for (causal, dropout) in [false, true]
            .into_iter()
            .flat_map(|c| drops.map(|d| (c, d)))
        {
            let mask = AttentionMask {
                causal,
                key_padding: Some(kp.clone()),
                dropout,
                ..Default::default()
            };
            let m2 = mask.clone();
            let split =
                move |x: &Tensor, i: usize| x.reshape((b, t, 3, h, d))?.narrow(2, i, 1)?.squeeze(2);
            check_parity(
                &move |x| {
                    attention(
                        &split(&x[0], 0)?,
                        &split(&x[0], 1)?,
                        &split(&x[0], 2)?,
                        &mask,
                    )
                },
                &move |x| {
                    Ok(attention_composed(
                        &split(&x[0], 0)?,
                        &split(&x[0], 1)?,
                        &split(&x[0], 2)?,
                        &m2,
                        false,
                    )?
                    .0)
                },
                std::slice::from_ref(&qkv),
                1e-5,
            )?;
            let mask = AttentionMask {
                causal,
                key_padding: Some(kp.clone()),
                ..Default::default()
            };
            let m2 = mask.clone();
            check_parity(
                &move |x| Ok(self_attention(&x[0], h, &mask, false)?.0),
                &move |x| {
                    attention_composed(
                        &split(&x[0], 0)?,
                        &split(&x[0], 1)?,
                        &split(&x[0], 2)?,
                        &m2,
                        false,
                    )?
                    .0
                    .reshape((b, t, h * d))
                },
                std::slice::from_ref(&qkv),
                1e-5,
            )?;
        }
        Ok(())
    }

    #[test]
    fn weights_are_returned_and_rows_sum_to_one() -> Result<()> {
        let qkv = random_tensor(&[1, 6, 12], 6)?;
        let mask = AttentionMask {
            causal: true,
            ..Default::default()
        };
        let (_, w) = self_attention(&qkv, 2, &mask, true)?;
        let w = w.expect("weights");
        assert_eq!(w.dims(), [1, 2, 6, 6]);
        let sums = w.sum(3)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
        // Causal: nothing above the diagonal.
        let w = w.flatten_all()?.to_vec1::<f32>()?;
        for (m, i, j) in
            (0..2).flat_map(|m| (0..6).flat_map(move |i| (0..6).map(move |j| (m, i, j))))
        {
            if j > i {
                assert_eq!(w[m * 36 + i * 6 + j], 0.0);
            }
        }
        Ok(())
    }

    #[test]
    fn kv_cache_offset_matches_full_causal() -> Result<()> {
        // The last query attending to a full key set with query_offset = T-1 equals the last row of the
        // full causal attention.
        let (b, t, h, d) = (2, 7, 2, 4);
        let q = random_tensor(&[b, t, h, d], 7)?;
        let k = random_tensor(&[b, t, h, d], 8)?;
        let v = random_tensor(&[b, t, h, d], 9)?;
        let full = attention(
            &q,
            &k,
            &v,
            &AttentionMask {
                causal: true,
                ..Default::default()
            },
        )?;
        let last_q = q.narrow(1, t - 1, 1)?;
        let step = attention(
            &last_q,
            &k,
            &v,
            &AttentionMask {
                causal: true,
                query_offset: t - 1,
                ..Default::default()
            },
        )?;
        assert_close(&step, &full.narrow(1, t - 1, 1)?, 1e-6, "cached step")
    }
}
