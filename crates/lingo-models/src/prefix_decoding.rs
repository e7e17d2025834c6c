//! Step-by-step decoding for Transformer encoder–decoders ([`crate::Seq2SeqLm`], which the beam
//! search drives): the state is the target prefix, and each step runs the decoder over it (no
//! key/value cache yet) to score the next token. A model supplies its encoder and a decoder pass.

use crate::{Batched, Seq2SeqLm};
use candle_core::{DType, Result, Tensor};

/// What a Transformer encoder–decoder provides for [`Seq2SeqLm`].
pub trait PrefixDecoder {
    /// The token the decoder starts from.
    fn start_id(&self) -> u32;
    fn end_id(&self) -> u32;
    fn vocab_size(&self) -> usize;
    /// The encoder's output `[batch, src, d_model]` for a padded batch; `mask: [batch, src]` is 1 at
    /// real tokens (u32).
    fn memory(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor>;
    /// Logits `[batch, tgt, vocab]` for `prefix` and the last layer's cross-attention
    /// `[batch, heads, tgt, src]`.
    fn logits(&self, prefix: &Tensor, memory: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)>;
}

impl<M: PrefixDecoder> Seq2SeqLm for M {
    fn bos_id(&self) -> u32 {
        self.start_id()
    }
    fn eos_id(&self) -> u32 {
        self.end_id()
    }
    fn target_vocab_size(&self) -> usize {
        self.vocab_size()
    }

    fn encode(&self, src: &Tensor, lengths: &[usize]) -> Result<Batched> {
        let mask = crate::length_mask(lengths, src.dim(1)?, DType::U32, src.device())?;
        Ok(Batched(vec![self.memory(src, &mask)?, mask]))
    }

    /// An empty prefix: the first step's `last` is the start token.
    fn initial_state(&self, memory: &Batched) -> Result<Batched> {
        let rows = memory.0[0].dim(0)?;
        let empty = Tensor::zeros((rows, 0), DType::U32, memory.0[0].device())?;
        Ok(Batched(vec![empty]))
    }

    fn decode_step(
        &self,
        memory: &Batched,
        state: &Batched,
        last: &Tensor,
    ) -> Result<(Tensor, Batched, Option<Tensor>)> {
        let last = last.unsqueeze(1)?;
        let prefix = if state.0[0].dim(1)? == 0 {
            last
        } else {
            Tensor::cat(&[&state.0[0], &last], 1)?
        };
        let (logits, cross) = self.logits(&prefix, &memory.0[0], &memory.0[1])?;
        let t = prefix.dim(1)?;
        let next = logits.narrow(1, t - 1, 1)?.squeeze(1)?;
        // Attention over the source for the new token, averaged over heads (for attention maps).
        let weights = cross.narrow(2, t - 1, 1)?.squeeze(2)?.mean(1)?;
        let log_probs = lingo_kernels::log_softmax(&next.to_dtype(DType::F32)?)?;
        Ok((log_probs, Batched(vec![prefix]), Some(weights)))
    }
}
