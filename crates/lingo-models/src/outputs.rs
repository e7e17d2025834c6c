//! The one forward contract every family shares: [`ModelInputs`] in (as `transformers` names them),
//! [`ModelOutput`] out, in the mode a [`lingo_nn::Ctx`] gives (training applies dropout from the
//! run's seeded RNG; evaluation does not).

use candle_core::{Result, Tensor};

/// The inputs of one forward pass, as `transformers` names them (`[batch, time]` u32 each).
#[derive(Clone, Debug)]
pub struct ModelInputs {
    pub input_ids: Tensor,
    /// 1 at real tokens, 0 at padding; all real when `None`.
    pub attention_mask: Option<Tensor>,
    /// Segment ids of a BERT-family pair input; all 0 when `None`.
    pub token_type_ids: Option<Tensor>,
    /// The decoder's input of an encoder–decoder (the start token, then the target so far).
    pub decoder_input_ids: Option<Tensor>,
    /// Also return every layer's attention probabilities (`output_attentions=True`). They cost
    /// memory and keep attention off the fused kernel, so they are off by default.
    pub output_attentions: bool,
    /// Masked-LM pre-training: the flat positions (`row · time + column`, u32) whose vocabulary
    /// logits are wanted; the head then runs on those tokens only and `output` is
    /// `[positions, vocab]` — about 15% of the work over every token, as BERT's own pre-training
    /// code gathers them.
    pub predict_positions: Option<Tensor>,
}

impl ModelInputs {
    /// Token ids alone: no padding, no segments, no decoder input.
    pub fn new(input_ids: Tensor) -> Self {
        ModelInputs {
            input_ids,
            attention_mask: None,
            token_type_ids: None,
            decoder_input_ids: None,
            output_attentions: false,
            predict_positions: None,
        }
    }

    pub fn with_attention_mask(mut self, mask: Tensor) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    pub fn with_token_type_ids(mut self, types: Tensor) -> Self {
        self.token_type_ids = Some(types);
        self
    }

    pub fn with_decoder_input_ids(mut self, ids: Tensor) -> Self {
        self.decoder_input_ids = Some(ids);
        self
    }

    pub fn with_predict_positions(mut self, positions: Tensor) -> Self {
        self.predict_positions = Some(positions);
        self
    }

    pub fn with_attentions(mut self) -> Self {
        self.output_attentions = true;
        self
    }
}

/// What a forward pass returns, for every family.
#[derive(Clone, Debug)]
pub struct ModelOutput {
    /// The head's output: logits over the vocabulary (`[batch, time, vocab]`) or the labels
    /// (`[batch, labels]`, `[batch, time, labels]`; extractive QA stacks start and end logits as
    /// `[batch, time, 2]`; ELECTRA's discriminator gives `[batch, time]`); a bare encoder's last
    /// hidden state.
    pub output: Tensor,
    /// A pre-training head's sentence-pair logits `[batch, 2]`: BERT's next-sentence prediction
    /// (`seq_relationship_logits`), ALBERT's sentence order (`sop_logits`); `output` then holds
    /// the masked-LM logits.
    pub pair_logits: Option<Tensor>,
    /// The embeddings' output then every layer's (`output_hidden_states=True`); the decoder's in an
    /// encoder–decoder.
    pub hidden_states: Vec<Tensor>,
    /// Every layer's attention probabilities `[batch, heads, q, k]` when asked for; the decoder's
    /// self-attention in an encoder–decoder.
    pub attentions: Vec<Tensor>,
    /// An encoder–decoder's encoder states and attention probabilities; empty otherwise.
    pub encoder_hidden_states: Vec<Tensor>,
    pub encoder_attentions: Vec<Tensor>,
    /// An encoder–decoder's decoder attention over the encoder output, when asked for.
    pub cross_attentions: Vec<Tensor>,
}

impl ModelOutput {
    /// An output with states and no encoder part.
    pub fn new(output: Tensor, trace: Trace) -> Self {
        ModelOutput {
            output,
            pair_logits: None,
            hidden_states: trace.states,
            attentions: trace.self_attentions,
            encoder_hidden_states: Vec::new(),
            encoder_attentions: Vec::new(),
            cross_attentions: Vec::new(),
        }
    }

    /// An encoder–decoder's output from what its two stacks recorded.
    pub fn seq2seq(encoder: Trace, decoder: Trace, logits: Tensor) -> Self {
        ModelOutput {
            output: logits,
            pair_logits: None,
            hidden_states: decoder.states,
            attentions: decoder.self_attentions,
            encoder_hidden_states: encoder.states,
            encoder_attentions: encoder.self_attentions,
            cross_attentions: decoder.cross_attentions,
        }
    }

    /// The last hidden state (the decoder's in an encoder–decoder).
    pub fn last_hidden_state(&self) -> Result<&Tensor> {
        self.hidden_states
            .last()
            .ok_or_else(|| candle_core::Error::Msg("the output holds no hidden states".into()))
    }
}

/// What one stack (encoder or decoder) recorded on its way: the embeddings then every layer's
/// output, and, when asked for, every layer's attention probabilities `[batch, heads, q, k]`
/// (cross-attention in a decoder).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub states: Vec<Tensor>,
    pub self_attentions: Vec<Tensor>,
    pub cross_attentions: Vec<Tensor>,
}

impl Trace {
    /// A trace that starts with the embeddings' output `x`.
    pub fn starting(x: &Tensor) -> Self {
        Trace {
            states: vec![x.clone()],
            ..Default::default()
        }
    }
}
