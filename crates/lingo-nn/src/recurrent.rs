//! Multi-layer, optionally bidirectional recurrent networks (Elman RNN, LSTM, GRU) over padded batches.
//!
//! Parameters carry PyTorch's names and layouts (`weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`,
//! `bias_hh_l{k}`, `…_reverse`), so a `torch.nn.LSTM` state dict loads unchanged. Per layer and
//! direction the input projections of all time steps are one matrix product; each step is then one
//! `h Wₕₕᵀ + bₕₕ` product and one fused cell op ([`lingo_kernels::recurrent_step`]). Sequences shorter than
//! the batch's longest are masked so that padding never changes a real position's result: their state
//! freezes after their last token (forward) or stays at the initial state until their last token
//! (reverse), and their padded outputs are zero — what PyTorch's packed sequences give.

use crate::dropout::Dropout;
use crate::params::{Init, ParamPath};
use crate::Ctx;
use candle_core::{bail, DType, Result, Tensor};
use lingo_kernels::{Cell, SharedGrad};
use serde::{Deserialize, Serialize};

/// The recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CellKind {
    /// Elman RNN with tanh.
    Rnn,
    /// Elman RNN with ReLU.
    RnnRelu,
    #[default]
    Lstm,
    Gru,
}

impl CellKind {
    fn kernel(self) -> Cell {
        match self {
            CellKind::Rnn => Cell::RnnTanh,
            CellKind::RnnRelu => Cell::RnnRelu,
            CellKind::Lstm => Cell::Lstm,
            CellKind::Gru => Cell::Gru,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecurrentConfig {
    pub cell: CellKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    /// Dropout on the outputs of every layer but the last (training only), as in PyTorch.
    pub dropout: f32,
    pub bias: bool,
}

impl Default for RecurrentConfig {
    fn default() -> Self {
        RecurrentConfig {
            cell: CellKind::Lstm,
            input_size: 0,
            hidden_size: 0,
            num_layers: 1,
            bidirectional: false,
            dropout: 0.0,
            bias: true,
        }
    }
}

impl RecurrentConfig {
    pub fn directions(&self) -> usize {
        1 + usize::from(self.bidirectional)
    }
    /// Width of each output position: `directions × hidden_size`.
    pub fn output_size(&self) -> usize {
        self.directions() * self.hidden_size
    }
}

#[derive(Clone, Debug)]
struct Direction {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Option<Tensor>,
    b_hh: Option<Tensor>,
    reverse: bool,
}

/// What a recurrent network returns.
#[derive(Clone, Debug)]
pub struct RecurrentOutput {
    /// `[batch, time, directions·hidden]`, zero at padded positions.
    pub output: Tensor,
    /// Final hidden state of every layer and direction, `[layers·directions, batch, hidden]`.
    pub h_n: Tensor,
    /// Final cell state (LSTM only), same shape as `h_n`.
    pub c_n: Option<Tensor>,
}

#[derive(Clone, Debug)]
pub struct Recurrent {
    pub config: RecurrentConfig,
    layers: Vec<Vec<Direction>>,
    dropout: Dropout,
}

impl Recurrent {
    /// Weights drawn from `U(−1/√hidden, 1/√hidden)`, PyTorch's default.
    pub fn new(p: &ParamPath, config: RecurrentConfig) -> Result<Self> {
        let c = &config;
        if c.input_size == 0 || c.hidden_size == 0 || c.num_layers == 0 {
            bail!("recurrent layer: input_size, hidden_size and num_layers must be positive, got {c:?}");
        }
        let gates = c.cell.kernel().gates() * c.hidden_size;
        let init = Init::Uniform(1.0 / (c.hidden_size as f32).sqrt());
        let mut layers = Vec::new();
        for k in 0..c.num_layers {
            let input = if k == 0 {
                c.input_size
            } else {
                c.output_size()
            };
            let mut dirs = Vec::new();
            for reverse in [false, true].into_iter().take(c.directions()) {
                let suffix = if reverse { "_reverse" } else { "" };
                let bias = |name: &str| -> Result<Option<Tensor>> {
                    if c.bias {
                        Ok(Some(p.get(
                            &format!("{name}_l{k}{suffix}"),
                            &[gates],
                            init,
                        )?))
                    } else {
                        Ok(None)
                    }
                };
                dirs.push(Direction {
                    w_ih: p.get(&format!("weight_ih_l{k}{suffix}"), &[gates, input], init)?,
                    w_hh: p.get(
                        &format!("weight_hh_l{k}{suffix}"),
                        &[gates, c.hidden_size],
                        init,
                    )?,
                    b_ih: bias("bias_ih")?,
                    b_hh: bias("bias_hh")?,
                    reverse,
                });
            }
            layers.push(dirs);
        }
        Ok(Recurrent {
            dropout: Dropout::new(c.dropout),
            config,
            layers,
        })
    }

    /// Runs over `x: [batch, time, input_size]`. `lengths` gives each sequence's real length (all
    /// `time` if `None`); `initial` the starting state `[layers·directions, batch, width]` of `h` (and
    /// `c` for LSTM), zero if `None`.
    pub fn forward(
        &self,
        x: &Tensor,
        lengths: Option<&[usize]>,
        initial: Option<(&Tensor, Option<&Tensor>)>,
        ctx: &mut Ctx,
    ) -> Result<RecurrentOutput> {
        let c = &self.config;
        let (b, t, e) = x.dims3()?;
        if e != c.input_size {
            bail!(
                "recurrent layer expects inputs of width {}, got {e}",
                c.input_size
            );
        }
        if let Some(l) = lengths {
            if l.len() != b || l.iter().any(|&n| n > t) {
                bail!("lengths {l:?} do not fit a batch of {b} sequences of at most {t} steps");
            }
        }
        let cell = c.cell.kernel();
        let n = c.hidden_size;
        let active_at = |step: usize| -> Vec<u8> {
            lengths.map_or_else(Vec::new, |l| {
                l.iter().map(|&len| u8::from(step < len)).collect()
            })
        };
        // [time, batch, 1]: 1 at real positions.
        let time_mask = match lengths {
            Some(l) => {
                let m: Vec<f32> = (0..t)
                    .flat_map(|s| l.iter().map(move |&len| if s < len { 1.0 } else { 0.0 }))
                    .collect();
                Some(Tensor::from_vec(m, (t, b, 1), x.device())?)
            }
            None => None,
        };
        // Time-major, so each step's slice is contiguous.
        let mut layer_input = x.transpose(0, 1)?.contiguous()?;
        let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
        for (k, dirs) in self.layers.iter().enumerate() {
            let mut outputs = Vec::new();
            for (d, dir) in dirs.iter().enumerate() {
                let index = k * dirs.len() + d;
                // The input projections of every step in one matrix product; the step ops read their
                // slice of it and, like the recurrent weights, sum their gradients in place.
                let xg = lingo_kernels::linear(&layer_input, &dir.w_ih, dir.b_ih.as_ref())?;
                let dxg = SharedGrad::chained(&xg);
                let dw_hh = SharedGrad::chained(&dir.w_hh);
                let db_hh = dir.b_hh.as_ref().map(SharedGrad::chained);
                let mut state = match initial {
                    Some((h0, c0)) => {
                        let h = h0.get(index)?;
                        match (cell, c0) {
                            (Cell::Lstm, Some(c0)) => Tensor::cat(&[h, c0.get(index)?], 1)?,
                            (Cell::Lstm, None) => Tensor::cat(&[h.clone(), h.zeros_like()?], 1)?,
                            _ => h,
                        }
                    }
                    None => Tensor::zeros((b, cell.state_width() * n), DType::F32, x.device())?,
                };
                let mut hs = vec![None; t];
                let steps: Vec<usize> = if dir.reverse {
                    (0..t).rev().collect()
                } else {
                    (0..t).collect()
                };
                for s in steps {
                    let h = state.narrow(1, 0, n)?;
                    let hg = lingo_kernels::linear_shared(
                        &h,
                        &dir.w_hh,
                        dir.b_hh.as_ref(),
                        &dw_hh,
                        db_hh.as_ref(),
                    )?;
                    state = lingo_kernels::recurrent_step_at(
                        cell,
                        &xg,
                        s,
                        &dxg,
                        &hg,
                        &state,
                        &active_at(s),
                    )?;
                    hs[s] = Some(state.narrow(1, 0, n)?);
                }
                let hs: Vec<Tensor> = hs.into_iter().map(|h| h.expect("every step ran")).collect();
                let mut out = Tensor::stack(&hs, 0)?;
                if let Some(m) = &time_mask {
                    out = out.broadcast_mul(m)?;
                }
                outputs.push(out);
                h_n.push(state.narrow(1, 0, n)?);
                if cell == Cell::Lstm {
                    c_n.push(state.narrow(1, n, n)?);
                }
            }
            layer_input = Tensor::cat(&outputs, 2)?;
            if k + 1 < self.layers.len() {
                layer_input = self.dropout.forward(&layer_input, ctx)?;
            }
        }
        Ok(RecurrentOutput {
            output: layer_input.transpose(0, 1)?.contiguous()?,
            h_n: Tensor::stack(&h_n, 0)?,
            c_n: if c_n.is_empty() {
                None
            } else {
                Some(Tensor::stack(&c_n, 0)?)
            },
        })
    }
}

impl Recurrent {
    /// Zero state for [`Recurrent::step`]: one `[batch, width]` tensor per layer (`[h | c]` for LSTM).
    pub fn zero_state(&self, batch: usize, device: &candle_core::Device) -> Result<Vec<Tensor>> {
        let width = self.config.cell.kernel().state_width() * self.config.hidden_size;
        (0..self.layers.len())
            .map(|_| Tensor::zeros((batch, width), DType::F32, device))
            .collect()
    }

    /// The hidden part `h` of a layer's state.
    pub fn hidden_of(&self, state: &Tensor) -> Result<Tensor> {
        state.narrow(1, 0, self.config.hidden_size)
    }

    /// One time step of a unidirectional network (see [`Stepper::step`]); to step through a sequence
    /// that is trained on, use one [`Recurrent::stepper`] for all its steps.
    pub fn step(
        &self,
        x: &Tensor,
        state: &[Tensor],
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        self.stepper().step(x, state, ctx)
    }

    /// Prepares the network for stepping through one sequence, summing its weight gradients across
    /// the steps in place. Every step must feed the loss (as every step of a decoder does).
    pub fn stepper(&self) -> Stepper<'_> {
        let sums = self
            .layers
            .iter()
            .map(|dirs| {
                let d = &dirs[0];
                WeightSums {
                    w_ih: SharedGrad::new(&d.w_ih),
                    b_ih: d.b_ih.as_ref().map(SharedGrad::new),
                    w_hh: SharedGrad::new(&d.w_hh),
                    b_hh: d.b_hh.as_ref().map(SharedGrad::new),
                }
            })
            .collect();
        Stepper { rnn: self, sums }
    }
}

/// A unidirectional [`Recurrent`] stepped one token at a time (decoders); see
/// [`Recurrent::stepper`].
pub struct Stepper<'a> {
    rnn: &'a Recurrent,
    sums: Vec<WeightSums>,
}

/// The gradient sums of one layer's weights.
struct WeightSums {
    w_ih: SharedGrad,
    b_ih: Option<SharedGrad>,
    w_hh: SharedGrad,
    b_hh: Option<SharedGrad>,
}

impl Stepper<'_> {
    /// One time step: `x: [batch, input_size]`, one state per layer. Returns the top layer's output
    /// `[batch, hidden]` and the new states.
    pub fn step(
        &self,
        x: &Tensor,
        state: &[Tensor],
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let rnn = self.rnn;
        if rnn.config.bidirectional {
            bail!("a bidirectional network cannot be stepped one token at a time");
        }
        if state.len() != rnn.layers.len() {
            bail!(
                "{} layer states for a {}-layer network",
                state.len(),
                rnn.layers.len()
            );
        }
        let cell = rnn.config.cell.kernel();
        let mut input = x.clone();
        let mut next = Vec::with_capacity(state.len());
        for (k, ((dirs, s), sums)) in rnn.layers.iter().zip(state).zip(&self.sums).enumerate() {
            let dir = &dirs[0];
            let xg = lingo_kernels::linear_shared(
                &input,
                &dir.w_ih,
                dir.b_ih.as_ref(),
                &sums.w_ih,
                sums.b_ih.as_ref(),
            )?;
            let hg = lingo_kernels::linear_shared(
                &rnn.hidden_of(s)?,
                &dir.w_hh,
                dir.b_hh.as_ref(),
                &sums.w_hh,
                sums.b_hh.as_ref(),
            )?;
            let s2 = lingo_kernels::recurrent_step(cell, &xg, &hg, s, &[])?;
            input = rnn.hidden_of(&s2)?;
            if k + 1 < rnn.layers.len() {
                input = rnn.dropout.forward(&input, ctx)?;
            }
            next.push(s2);
        }
        Ok((input, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::read_safetensors;
    use crate::ParamStore;
    use candle_core::Device;
    use lingo_kernels::gradcheck::{assert_close, random_tensor};

    fn fixture(name: &str) -> std::collections::HashMap<String, Tensor> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../../tests/fixtures/rnn/{name}.safetensors"));
        read_safetensors(&path, &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_pytorch_on_a_padded_batch() -> Result<()> {
        for (name, cell) in [
            ("lstm", CellKind::Lstm),
            ("gru", CellKind::Gru),
            ("rnn_tanh", CellKind::Rnn),
            ("rnn_relu", CellKind::RnnRelu),
        ] {
            let f = fixture(name);
            let config = RecurrentConfig {
                cell,
                input_size: 4,
                hidden_size: 6,
                num_layers: 2,
                bidirectional: true,
                ..Default::default()
            };
            let store = ParamStore::new(0, &Device::Cpu);
            let rnn = Recurrent::new(&store.root(), config)?;
            store.load_from(&f, name)?;
            let lengths: Vec<usize> = f["lengths"]
                .to_vec1::<i64>()?
                .into_iter()
                .map(|l| l as usize)
                .collect();
            let out = rnn.forward(&f["input"], Some(&lengths), None, &mut Ctx::eval())?;
            assert_close(&out.output, &f["output"], 1e-5, &format!("{name} output"))?;
            assert_close(&out.h_n, &f["h_n"], 1e-5, &format!("{name} h_n"))?;
            if let Some(c_n) = &out.c_n {
                assert_close(c_n, &f["c_n"], 1e-5, &format!("{name} c_n"))?;
            }
        }
        Ok(())
    }

    #[test]
    fn a_sequence_alone_equals_the_same_sequence_in_a_padded_batch() -> Result<()> {
        for cell in [CellKind::Lstm, CellKind::Gru] {
            let config = RecurrentConfig {
                cell,
                input_size: 3,
                hidden_size: 5,
                num_layers: 2,
                bidirectional: true,
                ..Default::default()
            };
            let store = ParamStore::new(1, &Device::Cpu);
            let rnn = Recurrent::new(&store.root(), config)?;
            let batch = random_tensor(&[2, 7, 3], 3)?;
            let lengths = [7, 4];
            let padded = rnn.forward(&batch, Some(&lengths), None, &mut Ctx::eval())?;
            let alone = rnn.forward(
                &batch.narrow(0, 1, 1)?.narrow(1, 0, 4)?,
                None,
                None,
                &mut Ctx::eval(),
            )?;
            assert_close(
                &padded.output.narrow(0, 1, 1)?.narrow(1, 0, 4)?,
                &alone.output,
                1e-6,
                "outputs",
            )?;
            assert_close(
                &padded.h_n.narrow(1, 1, 1)?,
                &alone.h_n,
                1e-6,
                "final states",
            )?;
            let pad = padded
                .output
                .narrow(0, 1, 1)?
                .narrow(1, 4, 3)?
                .abs()?
                .sum_all()?
                .to_scalar::<f32>()?;
            assert_eq!(pad, 0.0, "padded outputs are zero");
        }
        Ok(())
    }

    #[test]
    fn stepping_equals_running_the_sequence() -> Result<()> {
        for cell in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
            let config = RecurrentConfig {
                cell,
                input_size: 3,
                hidden_size: 5,
                num_layers: 2,
                ..Default::default()
            };
            let store = ParamStore::new(5, &Device::Cpu);
            let rnn = Recurrent::new(&store.root(), config)?;
            let x = random_tensor(&[2, 4, 3], 6)?;
            let full = rnn.forward(&x, None, None, &mut Ctx::eval())?;
            let mut state = rnn.zero_state(2, &Device::Cpu)?;
            for t in 0..4 {
                let (out, next) =
                    rnn.step(&x.narrow(1, t, 1)?.squeeze(1)?, &state, &mut Ctx::eval())?;
                assert_close(
                    &out,
                    &full.output.narrow(1, t, 1)?.squeeze(1)?,
                    1e-6,
                    "step output",
                )?;
                state = next;
            }
        }
        Ok(())
    }

    #[test]
    fn every_parameter_receives_a_gradient() -> Result<()> {
        for cell in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
            let config = RecurrentConfig {
                cell,
                input_size: 3,
                hidden_size: 4,
                num_layers: 2,
                bidirectional: true,
                ..Default::default()
            };
            let store = ParamStore::new(2, &Device::Cpu);
            let rnn = Recurrent::new(&store.root(), config)?;
            let out = rnn.forward(
                &random_tensor(&[2, 5, 3], 4)?,
                Some(&[5, 3]),
                None,
                &mut Ctx::eval(),
            )?;
            let loss = (out.output.sqr()?.sum_all()? + out.h_n.sum_all()?)?;
            let missing = store.without_gradient(&loss.backward()?)?;
            assert!(missing.is_empty(), "{cell:?}: no gradient for {missing:?}");
        }
        Ok(())
    }
}
