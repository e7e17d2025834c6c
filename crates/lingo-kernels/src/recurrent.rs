//! One time step of the recurrent cells (LSTM, GRU, Elman RNN) as fused ops.
//!
//! A recurrent layer computes the input projections of every time step in one matrix product, and per
//! step one `h Wₕₕᵀ + bₕₕ` product; everything else of the step — the gate non-linearities, the state
//! update and the padding mask — is this one op, forward and backward, instead of a dozen small ones.
//! Gate order and equations are PyTorch's, so its weights load unchanged:
//!
//! - LSTM, gates `i, f, g, o`: `c' = f⊙c + i⊙g`, `h' = o⊙tanh(c')`; the state is `[h | c]`.
//! - GRU, gates `r, z, n`: `n = tanh(xₙ + r⊙hₙ)`, `h' = (1−z)⊙n + z⊙h`.
//! - RNN: `h' = tanh(x + h)` or `relu(x + h)`.
//!
//! `x` are the input projections of this step (`[batch, gates·hidden]`), `hg` the hidden projections.
//! Rows whose `active` flag is 0 (a sequence that has ended, or not yet started in the reverse
//! direction) keep their state unchanged and pass its gradient straight through.

use crate::shared_grad::{self, Reader, SharedGrad};
use crate::{cpu, math};
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Which cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Lstm,
    Gru,
    RnnTanh,
    RnnRelu,
}

impl Cell {
    /// Gate blocks in the projections: 4 for LSTM, 3 for GRU, 1 for RNN.
    pub fn gates(&self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::RnnTanh | Cell::RnnRelu => 1,
        }
    }
    /// Width of the carried state in units of `hidden`: LSTM carries `[h | c]`.
    pub fn state_width(&self) -> usize {
        if *self == Cell::Lstm {
            2
        } else {
            1
        }
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + math::exp(-x))
}

/// The activated LSTM gates `(i, f, g, o)` of unit `j`, shared by the forward and the backward (which
/// recomputes them rather than storing them).
#[inline(always)]
fn lstm_gates(x: &[f32], hg: &[f32], n: usize, j: usize) -> (f32, f32, f32, f32) {
    let i = sigmoid(x[j] + hg[j]);
    let f = sigmoid(x[n + j] + hg[n + j]);
    let g = math::tanh(x[2 * n + j] + hg[2 * n + j]);
    let o = sigmoid(x[3 * n + j] + hg[3 * n + j]);
    (i, f, g, o)
}

struct StepOp {
    cell: Cell,
    hidden: usize,
    /// One flag per batch row; empty means every row is active.
    active: Vec<u8>,
    /// Set when `x` holds the projections of every time step, `[time, batch, gates·hidden]`: the
    /// step this op reads, and where its gradient is summed.
    at: Option<(usize, Reader)>,
}

impl StepOp {
    fn is_active(&self, row: usize) -> bool {
        self.active.is_empty() || self.active[row] != 0
    }

    /// New state of one row.
    #[inline(always)]
    fn forward_row(&self, x: &[f32], hg: &[f32], s: &[f32], out: &mut [f32]) {
        let n = self.hidden;
        match self.cell {
            Cell::Lstm => {
                let (h_out, c_out) = out.split_at_mut(n);
                let c = &s[n..];
                for j in 0..n {
                    let (i, f, g, o) = lstm_gates(x, hg, n, j);
                    let c2 = f * c[j] + i * g;
                    c_out[j] = c2;
                    h_out[j] = o * math::tanh(c2);
                }
            }
            Cell::Gru => {
                for j in 0..n {
                    let r = sigmoid(x[j] + hg[j]);
                    let z = sigmoid(x[n + j] + hg[n + j]);
                    let nn = math::tanh(x[2 * n + j] + r * hg[2 * n + j]);
                    out[j] = (1.0 - z) * nn + z * s[j];
                }
            }
            Cell::RnnTanh => {
                for j in 0..n {
                    out[j] = math::tanh(x[j] + hg[j]);
                }
            }
            Cell::RnnRelu => {
                for j in 0..n {
                    out[j] = (x[j] + hg[j]).max(0.0);
                }
            }
        }
    }

    /// Gradients of one row: `dx` (gate pre-activations, input side), `dhg` (hidden side), `ds` (state).
    /// `xs` are the row's `[x, hg, state]`.
    #[inline(always)]
    fn backward_row(
        &self,
        xs: [&[f32]; 3],
        dout: &[f32],
        dx: &mut [f32],
        dhg: &mut [f32],
        ds: &mut [f32],
    ) {
        let [x, hg, s] = xs;
        let n = self.hidden;
        match self.cell {
            Cell::Lstm => {
                let (dh, dc) = dout.split_at(n);
                let c = &s[n..];
                for j in 0..n {
                    let (i, f, g, o) = lstm_gates(x, hg, n, j);
                    let c2 = f * c[j] + i * g;
                    let tc = math::tanh(c2);
                    let dtc = dh[j] * o * (1.0 - tc * tc) + dc[j];
                    dx[j] = dtc * g * i * (1.0 - i);
                    dx[n + j] = dtc * c[j] * f * (1.0 - f);
                    dx[2 * n + j] = dtc * i * (1.0 - g * g);
                    dx[3 * n + j] = dh[j] * tc * o * (1.0 - o);
                    ds[j] = 0.0; // h enters only through hg
                    ds[n + j] = dtc * f;
                }
                dhg.copy_from_slice(dx);
            }
            Cell::Gru => {
                for j in 0..n {
                    let r = sigmoid(x[j] + hg[j]);
                    let z = sigmoid(x[n + j] + hg[n + j]);
                    let hn = hg[2 * n + j];
                    let nn = math::tanh(x[2 * n + j] + r * hn);
                    let d = dout[j];
                    let dn = d * (1.0 - z) * (1.0 - nn * nn);
                    let dz = d * (s[j] - nn) * z * (1.0 - z);
                    let dr = dn * hn * r * (1.0 - r);
                    dx[j] = dr;
                    dx[n + j] = dz;
                    dx[2 * n + j] = dn;
                    dhg[j] = dr;
                    dhg[n + j] = dz;
                    dhg[2 * n + j] = dn * r;
                    ds[j] = d * z;
                }
            }
            Cell::RnnTanh | Cell::RnnRelu => {
                for j in 0..n {
                    let a = x[j] + hg[j];
                    let da = match self.cell {
                        Cell::RnnTanh => {
                            let t = math::tanh(a);
                            dout[j] * (1.0 - t * t)
                        }
                        _ => {
                            if a > 0.0 {
                                dout[j]
                            } else {
                                0.0
                            }
                        }
                    };
                    dx[j] = da;
                    dhg[j] = da;
                    ds[j] = 0.0;
                }
            }
        }
    }
}

impl StepOp {
    /// The rows of `x` this step reads (`len` elements).
    fn step_of<'a>(&self, x: &'a [f32], len: usize) -> &'a [f32] {
        match &self.at {
            Some((step, _)) => &x[step * len..(step + 1) * len],
            None => x,
        }
    }
}

// The cell arithmetic (exp, tanh, gates) compiled for the best instruction set this CPU has.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn forward_row(op: &StepOp, x: &[f32], hg: &[f32], s: &[f32], out: &mut [f32]) {
    op.forward_row(x, hg, s, out)
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn backward_row(
    op: &StepOp,
    xs: [&[f32]; 3],
    dout: &[f32],
    dx: &mut [f32],
    dhg: &mut [f32],
    ds: &mut [f32],
) {
    op.backward_row(xs, dout, dx, dhg, ds)
}

impl candle_core::CustomOp3 for StepOp {
    fn name(&self) -> &'static str {
        "lingo-recurrent-step"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        hs: &CpuStorage,
        hl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, hg, s) = (
            cpu::slice(xs, xl, self.name())?,
            cpu::slice(hs, hl, self.name())?,
            cpu::slice(ss, sl, self.name())?,
        );
        let (gw, sw) = (
            self.cell.gates() * self.hidden,
            self.cell.state_width() * self.hidden,
        );
        let x = self.step_of(x, hg.len());
        let mut out = s.to_vec();
        out.par_chunks_mut(sw)
            .enumerate()
            .with_min_len(8)
            .for_each(|(r, o)| {
                if self.is_active(r) {
                    forward_row(
                        self,
                        &x[r * gw..(r + 1) * gw],
                        &hg[r * gw..(r + 1) * gw],
                        &s[r * sw..(r + 1) * sw],
                        o,
                    );
                }
            });
        Ok((CpuStorage::F32(out), sl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        hg: &Tensor,
        s: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gw, sw) = (
            self.cell.gates() * self.hidden,
            self.cell.state_width() * self.hidden,
        );
        let rows = s.dim(0)?;
        let x_all = x;
        let x = &match &self.at {
            Some((step, _)) => x.get(*step)?,
            None => x.clone(),
        };
        let mut dx = vec![0f32; rows * gw];
        let mut dhg = vec![0f32; rows * gw];
        let mut ds = vec![0f32; rows * sw];
        cpu::with_data(x, self.name(), |x| {
            cpu::with_data(hg, self.name(), |hg| {
                cpu::with_data(s, self.name(), |s| {
                    cpu::with_data(grad, self.name(), |dout| {
                        dx.par_chunks_mut(gw)
                            .zip(dhg.par_chunks_mut(gw))
                            .zip(ds.par_chunks_mut(sw))
                            .enumerate()
                            .with_min_len(8)
                            .for_each(|(r, ((dx, dhg), ds))| {
                                let span = r * sw..(r + 1) * sw;
                                if self.is_active(r) {
                                    let g = r * gw..(r + 1) * gw;
                                    backward_row(
                                        self,
                                        [&x[g.clone()], &hg[g], &s[span.clone()]],
                                        &dout[span],
                                        dx,
                                        dhg,
                                        ds,
                                    );
                                } else {
                                    ds.copy_from_slice(&dout[span]);
                                }
                            })
                    })
                })
            })
        })????;
        let dx = match &self.at {
            Some((step, sum)) => {
                let at = step * dx.len();
                shared_grad::gradient(Some(sum), x_all, |buf| {
                    math::add_assign(&mut buf[at..at + dx.len()], &dx);
                    Ok(())
                })?
            }
            None => Some(cpu::tensor(dx, x.shape())?),
        };
        Ok((
            dx,
            Some(cpu::tensor(dhg, hg.shape())?),
            Some(cpu::tensor(ds, s.shape())?),
        ))
    }
}

/// One step of `cell`: `x` and `hg` are `[batch, gates·hidden]` projections, `state` is
/// `[batch, state_width·hidden]` (`[h | c]` for LSTM). `active` (one flag per row, empty = all)
/// freezes the state of finished rows. Returns the new state.
pub fn recurrent_step(
    cell: Cell,
    x: &Tensor,
    hg: &Tensor,
    state: &Tensor,
    active: &[u8],
) -> Result<Tensor> {
    apply(cell, x, None, hg, state, active)
}

/// [`recurrent_step`] reading step `step` of `xs: [time, batch, gates·hidden]`, the input projections
/// of a whole sequence (computed by one matrix product): the gradients of all steps are summed in
/// place into `dxs` instead of each step's slice growing into a full-size gradient.
pub fn recurrent_step_at(
    cell: Cell,
    xs: &Tensor,
    step: usize,
    dxs: &SharedGrad,
    hg: &Tensor,
    state: &Tensor,
    active: &[u8],
) -> Result<Tensor> {
    shared_grad::check_input(xs, "recurrent_step_at projections")?;
    if step >= xs.dim(0)? {
        bail!(
            "recurrent_step_at: step {step} of a {:?} sequence",
            xs.dims()
        );
    }
    apply(cell, xs, Some((step, dxs)), hg, state, active)
}

fn apply(
    cell: Cell,
    xs: &Tensor,
    at: Option<(usize, &SharedGrad)>,
    hg: &Tensor,
    state: &Tensor,
    active: &[u8],
) -> Result<Tensor> {
    let x = match at {
        Some((step, _)) => xs.get(step)?,
        None => xs.clone(),
    };
    let (b, sw) = state.dims2()?;
    let hidden = sw / cell.state_width();
    let gw = cell.gates() * hidden;
    if x.dims() != [b, gw] || hg.dims() != [b, gw] || sw % cell.state_width() != 0 {
        bail!(
            "recurrent_step ({cell:?}): x {:?} and hg {:?} must be [{b}, {gw}] for a state of {:?}",
            x.dims(),
            hg.dims(),
            state.dims()
        );
    }
    if !active.is_empty() && active.len() != b {
        bail!(
            "recurrent_step: {} activity flags for a batch of {b}",
            active.len()
        );
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return recurrent_step_composed(cell, &x, hg, state, active);
    }
    let op = StepOp {
        cell,
        hidden,
        active: active.to_vec(),
        at: at.map(|(step, sum)| (step, sum.reader())),
    };
    let x = if at.is_some() { xs } else { &x };
    x.contiguous()?
        .apply_op3(&hg.contiguous()?, &state.contiguous()?, op)
}

/// The composed candle expression of one step (the reference for tests and non-CPU devices).
pub fn recurrent_step_composed(
    cell: Cell,
    x: &Tensor,
    hg: &Tensor,
    state: &Tensor,
    active: &[u8],
) -> Result<Tensor> {
    let n = state.dim(1)? / cell.state_width();
    let part = |t: &Tensor, k: usize| t.narrow(1, k * n, n);
    let sig =
        |t: Tensor| candle_core::Tensor::ones_like(&t)?.broadcast_div(&(t.neg()?.exp()? + 1.0)?);
    let new = match cell {
        Cell::Lstm => {
            let a = (x + hg)?;
            let (i, f, g, o) = (
                sig(part(&a, 0)?)?,
                sig(part(&a, 1)?)?,
                part(&a, 2)?.tanh()?,
                sig(part(&a, 3)?)?,
            );
            let c = ((f * part(state, 1)?)? + (i * g)?)?;
            let h = (o * c.tanh()?)?;
            Tensor::cat(&[h, c], 1)?
        }
        Cell::Gru => {
            let r = sig((part(x, 0)? + part(hg, 0)?)?)?;
            let z = sig((part(x, 1)? + part(hg, 1)?)?)?;
            let nn = (part(x, 2)? + (r * part(hg, 2)?)?)?.tanh()?;
            let one_minus_z = z.affine(-1.0, 1.0)?;
            ((one_minus_z * nn)? + (z * state)?)?
        }
        Cell::RnnTanh => (x + hg)?.tanh()?,
        Cell::RnnRelu => (x + hg)?.relu()?,
    };
    if active.is_empty() {
        return Ok(new);
    }
    let m = Tensor::from_vec(
        active.iter().map(|&a| a as f32).collect::<Vec<_>>(),
        (active.len(), 1),
        x.device(),
    )?;
    new.broadcast_mul(&m)? + state.broadcast_mul(&m.affine(-1.0, 1.0)?)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, check_parity, random_tensor, GradCheck};

    const CELLS: [Cell; 4] = [Cell::Lstm, Cell::Gru, Cell::RnnTanh, Cell::RnnRelu];

    fn inputs(cell: Cell, b: usize, n: usize, seed: u64) -> Result<Vec<Tensor>> {
        let gw = cell.gates() * n;
        Ok(vec![
            (random_tensor(&[b, gw], seed)? * 1.5)?,
            random_tensor(&[b, gw], seed + 1)?,
            random_tensor(&[b, cell.state_width() * n], seed + 2)?,
        ])
    }

    #[test]
    fn gradients_of_every_cell_with_a_finished_row() -> Result<()> {
        for cell in CELLS {
            let active = vec![1u8, 0, 1];
            check_gradients(
                &move |t| recurrent_step(cell, &t[0], &t[1], &t[2], &active),
                &inputs(cell, 3, 5, 1)?,
                GradCheck::default(),
            )
            .map_err(|e| candle_core::Error::Msg(format!("{cell:?}: {e}")))?;
        }
        Ok(())
    }

    #[test]
    fn parity_with_composed() -> Result<()> {
        for cell in CELLS {
            let active: Vec<u8> = (0..37).map(|i| u8::from(i % 5 != 2)).collect();
            let a2 = active.clone();
            check_parity(
                &move |t| recurrent_step(cell, &t[0], &t[1], &t[2], &active),
                &move |t| recurrent_step_composed(cell, &t[0], &t[1], &t[2], &a2),
                &inputs(cell, 37, 19, 5)?,
                2e-5,
            )
            .map_err(|e| candle_core::Error::Msg(format!("{cell:?}: {e}")))?;
        }
        Ok(())
    }

    #[test]
    fn stepping_through_a_projected_sequence_sums_its_gradient() -> Result<()> {
        use candle_core::Var;
        let (t, b, n) = (3, 2, 4);
        let xs = Var::from_tensor(&random_tensor(&[t, b, 4 * n], 7)?)?;
        let hg = random_tensor(&[b, 4 * n], 8)?;
        // The loss reads the state after step 1 only: step 2 never runs its backward, and the chained
        // sum still hands its total over (from step 0).
        let run = |shared: bool| -> Result<Tensor> {
            let sum = SharedGrad::chained(&xs);
            let mut states = vec![random_tensor(&[b, 2 * n], 9)?];
            for step in 0..t {
                let state = states.last().expect("initial state");
                states.push(if shared {
                    recurrent_step_at(Cell::Lstm, &xs, step, &sum, &hg, state, &[1, 0])?
                } else {
                    recurrent_step(Cell::Lstm, &xs.get(step)?, &hg, state, &[1, 0])?
                });
            }
            let grads = states[2].sqr()?.sum_all()?.backward()?;
            Ok(grads.get(&xs).expect("gradient").clone())
        };
        crate::gradcheck::assert_close(&run(true)?, &run(false)?, 1e-6, "dxs")
    }
}
