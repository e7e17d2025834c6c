//! Beam search for decoder-only models: [`beam_search_lm`] runs the encoder–decoder
//! [`beam_search`] over an adapter whose "source" is the prompt and whose decoder state is the
//! model's key/value cache, so every step costs one position's work per beam. Hypotheses are
//! ranked by the log-probability of the generated tokens over their number to the power
//! `length_penalty`, as `transformers` ranks decoder-only beams.

use crate::beam::{beam_search, BeamConfig, Hypothesis};
use candle_core::{bail, DType, Device, Result, Tensor};
use lingo_models::{Batched, CausalLm, Seq2SeqLm};
use lingo_nn::KvCache;

/// The `beam_size` best continuations of `prompt`, best first; each ends with `eos` unless
/// `cfg.max_length` (the number of new tokens) cut it off.
pub fn beam_search_lm(
    model: &dyn CausalLm,
    prompt: &[u32],
    eos: Option<u32>,
    cfg: &BeamConfig,
) -> Result<Vec<Hypothesis>> {
    let Some(&last) = prompt.last() else {
        bail!("the prompt is empty: give at least one token")
    };
    let needed = prompt.len() + cfg.max_length;
    if needed > model.context_length() {
        bail!(
            "{} prompt tokens plus {} new ones exceed the model's context of {} positions",
            prompt.len(),
            cfg.max_length,
            model.context_length()
        );
    }
    let adapter = Continuation {
        model,
        prompt,
        last,
        eos: eos.unwrap_or(u32::MAX),
    };
    // One "sentence": a one-token placeholder source (the prompt lives in the adapter).
    let src = Tensor::from_vec(vec![last], (1, 1), &Device::Cpu)?;
    Ok(beam_search(&adapter, &src, &[1], cfg)?
        .pop()
        .unwrap_or_default())
}

/// A [`CausalLm`] continuing a prompt, seen as an encoder–decoder: the first decoder input is the
/// prompt's last token, the state the cache of everything before it (`[k₀, v₀, k₁, v₁, …]`, empty
/// for a one-token prompt).
struct Continuation<'a> {
    model: &'a dyn CausalLm,
    prompt: &'a [u32],
    last: u32,
    eos: u32,
}

fn cache_state(cache: &[KvCache]) -> Result<Batched> {
    let mut tensors = Vec::with_capacity(2 * cache.len());
    for layer in cache {
        if let Some((k, v)) = layer.tensors()? {
            tensors.extend([k.contiguous()?, v.contiguous()?]);
        }
    }
    Ok(Batched(tensors))
}

impl Seq2SeqLm for Continuation<'_> {
    fn bos_id(&self) -> u32 {
        self.last
    }
    fn eos_id(&self) -> u32 {
        self.eos
    }
    fn target_vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn encode(&self, src: &Tensor, _lengths: &[usize]) -> Result<Batched> {
        Ok(Batched(vec![src.clone()]))
    }

    fn initial_state(&self, _memory: &Batched) -> Result<Batched> {
        let mut cache = self.model.new_cache();
        let before = &self.prompt[..self.prompt.len() - 1];
        if !before.is_empty() {
            let ids = Tensor::from_slice(before, (1, before.len()), &Device::Cpu)?;
            self.model.forward_cached(&ids, &mut cache)?;
        }
        cache_state(&cache)
    }

    fn decode_step(
        &self,
        _memory: &Batched,
        state: &Batched,
        last: &Tensor,
    ) -> Result<(Tensor, Batched, Option<Tensor>)> {
        let mut cache = if state.0.is_empty() {
            self.model.new_cache()
        } else {
            state
                .0
                .chunks_exact(2)
                .map(|kv| KvCache::from_tensors(&kv[0], &kv[1]))
                .collect::<Result<_>>()?
        };
        let logits = self.model.forward_cached(&last.unsqueeze(1)?, &mut cache)?;
        let log_probs = lingo_kernels::log_softmax(&logits.squeeze(1)?.to_dtype(DType::F32)?)?;
        Ok((log_probs, cache_state(&cache)?, None))
    }
}
