//! Step-by-step decoding for Transformer encoder–decoders ([`crate::Seq2SeqLm`], which the beam
//! search drives), with key/value caches: each decoder layer's cross-attention keys and values are
//! computed once per source, and each step runs the decoder over the one new token, appending its
//! keys and values to every layer's self-attention cache. A model supplies its encoder, those
//! source keys and values, and one decoder step.
//!
//! The beam search holds the caches as [`Batched`] tensors (selecting rows as beams are reordered):
//! the memory is `[mask, k₀, v₀, k₁, v₁, …]` over the source, the state `[k₀, v₀, k₁, v₁, …]` over
//! the target so far (empty before the first step).

use crate::{Batched, Seq2SeqLm};
use candle_core::{DType, Result, Tensor};
use lingo_nn::DecoderLayerCache;

/// What a Transformer encoder–decoder provides for [`Seq2SeqLm`].
pub trait CachedDecoder {
    /// The token the decoder starts from.
    fn start_id(&self) -> u32;
    fn end_id(&self) -> u32;
    fn vocab_size(&self) -> usize;
    /// The encoder's output `[batch, src, d_model]` for a padded batch; `mask: [batch, src]` is 1 at
    /// real tokens (u32).
    fn memory(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor>;
    /// Every decoder layer's cross-attention keys and values over `memory`.
    fn source_keys_values(&self, memory: &Tensor) -> Result<Vec<(Tensor, Tensor)>>;
    /// Logits `[rows, 1, vocab]` after `tokens: [rows, 1]`, the target tokens at `position`, given
    /// every layer's cache (whose own keys and values it extends); also the last layer's
    /// cross-attention `[rows, heads, 1, src]`.
    fn step(
        &self,
        tokens: &Tensor,
        position: usize,
        mask: &Tensor,
        caches: &mut [DecoderLayerCache],
    ) -> Result<(Tensor, Tensor)>;
}

impl<M: CachedDecoder> Seq2SeqLm for M {
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
        let memory = self.memory(src, &mask)?;
        let mut tensors = vec![mask];
        for (k, v) in self.source_keys_values(&memory)? {
            tensors.extend([k.contiguous()?, v.contiguous()?]);
        }
        Ok(Batched(tensors))
    }

    /// No target positions yet: the first step's `last` is the start token.
    fn initial_state(&self, _memory: &Batched) -> Result<Batched> {
        Ok(Batched(Vec::new()))
    }

    fn decode_step(
        &self,
        memory: &Batched,
        state: &Batched,
        last: &Tensor,
    ) -> Result<(Tensor, Batched, Option<Tensor>)> {
        let (mask, source) = memory.0.split_first().expect("encode puts the mask first");
        let mut caches: Vec<DecoderLayerCache> = source
            .chunks_exact(2)
            .enumerate()
            .map(|(l, kv)| DecoderLayerCache {
                own: (!state.0.is_empty())
                    .then(|| (state.0[2 * l].clone(), state.0[2 * l + 1].clone())),
                source: (kv[0].clone(), kv[1].clone()),
            })
            .collect();
        let position = match state.0.first() {
            Some(k) => k.dim(1)?,
            None => 0,
        };
        let (logits, cross) = self.step(&last.unsqueeze(1)?, position, mask, &mut caches)?;
        let mut own = Vec::with_capacity(2 * caches.len());
        for cache in caches {
            let (k, v) = cache.own.expect("a step fills every layer's cache");
            own.extend([k, v]);
        }
        // Attention over the source for the new token, averaged over heads (for attention maps).
        let weights = cross.squeeze(2)?.mean(1)?;
        let log_probs = lingo_kernels::log_softmax(&logits.squeeze(1)?.to_dtype(DType::F32)?)?;
        Ok((log_probs, Batched(own), Some(weights)))
    }
}
