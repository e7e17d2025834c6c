//! A recurrent encoder–decoder for sequence-to-sequence tasks (Sutskever et al., 2014; Cho et al.,
//! 2014), with the attention of Bahdanau et al. (2015) or Luong et al. (2015), or none.
//!
//! Encoder: embeddings → (bidirectional, multi-layer) RNN/LSTM/GRU over the padded source. Its last
//! layer's final states, through a `tanh` bridge, start the decoder. At each target step the decoder
//! reads the previous token's embedding plus
//! - *none*: the fixed context (the encoder's final states) — the bottleneck attention removes;
//! - *Bahdanau*: a context computed by additive attention with the **previous** decoder state;
//! - *Luong*: with input feeding, the previous attentional state `h̃`; the context is computed with the
//!   **current** decoder state by a dot, scaled-dot, general or concat (additive) score.
//!
//! Then `h̃ = tanh(W_c [s; context])` and `logits = W_out h̃` (optionally tied to the target embedding).

use crate::contracts::{seq2seq_cross_entropy, Seq2SeqBatch, Seq2SeqLoss, Seq2SeqTrain};
use crate::outputs::{ModelInputs, ModelOutput, Trace};
use crate::{Batched, Seq2SeqLm};
use candle_core::{bail, DType, Device, Result, Tensor};
use lingo_nn::{
    AttentionLoop, CellKind, Ctx, Dropout, Embedding, Init, Linear, LoopEmbedding, LoopLinear,
    ParamPath, Recurrent, RecurrentConfig, RnnAttention, Score, Stepper,
};
use serde::{Deserialize, Serialize};

/// Which attention the decoder uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Seq2SeqAttention {
    /// No attention: a fixed context vector.
    None,
    #[default]
    Bahdanau,
    LuongDot,
    LuongScaledDot,
    LuongGeneral,
    LuongConcat,
}

impl Seq2SeqAttention {
    fn score(self) -> Option<Score> {
        match self {
            Seq2SeqAttention::None => None,
            Seq2SeqAttention::Bahdanau | Seq2SeqAttention::LuongConcat => Some(Score::Additive),
            Seq2SeqAttention::LuongDot => Some(Score::Dot),
            Seq2SeqAttention::LuongScaledDot => Some(Score::ScaledDot),
            Seq2SeqAttention::LuongGeneral => Some(Score::General),
        }
    }
    fn is_luong(self) -> bool {
        !matches!(self, Seq2SeqAttention::None | Seq2SeqAttention::Bahdanau)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RnnSeq2SeqConfig {
    pub src_vocab_size: usize,
    pub tgt_vocab_size: usize,
    pub embed_dim: usize,
    /// Hidden width of the decoder and of each encoder direction.
    pub hidden_size: usize,
    pub cell: CellKind,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub bidirectional_encoder: bool,
    pub attention: Seq2SeqAttention,
    /// Width of the additive score's hidden layer (0 = `hidden_size`).
    pub attention_dim: usize,
    /// Luong's input feeding: the previous attentional state joins the decoder input.
    pub input_feeding: bool,
    pub dropout: f32,
    /// Share the target embedding with the output layer (needs `embed_dim == hidden_size`).
    pub tied_output: bool,
    pub pad_id: u32,
    pub bos_id: u32,
    pub eos_id: u32,
}

impl Default for RnnSeq2SeqConfig {
    fn default() -> Self {
        RnnSeq2SeqConfig {
            src_vocab_size: 0,
            tgt_vocab_size: 0,
            embed_dim: 128,
            hidden_size: 256,
            cell: CellKind::Gru,
            encoder_layers: 1,
            decoder_layers: 1,
            bidirectional_encoder: true,
            attention: Seq2SeqAttention::Bahdanau,
            attention_dim: 0,
            input_feeding: true,
            dropout: 0.0,
            tied_output: false,
            pad_id: 0,
            bos_id: 1,
            eos_id: 2,
        }
    }
}

impl RnnSeq2SeqConfig {
    pub fn encoder_output_size(&self) -> usize {
        self.hidden_size * (1 + usize::from(self.bidirectional_encoder))
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        crate::config::check_positive(&[
            ("src_vocab_size", self.src_vocab_size),
            ("tgt_vocab_size", self.tgt_vocab_size),
            ("embed_dim", self.embed_dim),
            ("hidden_size", self.hidden_size),
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
        ])?;
        if self.tied_output && self.embed_dim != self.hidden_size {
            return Err(format!(
                "field `tied_output` needs `embed_dim` ({}) == `hidden_size` ({})",
                self.embed_dim, self.hidden_size
            ));
        }
        if matches!(
            self.attention,
            Seq2SeqAttention::LuongDot | Seq2SeqAttention::LuongScaledDot
        ) && self.encoder_output_size() != self.hidden_size
        {
            return Err(format!(
                "field `attention`: {:?} needs the encoder output width ({}) to equal `hidden_size` ({}); use a unidirectional encoder or `luong_general`",
                self.attention,
                self.encoder_output_size(),
                self.hidden_size
            ));
        }
        crate::config::check_dropout(self.dropout)
    }

    /// Width of the decoder RNN's input.
    fn decoder_input_size(&self) -> usize {
        match self.attention {
            Seq2SeqAttention::None | Seq2SeqAttention::Bahdanau => {
                self.embed_dim + self.encoder_output_size()
            }
            _ if self.input_feeding => self.embed_dim + self.hidden_size,
            _ => self.embed_dim,
        }
    }
}

pub struct RnnSeq2Seq {
    pub config: RnnSeq2SeqConfig,
    src_embed: Embedding,
    tgt_embed: Embedding,
    encoder: Recurrent,
    bridge: Linear,
    decoder: Recurrent,
    attention: Option<RnnAttention>,
    combine: Linear,
    out: Linear,
    drop: Dropout,
}

/// The decoder's per-pass view of its parameters (see [`RnnSeq2Seq::decoder_loop`]).
struct DecoderLoop<'a> {
    embed: LoopEmbedding<'a>,
    rnn: Stepper<'a>,
    attention: Option<AttentionLoop<'a>>,
    combine: LoopLinear<'a>,
}

/// Positions of the memory tensors in [`Batched`].
const MEM_OUTPUT: usize = 0;
const MEM_KEYS: usize = 1;
const MEM_KEEP: usize = 2;
const MEM_FINAL: usize = 3;

impl RnnSeq2Seq {
    pub fn new(config: RnnSeq2SeqConfig, p: &ParamPath) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let c = &config;
        let init = Init::Uniform(0.1);
        let src_embed = Embedding::new(
            &p.sub("encoder.embed"),
            c.src_vocab_size,
            c.embed_dim,
            Init::Normal(0.1),
        )?;
        let tgt_embed = Embedding::new(
            &p.sub("decoder.embed"),
            c.tgt_vocab_size,
            c.embed_dim,
            Init::Normal(0.1),
        )?;
        let encoder = Recurrent::new(
            &p.sub("encoder.rnn"),
            RecurrentConfig {
                cell: c.cell,
                input_size: c.embed_dim,
                hidden_size: c.hidden_size,
                num_layers: c.encoder_layers,
                bidirectional: c.bidirectional_encoder,
                dropout: c.dropout,
                bias: true,
            },
        )?;
        let enc = c.encoder_output_size();
        let bridge = Linear::new(&p.sub("bridge"), enc, c.hidden_size, true, init)?;
        let decoder = Recurrent::new(
            &p.sub("decoder.rnn"),
            RecurrentConfig {
                cell: c.cell,
                input_size: c.decoder_input_size(),
                hidden_size: c.hidden_size,
                num_layers: c.decoder_layers,
                bidirectional: false,
                dropout: c.dropout,
                bias: true,
            },
        )?;
        let attention = match c.attention.score() {
            Some(score) => {
                let dim = if c.attention_dim == 0 {
                    c.hidden_size
                } else {
                    c.attention_dim
                };
                Some(RnnAttention::new(
                    &p.sub("attention"),
                    score,
                    c.hidden_size,
                    enc,
                    dim,
                )?)
            }
            None => None,
        };
        let combine = Linear::new(
            &p.sub("decoder.combine"),
            c.hidden_size + enc,
            c.hidden_size,
            true,
            init,
        )?;
        let out = if c.tied_output {
            Linear::tied(
                p,
                &tgt_embed.weight,
                Some(p.get("decoder.out.bias", &[c.tgt_vocab_size], Init::Zeros)?),
            )?
        } else {
            Linear::new(
                &p.sub("decoder.out"),
                c.hidden_size,
                c.tgt_vocab_size,
                true,
                init,
            )?
        };
        Ok(RnnSeq2Seq {
            drop: Dropout::new(c.dropout),
            config,
            src_embed,
            tgt_embed,
            encoder,
            bridge,
            decoder,
            attention,
            combine,
            out,
        })
    }

    /// Encoder outputs, attention keys, source mask and the final encoder state, batch first.
    pub fn encode_with(&self, src: &Tensor, lengths: &[usize], ctx: &mut Ctx) -> Result<Batched> {
        let (b, s) = src.dims2()?;
        if lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > s) {
            bail!("source lengths {lengths:?} do not fit a batch of {b} sequences of at most {s} tokens (each needs one)");
        }
        let emb = self.drop.forward(&self.src_embed.forward(src)?, ctx)?;
        let enc = self.encoder.forward(&emb, Some(lengths), None, ctx)?;
        let dirs = 1 + usize::from(self.config.bidirectional_encoder);
        let layers = self.config.encoder_layers;
        // The last layer's final state of each direction, side by side: [batch, dirs·hidden].
        let last = enc
            .h_n
            .narrow(0, (layers - 1) * dirs, dirs)?
            .transpose(0, 1)?
            .reshape((b, ()))?;
        let keep = crate::length_mask(lengths, s, DType::U8, src.device())?;
        let keys = match &self.attention {
            Some(a) => a.keys(&enc.output)?,
            // Unused without attention: a placeholder that keeps the memory layout fixed.
            None => Tensor::zeros((b, s, 1), DType::F32, src.device())?,
        };
        Ok(Batched(vec![enc.output, keys, keep, last]))
    }

    fn start(&self, memory: &Batched) -> Result<Batched> {
        let last = &memory.0[MEM_FINAL];
        let h0 = self.bridge.forward(last)?.tanh()?;
        let b = h0.dim(0)?;
        let mut state = Vec::new();
        for _ in 0..self.config.decoder_layers {
            state.push(match self.config.cell {
                CellKind::Lstm => Tensor::cat(&[&h0, &h0.zeros_like()?], 1)?,
                _ => h0.clone(),
            });
        }
        // The previous attentional state h̃ (Luong input feeding), zero before the first step.
        state.push(Tensor::zeros(
            (b, self.config.hidden_size),
            DType::F32,
            h0.device(),
        )?);
        Ok(Batched(state))
    }

    /// The decoder's parameters and the attention memory prepared for one pass over the target: every
    /// step reads them, and their gradients are summed in place across the steps.
    fn decoder_loop(&self, memory: &Batched) -> DecoderLoop<'_> {
        DecoderLoop {
            embed: self.tgt_embed.in_loop(),
            rnn: self.decoder.stepper(),
            attention: self
                .attention
                .as_ref()
                .map(|a| a.in_loop(&memory.0[MEM_OUTPUT], &memory.0[MEM_KEYS])),
            combine: self.combine.in_loop(),
        }
    }

    /// One decoder step: the attentional state `h̃` `[rows, hidden]` (the output layer turns it into
    /// logits), the new state, and the attention weights.
    fn step(
        &self,
        dl: &DecoderLoop,
        memory: &Batched,
        state: &Batched,
        last: &Tensor,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Batched, Option<Tensor>)> {
        let c = &self.config;
        let layers = &state.0[..c.decoder_layers];
        let feed = &state.0[c.decoder_layers];
        let (keep, fixed) = (&memory.0[MEM_KEEP], &memory.0[MEM_FINAL]);
        let emb = self.drop.forward(&dl.embed.forward(last)?, ctx)?;
        let attend = |query: &Tensor| -> Result<(Tensor, Option<Tensor>)> {
            match &dl.attention {
                Some(a) => {
                    let (context, w) = a.attend(query, keep)?;
                    Ok((context, Some(w)))
                }
                None => Ok((fixed.clone(), None)),
            }
        };
        let (s, next, context, weights) = if c.attention.is_luong() {
            let input = if c.input_feeding {
                Tensor::cat(&[&emb, feed], 1)?
            } else {
                emb
            };
            let (s, next) = dl.rnn.step(&input, layers, ctx)?;
            let (context, w) = attend(&s)?;
            (s, next, context, w)
        } else {
            let previous = self.decoder.hidden_of(&layers[c.decoder_layers - 1])?;
            let (context, w) = attend(&previous)?;
            let (s, next) = dl
                .rnn
                .step(&Tensor::cat(&[&emb, &context], 1)?, layers, ctx)?;
            (s, next, context, w)
        };
        let h_tilde = dl
            .combine
            .forward(&Tensor::cat(&[&s, &context], 1)?)?
            .tanh()?;
        let mut new_state = next;
        new_state.push(h_tilde.clone());
        Ok((h_tilde, Batched(new_state), weights))
    }

    fn logits(&self, h_tilde: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.out.forward(&self.drop.forward(h_tilde, ctx)?)
    }

    /// Logits `[batch, tgt, vocab]` for the decoder inputs `tgt_in` (BOS first) over a source
    /// batch, with every step's h̃ and, when `want_weights`, attention over the source
    /// `[batch, tgt, src]`. With `teacher_forcing < 1`, each next input is, with probability
    /// `1 − teacher_forcing`, the model's own previous prediction instead of the reference token
    /// (scheduled sampling).
    fn teacher_forced(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        tgt_in: &Tensor,
        teacher_forcing: f32,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Tensor, Batched, Option<Tensor>)> {
        let (b, t) = tgt_in.dims2()?;
        let memory = self.encode_with(src, src_lengths, ctx)?;
        let mut state = self.start(&memory)?;
        let dl = self.decoder_loop(&memory);
        let gold = tgt_in.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let mut tokens = tgt_in.narrow(1, 0, 1)?.squeeze(1)?;
        // The output layer runs once over every step's h̃: one large matrix product instead of one per
        // step (it is most of the model's arithmetic with a large target vocabulary).
        let mut all = Vec::with_capacity(t);
        let mut weights = Vec::new();
        for step in 0..t {
            let (h_tilde, next, w) = self.step(&dl, &memory, &state, &tokens, ctx)?;
            state = next;
            if want_weights {
                weights.extend(w);
            }
            if step + 1 < t {
                tokens = if teacher_forcing >= 1.0 {
                    tgt_in.narrow(1, step + 1, 1)?.squeeze(1)?
                } else {
                    let logits = self.out.forward(&h_tilde.detach())?;
                    let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
                    let mixed: Vec<u32> = (0..b)
                        .map(|r| {
                            if ctx.rng.uniform() < teacher_forcing {
                                gold[r][step + 1]
                            } else {
                                predicted[r]
                            }
                        })
                        .collect();
                    Tensor::from_vec(mixed, b, tgt_in.device())?
                };
            }
            all.push(h_tilde);
        }
        let h_tilde = Tensor::stack(&all, 1)?;
        let logits = self.logits(&h_tilde, ctx)?;
        let weights = match weights.is_empty() {
            true => None,
            false => Some(Tensor::stack(&weights, 1)?),
        };
        Ok((logits, h_tilde, memory, weights))
    }

    /// Logits `[batch, tgt, vocab]` for `input_ids` (the source; `attention_mask` gives each row's
    /// length) and `decoder_input_ids` (BOS first), the reference fed at every step. The encoder's
    /// output is the one encoder state, every step's h̃ the one decoder state, and the attention
    /// over the source `[batch, tgt, src]` the one cross-attention.
    pub fn forward(&self, inputs: &ModelInputs, ctx: &mut Ctx) -> Result<ModelOutput> {
        crate::auto::refuse(
            "token_type_ids",
            inputs.token_type_ids.is_some(),
            "recurrent seq2seq",
        )?;
        let Some(tgt_in) = &inputs.decoder_input_ids else {
            bail!("an encoder-decoder model needs `decoder_input_ids`");
        };
        let src = &inputs.input_ids;
        let (b, s) = src.dims2()?;
        let lengths: Vec<usize> = match &inputs.attention_mask {
            Some(m) => m
                .to_dtype(DType::U32)?
                .sum(1)?
                .to_vec1::<u32>()?
                .into_iter()
                .map(|l| l as usize)
                .collect(),
            None => vec![s; b],
        };
        let want = inputs.output_attentions;
        let (logits, h_tilde, memory, weights) =
            self.teacher_forced(src, &lengths, tgt_in, 1.0, want, ctx)?;
        let encoder = Trace {
            states: vec![memory.0[MEM_OUTPUT].clone()],
            ..Default::default()
        };
        let decoder = Trace {
            states: vec![h_tilde],
            self_attentions: Vec::new(),
            cross_attentions: weights.into_iter().collect(),
        };
        Ok(ModelOutput::seq2seq(encoder, decoder, logits))
    }

    pub fn device(&self) -> Device {
        self.tgt_embed.weight.device().clone()
    }
}

impl Seq2SeqTrain for RnnSeq2Seq {
    fn pad_id(&self) -> u32 {
        self.config.pad_id
    }

    /// Mean cross-entropy over the real target positions, the decoder fed the reference (or, with
    /// `options.teacher_forcing < 1`, sometimes its own prediction).
    fn loss(&self, batch: &Seq2SeqBatch, options: &Seq2SeqLoss, ctx: &mut Ctx) -> Result<Tensor> {
        let (logits, ..) = self.teacher_forced(
            &batch.source,
            &batch.source_lengths,
            &batch.decoder_input,
            options.teacher_forcing,
            false,
            ctx,
        )?;
        seq2seq_cross_entropy(&logits, batch, options)
    }
}

impl Seq2SeqLm for RnnSeq2Seq {
    fn bos_id(&self) -> u32 {
        self.config.bos_id
    }
    fn eos_id(&self) -> u32 {
        self.config.eos_id
    }
    fn target_vocab_size(&self) -> usize {
        self.config.tgt_vocab_size
    }
    fn encode(&self, src: &Tensor, lengths: &[usize]) -> Result<Batched> {
        self.encode_with(src, lengths, &mut Ctx::eval())
    }
    fn initial_state(&self, memory: &Batched) -> Result<Batched> {
        self.start(memory)
    }
    fn decode_step(
        &self,
        memory: &Batched,
        state: &Batched,
        last: &Tensor,
    ) -> Result<(Tensor, Batched, Option<Tensor>)> {
        let mut ctx = Ctx::eval();
        let dl = self.decoder_loop(memory);
        let (h_tilde, state, w) = self.step(&dl, memory, state, last, &mut ctx)?;
        Ok((
            lingo_kernels::log_softmax(&self.logits(&h_tilde, &mut ctx)?)?,
            state,
            w,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lingo_nn::ParamStore;

    fn config(
        attention: Seq2SeqAttention,
        cell: CellKind,
        bidirectional: bool,
    ) -> RnnSeq2SeqConfig {
        RnnSeq2SeqConfig {
            src_vocab_size: 9,
            tgt_vocab_size: 7,
            embed_dim: 6,
            hidden_size: 6,
            cell,
            encoder_layers: 2,
            decoder_layers: 2,
            bidirectional_encoder: bidirectional,
            attention,
            ..Default::default()
        }
    }

    #[test]
    fn every_parameter_receives_a_gradient_for_every_attention() -> Result<()> {
        use Seq2SeqAttention::*;
        for (attention, bidirectional) in [
            (None, true),
            (Bahdanau, true),
            (LuongDot, false),
            (LuongScaledDot, false),
            (LuongGeneral, true),
            (LuongConcat, true),
        ] {
            for cell in [CellKind::Lstm, CellKind::Gru] {
                let store = ParamStore::new(0, &Device::Cpu);
                let model = RnnSeq2Seq::new(config(attention, cell, bidirectional), &store.root())?;
                let batch = crate::toy_seq2seq_batch();
                let loss = model.loss(&batch, &Seq2SeqLoss::default(), &mut Ctx::eval())?;
                let missing = store.without_gradient(&loss.backward()?)?;
                assert!(
                    missing.is_empty(),
                    "{attention:?} {cell:?}: no gradient for {missing:?}"
                );
            }
        }
        Ok(())
    }

    /// The gradient of every parameter of the whole model (whose encoder and decoder sum their per-step
    /// gradients in place) agrees with finite differences of the loss along a random direction.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        use lingo_kernels::gradcheck::check_directions;
        use Seq2SeqAttention::*;
        for (k, (attention, bidirectional, cell)) in [
            (Bahdanau, true, CellKind::Lstm),
            (LuongGeneral, true, CellKind::Gru),
            (LuongDot, false, CellKind::Lstm),
            (None, true, CellKind::Gru),
        ]
        .into_iter()
        .enumerate()
        {
            let store = ParamStore::new(k as u64, &Device::Cpu);
            let model = RnnSeq2Seq::new(config(attention, cell, bidirectional), &store.root())?;
            let batch = crate::toy_seq2seq_batch();
            let loss = || -> Result<f64> {
                let l = model.loss(&batch, &Seq2SeqLoss::default(), &mut Ctx::eval())?;
                Ok(l.to_scalar::<f32>()? as f64)
            };
            let l = model.loss(&batch, &Seq2SeqLoss::default(), &mut Ctx::eval())?;
            let grads = l.backward()?;
            if let Err(e) = check_directions(&store.named(), &grads, &loss, 1e-2, (1e-4, 1e-2), 100)
            {
                panic!("{attention:?} {cell:?} {e}");
            }
        }
        Ok(())
    }

    #[test]
    fn source_padding_does_not_change_the_result() -> Result<()> {
        let store = ParamStore::new(1, &Device::Cpu);
        let model = RnnSeq2Seq::new(
            config(Seq2SeqAttention::Bahdanau, CellKind::Lstm, true),
            &store.root(),
        )?;
        let batch = crate::toy_seq2seq_batch();
        let (src, lengths) = (&batch.source, &batch.source_lengths);
        let memory = model.encode(src, lengths)?;
        let state = model.initial_state(&memory)?;
        let last = Tensor::from_vec(vec![1u32, 1], 2, &Device::Cpu)?;
        let (lp, _, w) = model.decode_step(&memory, &state, &last)?;
        // Row 1 alone, without padding.
        let alone = model.encode(&src.narrow(0, 1, 1)?.narrow(1, 0, 2)?, &[2])?;
        let (lp1, _, w1) = model.decode_step(
            &alone,
            &model.initial_state(&alone)?,
            &last.narrow(0, 1, 1)?,
        )?;
        lingo_kernels::gradcheck::assert_close(&lp.narrow(0, 1, 1)?, &lp1, 1e-5, "log-probs")?;
        lingo_kernels::gradcheck::assert_close(
            &w.unwrap().narrow(0, 1, 1)?.narrow(1, 0, 2)?,
            &w1.unwrap(),
            1e-6,
            "weights",
        )
    }

    #[test]
    fn scheduled_sampling_runs_and_bad_configs_are_rejected() -> Result<()> {
        let store = ParamStore::new(2, &Device::Cpu);
        let model = RnnSeq2Seq::new(
            config(Seq2SeqAttention::LuongGeneral, CellKind::Gru, true),
            &store.root(),
        )?;
        let batch = crate::toy_seq2seq_batch();
        let sampled = Seq2SeqLoss {
            teacher_forcing: 0.5,
            ..Default::default()
        };
        let loss = model.loss(
            &batch,
            &sampled,
            &mut Ctx::train(lingo_nn::LingoRng::new(3)),
        )?;
        assert!(loss.to_scalar::<f32>()?.is_finite());
        let bad = config(Seq2SeqAttention::LuongDot, CellKind::Gru, true);
        assert!(bad.validate().unwrap_err().contains("luong_general"));
        let tied = RnnSeq2SeqConfig {
            tied_output: true,
            embed_dim: 4,
            ..config(Seq2SeqAttention::None, CellKind::Gru, true)
        };
        assert!(tied.validate().unwrap_err().contains("tied_output"));
        Ok(())
    }
}
