//! Decoding, written once against small traits so every model gets it:
//! - for decoder-only models ([`CausalLm`]): greedy decoding and sampling with temperature, top-k and
//!   top-p (nucleus), stopping at stop tokens, using the model's KV cache so each new token costs one
//!   position's work;
//! - for encoder–decoders ([`lingo_models::Seq2SeqLm`]): batched [`beam::beam_search`] and greedy;
//!   the same beam search continues a decoder-only model's prompt ([`beam_search_lm`]).

pub mod beam;
pub mod continuation;

pub use beam::{beam_search, greedy, BeamConfig, Hypothesis};
pub use continuation::beam_search_lm;

use candle_core::{bail, DType, Device, Result, Tensor, D};
use lingo_models::CausalLm;
use lingo_nn::LingoRng;
use serde::{Deserialize, Serialize};

/// How to pick each next token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Sample only among the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to `p`.
    pub top_p: Option<f32>,
    pub max_new_tokens: usize,
    /// Generation ends after producing any of these.
    pub stop_tokens: Vec<u32>,
    /// CTRL's repetition penalty (Keskar et al., 2019), as `transformers` applies it: the logit of
    /// every token already in the text is divided by it if positive, multiplied if negative. 1 = off.
    pub repetition_penalty: f32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            max_new_tokens: 200,
            stop_tokens: Vec::new(),
            repetition_penalty: 1.0,
        }
    }
}

impl SamplingConfig {
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingConfig {
            temperature: 0.0,
            max_new_tokens,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        if self.top_k == Some(0) {
            return Err("top_k must be at least 1".into());
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("top_p must be in (0, 1], got {p}"));
            }
        }
        Ok(())
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Makes the tokens in `seen` less likely (see [`SamplingConfig::repetition_penalty`]).
pub fn penalize_repetition(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = vec![false; logits.len()];
    for &t in seen {
        let t = t as usize;
        if t < logits.len() && !done[t] {
            done[t] = true;
            logits[t] = if logits[t] > 0.0 {
                logits[t] / penalty
            } else {
                logits[t] * penalty
            };
        }
    }
}

/// Picks the next token from one row of logits.
pub fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut LingoRng) -> u32 {
    if cfg.temperature == 0.0 {
        return argmax(logits) as u32;
    }
    // Candidates sorted by logit, most likely first.
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = cfg.top_k {
        order.truncate(k.max(1));
    }
    let top = logits[order[0]];
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| (((logits[i] - top) / cfg.temperature) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(p) = cfg.top_p {
        // Keep the smallest prefix whose mass reaches p (always at least one token).
        let mut mass = 0.0;
        let mut keep = probs.len();
        for (i, &q) in probs.iter().enumerate() {
            mass += q;
            if mass >= p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut r = rng.uniform() as f64 * total;
    for (i, &q) in probs.iter().enumerate() {
        r -= q;
        if r < 0.0 {
            return order[i] as u32;
        }
    }
    order[probs.len() - 1] as u32
}

/// Continues `prompt` with up to `cfg.max_new_tokens` tokens, calling `on_token` as each is chosen
/// (for streaming). When the context fills up, the cache is rebuilt from the most recent three
/// quarters of the context and generation goes on.
pub fn generate(
    model: &dyn CausalLm,
    prompt: &[u32],
    cfg: &SamplingConfig,
    rng: &mut LingoRng,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    cfg.validate().map_err(candle_core::Error::Msg)?;
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one token");
    }
    let ctx = model.context_length();
    let keep = (ctx * 3 / 4).max(1);
    let mut tokens = prompt.to_vec();
    if tokens.len() > ctx {
        tokens.drain(..tokens.len() - keep);
    }
    let mut cache = model.new_cache();
    let mut logits = last_logits(model, &tokens, &mut cache)?;
    let mut out = Vec::new();
    for _ in 0..cfg.max_new_tokens {
        penalize_repetition(&mut logits, &tokens, cfg.repetition_penalty);
        let next = sample(&logits, cfg, rng);
        out.push(next);
        on_token(next);
        if cfg.stop_tokens.contains(&next) {
            break;
        }
        tokens.push(next);
        if tokens.len() > ctx {
            tokens.drain(..tokens.len() - keep);
            cache = model.new_cache();
            logits = last_logits(model, &tokens, &mut cache)?;
        } else {
            logits = last_logits(model, &[next], &mut cache)?;
        }
    }
    Ok(out)
}

/// Feeds `ids` through the model (extending `cache`) and returns the logits after the last one.
pub fn last_logits(
    model: &dyn CausalLm,
    ids: &[u32],
    cache: &mut [lingo_nn::KvCache],
) -> Result<Vec<f32>> {
    let input = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu)?;
    let logits = model.forward_cached(&input, cache)?;
    let last = logits.narrow(1, ids.len() - 1, 1)?.squeeze(1)?.squeeze(0)?;
    last.to_dtype(DType::F32)?
        .flatten_to(D::Minus1)?
        .to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_shrinks_seen_logits_toward_less_likely() {
        let mut logits = [2.0, -1.0, 0.5];
        penalize_repetition(&mut logits, &[0, 1, 1], 2.0);
        assert_eq!(logits, [1.0, -2.0, 0.5]);
        let cfg = SamplingConfig {
            repetition_penalty: 0.0,
            ..Default::default()
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn greedy_is_argmax_and_top_k_1_is_greedy() {
        let logits = [0.1, 2.0, -1.0, 1.9];
        let mut rng = LingoRng::new(0);
        assert_eq!(sample(&logits, &SamplingConfig::greedy(1), &mut rng), 1);
        let cfg = SamplingConfig {
            top_k: Some(1),
            ..Default::default()
        };
        for _ in 0..20 {
            assert_eq!(sample(&logits, &cfg, &mut rng), 1);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus_only() {
        // Probabilities ∝ e^logit: token 0 holds ~0.79 of the mass, so top_p 0.75 keeps only it.
        let logits = [3.0, 1.0, 0.5, 0.0];
        let mut rng = LingoRng::new(1);
        let cfg = SamplingConfig {
            top_p: Some(0.75),
            ..Default::default()
        };
        assert!((0..50).all(|_| sample(&logits, &cfg, &mut rng) == 0));
        let cfg = SamplingConfig {
            top_p: Some(0.95),
            ..Default::default()
        };
        let seen: std::collections::BTreeSet<u32> =
            (0..400).map(|_| sample(&logits, &cfg, &mut rng)).collect();
        assert!(seen.contains(&1) && !seen.contains(&3), "{seen:?}");
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = [0.25, 0.75]
        let mut rng = LingoRng::new(2);
        let cfg = SamplingConfig::default();
        let ones = (0..4000)
            .filter(|_| sample(&logits, &cfg, &mut rng) == 1)
            .count();
        assert!((2850..3150).contains(&ones), "{ones}");
    }

    #[test]
    fn bad_settings_are_rejected() {
        assert!(SamplingConfig {
            top_p: Some(1.5),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingConfig {
            temperature: -1.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingConfig {
            top_k: Some(0),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
