//! The recurrent language model (Mikolov et al. 2010; Zaremba et al. 2014) and its one-to-many form.
//!
//! Word embeddings → dropout → a multi-layer LSTM/GRU/RNN → dropout → a linear layer to the
//! vocabulary, predicting each next word. It is trained on a continuous stream by truncated
//! back-propagation through time: the state at the end of one window starts the next (without
//! its gradient), so the model conditions on everything before, however far back.
//!
//! One-to-many: with `num_conditions > 0` a sentence starts from a learnt vector of its condition
//! (a class label) instead of the zero state — `h₀ = tanh(E[label])` in every layer, `c₀ = 0` —
//! and the network generates the sentence from that one vector.

use candle_core::{bail, DType, Device, Result, Tensor};
use lingo_nn::{
    CellKind, Ctx, Dropout, Embedding, Init, Linear, ParamPath, Recurrent, RecurrentConfig,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RnnLmConfig {
    pub vocab_size: usize,
    pub embed_dim: usize,
    pub cell: CellKind,
    pub hidden_size: usize,
    pub num_layers: usize,
    /// Dropout on the embeddings, between layers and before the output layer (Zaremba's medium
    /// and large recipes; none in the small one).
    pub dropout: f32,
    /// Embeddings and the output layer start from `U(−init_range, init_range)`.
    pub init_range: f32,
    /// The output layer reuses the embedding table (Press & Wolf 2017); needs
    /// `embed_dim == hidden_size`.
    pub tie_weights: bool,
    /// Conditions (class labels) a sentence can be generated from; 0 for a plain language model.
    pub num_conditions: usize,
}

impl Default for RnnLmConfig {
    /// Zaremba et al.'s small PTB model.
    fn default() -> Self {
        RnnLmConfig {
            vocab_size: 0,
            embed_dim: 200,
            cell: CellKind::Lstm,
            hidden_size: 200,
            num_layers: 2,
            dropout: 0.0,
            init_range: 0.1,
            tie_weights: false,
            num_conditions: 0,
        }
    }
}

impl RnnLmConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        crate::config::check_positive(&[
            ("vocab_size", self.vocab_size),
            ("embed_dim", self.embed_dim),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
        ])?;
        if self.tie_weights && self.embed_dim != self.hidden_size {
            return Err(format!(
                "field `tie_weights` needs `embed_dim` ({}) equal to `hidden_size` ({})",
                self.embed_dim, self.hidden_size
            ));
        }
        if !(self.init_range > 0.0 && self.init_range.is_finite()) {
            return Err(format!(
                "field `init_range` must be positive, got {}",
                self.init_range
            ));
        }
        crate::config::check_dropout(self.dropout)
    }
}

/// The recurrent state between windows: `h` (and `c` for an LSTM), `[layers, batch, hidden]`.
#[derive(Clone, Debug)]
pub struct LmState {
    pub h: Tensor,
    pub c: Option<Tensor>,
}

impl LmState {
    /// The same state without its gradient history (the cut of truncated BPTT).
    pub fn detach(&self) -> LmState {
        LmState {
            h: self.h.detach(),
            c: self.c.as_ref().map(Tensor::detach),
        }
    }

    /// The state of the sequences `rows` of the batch, in that order.
    pub fn select(&self, rows: &[u32]) -> Result<LmState> {
        let index = Tensor::new(rows, self.h.device())?;
        Ok(LmState {
            h: self.h.index_select(&index, 1)?,
            c: match &self.c {
                Some(c) => Some(c.index_select(&index, 1)?),
                None => None,
            },
        })
    }
}

pub struct RnnLm {
    pub config: RnnLmConfig,
    embed: Embedding,
    rnn: Recurrent,
    out: Linear,
    condition: Option<Embedding>,
    drop: Dropout,
}

impl RnnLm {
    pub fn new(config: RnnLmConfig, p: &ParamPath) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let c = &config;
        let init = Init::Uniform(c.init_range);
        let embed = Embedding::new(&p.sub("word_embed"), c.vocab_size, c.embed_dim, init)?;
        let rnn = Recurrent::new(
            &p.sub("rnn"),
            RecurrentConfig {
                cell: c.cell,
                input_size: c.embed_dim,
                hidden_size: c.hidden_size,
                num_layers: c.num_layers,
                bidirectional: false,
                dropout: c.dropout,
                bias: true,
            },
        )?;
        let out = if c.tie_weights {
            let bias = p.sub("out").get("bias", &[c.vocab_size], Init::Zeros)?;
            Linear::tied(&p.sub("out"), &embed.weight, Some(bias))?
        } else {
            // The bias starts at zero, as in Zaremba's code and PyTorch's example.
            Linear::new(&p.sub("out"), c.hidden_size, c.vocab_size, true, init)?
        };
        let condition = match c.num_conditions {
            0 => None,
            n => Some(Embedding::new(
                &p.sub("condition"),
                n,
                c.num_layers * c.hidden_size,
                init,
            )?),
        };
        Ok(RnnLm {
            drop: Dropout::new(c.dropout),
            config,
            embed,
            rnn,
            out,
            condition,
        })
    }

    /// The state a sentence of each condition in `labels` starts from.
    pub fn condition_state(&self, labels: &[u32], device: &Device) -> Result<LmState> {
        let Some(table) = &self.condition else {
            bail!("this language model has no conditions (`num_conditions` is 0)");
        };
        let c = &self.config;
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= c.num_conditions) {
            bail!("condition {l} is outside the model's {}", c.num_conditions);
        }
        let b = labels.len();
        let h = table
            .forward(&Tensor::new(labels, device)?)?
            .tanh()?
            .reshape((b, c.num_layers, c.hidden_size))?
            .transpose(0, 1)?
            .contiguous()?;
        let c = (c.cell == CellKind::Lstm)
            .then(|| h.zeros_like())
            .transpose()?;
        Ok(LmState { h, c })
    }

    /// Next-word logits `[batch, time, vocab]` for `ids: [batch, time]` starting from `state` (zero
    /// if `None`), and the state after the last position. `lengths` marks padded sentences; the
    /// returned state is then each sentence's own final one.
    pub fn forward(
        &self,
        ids: &Tensor,
        lengths: Option<&[usize]>,
        state: Option<&LmState>,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, LmState)> {
        let x = self.drop.forward(&self.embed.forward(ids)?, ctx)?;
        let initial = state.map(|s| (&s.h, s.c.as_ref()));
        let run = self.rnn.forward(&x, lengths, initial, ctx)?;
        let logits = self.out.forward(&self.drop.forward(&run.output, ctx)?)?;
        Ok((
            logits,
            LmState {
                h: run.h_n,
                c: run.c_n,
            },
        ))
    }

    /// Mean cross-entropy (nats per word) of predicting `targets` from `ids`, both `[batch, time]`,
    /// and the state after the window. Targets equal to `ignore` (padding) count for nothing.
    pub fn loss(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        lengths: Option<&[usize]>,
        state: Option<&LmState>,
        ignore: Option<u32>,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, LmState)> {
        let (logits, state) = self.forward(ids, lengths, state, ctx)?;
        let opts = lingo_kernels::CrossEntropy {
            ignore_index: ignore.map(i64::from),
            ..Default::default()
        };
        Ok((lingo_kernels::cross_entropy(&logits, targets, opts)?, state))
    }

    /// log p(next word) over the vocabulary after one more word for each sequence of the batch:
    /// `[batch, vocab]`, and the new state (generation and streaming evaluation).
    pub fn step(&self, words: &[u32], state: Option<&LmState>) -> Result<(Tensor, LmState)> {
        let ids = Tensor::from_vec(words.to_vec(), (words.len(), 1), &Device::Cpu)?;
        let (logits, state) = self.forward(&ids, None, state, &mut Ctx::eval())?;
        let log_probs = lingo_kernels::log_softmax(&logits.squeeze(1)?)?;
        Ok((log_probs, state))
    }

    /// A zero state for `batch` sequences.
    pub fn zero_state(&self, batch: usize, device: &Device) -> Result<LmState> {
        let c = &self.config;
        let h = Tensor::zeros((c.num_layers, batch, c.hidden_size), DType::F32, device)?;
        let c = (c.cell == CellKind::Lstm)
            .then(|| h.zeros_like())
            .transpose()?;
        Ok(LmState { h, c })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lingo_nn::ParamStore;

    fn config(cell: CellKind, tie: bool, conditions: usize) -> RnnLmConfig {
        RnnLmConfig {
            vocab_size: 11,
            embed_dim: 5,
            cell,
            hidden_size: 5,
            num_layers: 2,
            dropout: 0.0,
            init_range: 0.3,
            tie_weights: tie,
            num_conditions: conditions,
        }
    }

    fn window() -> Result<(Tensor, Tensor)> {
        let ids = Tensor::new(&[[1u32, 4, 5, 6], [7, 8, 2, 3]], &Device::Cpu)?;
        let targets = Tensor::new(&[[4u32, 5, 6, 9], [8, 2, 3, 10]], &Device::Cpu)?;
        Ok((ids, targets))
    }

    #[test]
    fn every_parameter_receives_a_gradient() -> Result<()> {
        for (cell, tie, conditions) in [
            (CellKind::Lstm, false, 0),
            (CellKind::Lstm, true, 3),
            (CellKind::Gru, false, 2),
            (CellKind::Rnn, true, 0),
        ] {
            let store = ParamStore::new(0, &Device::Cpu);
            let model = RnnLm::new(config(cell, tie, conditions), &store.root())?;
            let (ids, targets) = window()?;
            let state = match conditions {
                0 => None,
                n => Some(model.condition_state(&[n as u32 - 1, 0], &Device::Cpu)?),
            };
            let (loss, _) =
                model.loss(&ids, &targets, None, state.as_ref(), None, &mut Ctx::eval())?;
            let missing = store.without_gradient(&loss.backward()?)?;
            assert!(
                missing.is_empty(),
                "{cell:?} tie {tie}: no gradient for {missing:?}"
            );
        }
        Ok(())
    }

    /// Running a stream in two windows, the state carried across, gives the logits of one window.
    #[test]
    fn carried_state_continues_the_stream() -> Result<()> {
        let store = ParamStore::new(1, &Device::Cpu);
        let model = RnnLm::new(config(CellKind::Lstm, false, 0), &store.root())?;
        let (ids, _) = window()?;
        let (whole, end) = model.forward(&ids, None, None, &mut Ctx::eval())?;
        let (a, mid) = model.forward(&ids.narrow(1, 0, 3)?, None, None, &mut Ctx::eval())?;
        let (b, end2) = model.forward(
            &ids.narrow(1, 3, 1)?,
            None,
            Some(&mid.detach()),
            &mut Ctx::eval(),
        )?;
        let parts = Tensor::cat(&[a, b], 1)?;
        let d = (whole - parts)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        let d = (end.h - end2.h)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        // One word at a time through `step` agrees too.
        let rows = ids.to_vec2::<u32>()?;
        let mut state = None;
        let full =
            lingo_kernels::log_softmax(&model.forward(&ids, None, None, &mut Ctx::eval())?.0)?;
        for t in 0..4 {
            let words: Vec<u32> = rows.iter().map(|r| r[t]).collect();
            let (lp, s) = model.step(&words, state.as_ref())?;
            let d = (lp - full.narrow(1, t, 1)?.squeeze(1)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(d < 1e-5, "step {t}: {d}");
            state = Some(s);
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        use lingo_kernels::gradcheck::check_directions;
        let store = ParamStore::new(2, &Device::Cpu);
        let model = RnnLm::new(config(CellKind::Lstm, true, 3), &store.root())?;
        let (ids, targets) = window()?;
        let loss_tensor = || -> Result<Tensor> {
            let state = model.condition_state(&[1, 2], &Device::Cpu)?;
            Ok(model
                .loss(&ids, &targets, None, Some(&state), None, &mut Ctx::eval())?
                .0)
        };
        let loss = || -> Result<f64> { Ok(loss_tensor()?.to_scalar::<f32>()? as f64) };
        let grads = loss_tensor()?.backward()?;
        if let Err(e) = check_directions(&store.named(), &grads, &loss, 1e-2, (1e-4, 1e-2), 100) {
            panic!("{e}");
        }
        Ok(())
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = config(CellKind::Lstm, true, 0);
        c.hidden_size = 6;
        assert!(c.validate().unwrap_err().contains("tie_weights"));
        let mut c = config(CellKind::Lstm, false, 0);
        c.init_range = 0.0;
        assert!(c.validate().unwrap_err().contains("init_range"));
    }
}
