//! Beam search for any encoder–decoder ([`Seq2SeqLm`]), batched over sentences and beams. Greedy
//! decoding is the beam of one.
//!
//! Each sentence keeps `beam_size` live hypotheses. At every step each is extended by its best
//! `2·beam_size` tokens; the best candidates that end in EOS become finished hypotheses, the best others
//! stay live. A hypothesis is ranked by `log P / length^length_penalty` (0 = raw sum, 1 = mean per
//! token). A sentence stops once it has `beam_size` finished hypotheses and — unless `early_stopping`
//! — none of its live hypotheses still scores better than the worst of them.

use candle_core::{bail, DType, Result, Tensor};
use lingo_models::Seq2SeqLm;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeamConfig {
    pub beam_size: usize,
    /// Most target tokens generated (EOS included).
    pub max_length: usize,
    pub length_penalty: f32,
    pub early_stopping: bool,
    /// EOS may not come before this many tokens.
    pub min_length: usize,
    /// No n-gram of this many tokens (the start token counts) occurs twice in an output; 0 = off.
    pub no_repeat_ngram_size: usize,
    /// Token sequences never generated (`bad_words_ids`): the last token of each is banned after
    /// the others.
    pub banned: Vec<Vec<u32>>,
    /// The token every output starts with (`forced_bos_token_id`).
    pub forced_first: Option<u32>,
    /// The token an output that reaches `max_length` ends with (`forced_eos_token_id`).
    pub forced_last: Option<u32>,
}

impl Default for BeamConfig {
    fn default() -> Self {
        BeamConfig {
            beam_size: 5,
            max_length: 100,
            length_penalty: 1.0,
            early_stopping: false,
            min_length: 0,
            no_repeat_ngram_size: 0,
            banned: Vec::new(),
            forced_first: None,
            forced_last: None,
        }
    }
}

impl BeamConfig {
    pub fn greedy(max_length: usize) -> Self {
        BeamConfig {
            beam_size: 1,
            max_length,
            length_penalty: 0.0,
            early_stopping: true,
            ..Default::default()
        }
    }

    /// Settings from a Hugging Face generation config (`setting` looks a key up in
    /// `generation_config.json`, then `config.json`). Its lengths count the decoder's start token,
    /// Lingo's do not. Without `num_beams` the beam is 4 (transformers would be greedy), without
    /// `max_length` 200 tokens (transformers: 19).
    pub fn from_generation_config(
        setting: impl Fn(&str) -> Option<serde_json::Value>,
    ) -> Result<Self> {
        let count = |key: &str| setting(key).and_then(|v| v.as_u64()).map(|n| n as usize);
        let token = |key: &str| setting(key).and_then(|v| v.as_u64()).map(|n| n as u32);
        let banned = match setting("bad_words_ids") {
            Some(v) => serde_json::from_value(v).map_err(|e| {
                candle_core::Error::Msg(format!("`bad_words_ids` must be lists of token ids: {e}"))
            })?,
            None => Vec::new(),
        };
        Ok(BeamConfig {
            beam_size: count("num_beams").unwrap_or(4).max(1),
            max_length: count("max_length").unwrap_or(201).saturating_sub(1).max(1),
            length_penalty: (setting("length_penalty").and_then(|v| v.as_f64())).unwrap_or(1.0)
                as f32,
            early_stopping: setting("early_stopping").and_then(|v| v.as_bool()) == Some(true),
            min_length: count("min_length").unwrap_or(0).saturating_sub(1),
            no_repeat_ngram_size: count("no_repeat_ngram_size").unwrap_or(0),
            banned,
            forced_first: token("forced_bos_token_id"),
            forced_last: token("forced_eos_token_id"),
        })
    }

    /// Applies the constraints to the log-probabilities `lp` of the token after `tokens` (which
    /// follow the start token), as `transformers`' logits processors do: banned tokens get −∞, a
    /// forced token gets 0 and every other −∞.
    fn constrain(&self, lp: &mut [f32], start: u32, tokens: &[u32], eos: u32) {
        let step = tokens.len();
        let forced = match (self.forced_first, self.forced_last) {
            (Some(first), _) if step == 0 => Some(first),
            (_, Some(last)) if step + 1 == self.max_length => Some(last),
            _ => None,
        };
        if let Some(token) = forced {
            lp.fill(f32::NEG_INFINITY);
            if let Some(x) = lp.get_mut(token as usize) {
                *x = 0.0;
            }
            return;
        }
        let mut ban = |token: u32| {
            if let Some(x) = lp.get_mut(token as usize) {
                *x = f32::NEG_INFINITY;
            }
        };
        if step < self.min_length {
            ban(eos);
        }
        let text: Vec<u32> = std::iter::once(start)
            .chain(tokens.iter().copied())
            .collect();
        for words in &self.banned {
            if let Some((&last, before)) = words.split_last() {
                if text.ends_with(before) {
                    ban(last);
                }
            }
        }
        let n = self.no_repeat_ngram_size;
        if n > 0 && text.len() + 1 >= n {
            let prefix = &text[text.len() + 1 - n..];
            for gram in text.windows(n) {
                if gram[..n - 1] == *prefix {
                    ban(gram[n - 1]);
                }
            }
        }
    }
}

/// A finished (or length-capped) output.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Target tokens, ending with EOS unless `max_length` cut it off.
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log-probabilities.
    pub log_prob: f32,
    /// `log_prob / len^length_penalty`, what hypotheses are ranked by.
    pub score: f32,
    /// Attention over the source for each output token (empty if the model does not attend).
    pub attention: Vec<Vec<f32>>,
}

/// The score of a sequence of `len` tokens with total log-probability `log_prob`.
pub fn length_normalised(log_prob: f32, len: usize, length_penalty: f32) -> f32 {
    log_prob / (len.max(1) as f32).powf(length_penalty)
}

#[derive(Clone)]
struct Live {
    tokens: Vec<u32>,
    log_prob: f32,
    attention: Vec<Vec<f32>>,
}

/// Decodes every sentence of the padded batch `src` (`[batch, src_len]`, real `lengths`). Returns,
/// per sentence, up to `beam_size` hypotheses, best first.
pub fn beam_search(
    model: &dyn Seq2SeqLm,
    src: &Tensor,
    lengths: &[usize],
    cfg: &BeamConfig,
) -> Result<Vec<Vec<Hypothesis>>> {
    if cfg.beam_size == 0 || cfg.max_length == 0 {
        bail!("beam_size and max_length must be positive");
    }
    let device = src.device().clone();
    let batch = lengths.len();
    let memory = model.encode(src, lengths)?.detach();
    let eos = model.eos_id();
    let k = cfg.beam_size;
    // Live hypotheses of each sentence; row r of the decoder state belongs to `owner[r]`.
    let mut live: Vec<Vec<Live>> = (0..batch)
        .map(|_| {
            vec![Live {
                tokens: vec![],
                log_prob: 0.0,
                attention: vec![],
            }]
        })
        .collect();
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); batch];
    let mut done = vec![false; batch];
    let mut owner: Vec<usize> = (0..batch).collect();
    let mut state = model.initial_state(&memory)?.detach();
    let mut rows_memory = memory.clone();
    let mut memory_owner = owner.clone();
    let vocab = model.target_vocab_size();
    for step in 0..cfg.max_length {
        // Live beams in row order: sentence by sentence.
        let last: Vec<u32> = live
            .iter()
            .flatten()
            .map(|h| *h.tokens.last().unwrap_or(&model.bos_id()))
            .collect();
        let last = Tensor::from_vec(last, owner.len(), &device)?;
        let (log_probs, next_state, weights) = model.decode_step(&rows_memory, &state, &last)?;
        let next_state = next_state.detach();
        let log_probs = log_probs.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let weights = match weights {
            Some(w) => Some(w.to_dtype(DType::F32)?.to_vec2::<f32>()?),
            None => None,
        };
        let mut new_live: Vec<Vec<Live>> = vec![Vec::new(); batch];
        let mut chosen_rows: Vec<u32> = Vec::new();
        let mut new_owner = Vec::new();
        let mut row = 0;
        for s in 0..batch {
            let beams = std::mem::take(&mut live[s]);
            let first_row = row;
            row += beams.len();
            if done[s] {
                continue;
            }
            // Every (beam, token) candidate's total log-probability, best first.
            let mut candidates: Vec<(f32, usize, u32)> = Vec::new();
            for (b, h) in beams.iter().enumerate() {
                let mut lp = log_probs[first_row + b].clone();
                cfg.constrain(&mut lp, model.bos_id(), &h.tokens, eos);
                let mut order: Vec<usize> = (0..vocab).collect();
                let take = (2 * k).min(vocab);
                order.select_nth_unstable_by(take - 1, |&x, &y| lp[y].total_cmp(&lp[x]));
                // Banned tokens (−∞) are never candidates.
                for &tok in order[..take].iter().filter(|&&t| lp[t].is_finite()) {
                    candidates.push((h.log_prob + lp[tok], b, tok as u32));
                }
            }
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
            let last_step = step + 1 == cfg.max_length;
            for (rank, &(total, b, tok)) in candidates.iter().enumerate() {
                let h = &beams[b];
                let mut tokens = h.tokens.clone();
                tokens.push(tok);
                let mut attention = h.attention.clone();
                if let Some(w) = &weights {
                    attention.push(w[first_row + b][..lengths[s]].to_vec());
                }
                if tok == eos || last_step {
                    // Only EOS candidates that would have made the beam count (as in Hugging Face).
                    if rank < k || last_step {
                        let score = length_normalised(total, tokens.len(), cfg.length_penalty);
                        finished[s].push(Hypothesis {
                            tokens,
                            log_prob: total,
                            score,
                            attention,
                        });
                    }
                } else if new_live[s].len() < k {
                    new_live[s].push(Live {
                        tokens,
                        log_prob: total,
                        attention,
                    });
                    chosen_rows.push((first_row + b) as u32);
                    new_owner.push(s);
                }
                // Past rank k nothing more can join: the beam is full and EOS candidates no longer count.
                if !last_step && rank + 1 >= k && new_live[s].len() >= k {
                    break;
                }
            }
            finished[s].sort_by(|a, b| b.score.total_cmp(&a.score));
            finished[s].truncate(k);
            let best_live = new_live[s]
                .iter()
                .map(|h| length_normalised(h.log_prob, h.tokens.len(), cfg.length_penalty))
                .fold(f32::NEG_INFINITY, f32::max);
            let full = finished[s].len() >= k;
            let worst_finished = finished[s].last().map_or(f32::NEG_INFINITY, |h| h.score);
            if new_live[s].is_empty()
                || (full && (cfg.early_stopping || best_live <= worst_finished))
            {
                done[s] = true;
                // Drop its live rows.
                let keep = new_owner.iter().filter(|&&o| o != s).count();
                let (rows, owners): (Vec<u32>, Vec<usize>) = chosen_rows
                    .iter()
                    .zip(&new_owner)
                    .filter(|(_, &o)| o != s)
                    .map(|(&r, &o)| (r, o))
                    .unzip();
                debug_assert_eq!(rows.len(), keep);
                chosen_rows = rows;
                new_owner = owners;
                new_live[s].clear();
            }
        }
        live = new_live;
        owner = new_owner;
        if owner.is_empty() {
            break;
        }
        let rows = Tensor::from_vec(chosen_rows, owner.len(), &device)?;
        state = next_state.select(&rows)?;
        // Beams of one sentence share its memory, so the memory rows only change when the set of
        // live rows per sentence does — not when beams are reordered.
        if owner != memory_owner {
            let owners: Vec<u32> = owner.iter().map(|&o| o as u32).collect();
            rows_memory = memory.select(&Tensor::from_vec(owners, owner.len(), &device)?)?;
            memory_owner = owner.clone();
        }
    }
    Ok(finished)
}

/// The best hypothesis of each sentence by greedy decoding.
pub fn greedy(
    model: &dyn Seq2SeqLm,
    src: &Tensor,
    lengths: &[usize],
    max_length: usize,
) -> Result<Vec<Hypothesis>> {
    Ok(
        beam_search(model, src, lengths, &BeamConfig::greedy(max_length))?
            .into_iter()
            .map(|mut h| h.remove(0))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use lingo_models::Batched;

    /// A "model" whose next-token distribution is a fixed pseudo-random function of the prefix, so
    /// every output sequence's probability can be enumerated.
    struct Oracle {
        vocab: usize,
    }

    const BOS: u32 = 0;
    const EOS: u32 = 1;

    fn mix(h: u32, tok: u32) -> u32 {
        (h ^ tok.wrapping_add(0x9E37_79B9))
            .wrapping_mul(0x85EB_CA6B)
            .rotate_left(13)
    }

    impl Oracle {
        fn log_probs(&self, prefix_hash: u32) -> Vec<f32> {
            let logits: Vec<f32> = (0..self.vocab as u32)
                .map(|t| (mix(prefix_hash, t + 77) % 1000) as f32 / 250.0)
                .collect();
            let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f32>().ln();
            logits.iter().map(|l| l - lse).collect()
        }
    }

    impl Seq2SeqLm for Oracle {
        fn bos_id(&self) -> u32 {
            BOS
        }
        fn eos_id(&self) -> u32 {
            EOS
        }
        fn target_vocab_size(&self) -> usize {
            self.vocab
        }
        fn encode(&self, src: &Tensor, _lengths: &[usize]) -> Result<Batched> {
            // The source's first token seeds the prefix hash.
            Ok(Batched(vec![src.narrow(1, 0, 1)?.squeeze(1)?]))
        }
        fn initial_state(&self, memory: &Batched) -> Result<Batched> {
            Ok(Batched(vec![memory.0[0].clone()]))
        }
        fn decode_step(
            &self,
            _m: &Batched,
            state: &Batched,
            last: &Tensor,
        ) -> Result<(Tensor, Batched, Option<Tensor>)> {
            let hashes = state.0[0].to_vec1::<u32>()?;
            let last = last.to_vec1::<u32>()?;
            let next: Vec<u32> = hashes.iter().zip(&last).map(|(&h, &t)| mix(h, t)).collect();
            let lp: Vec<f32> = next.iter().flat_map(|&h| self.log_probs(h)).collect();
            let n = next.len();
            Ok((
                Tensor::from_vec(lp, (n, self.vocab), &Device::Cpu)?,
                Batched(vec![Tensor::from_vec(next, n, &Device::Cpu)?]),
                None,
            ))
        }
    }

    /// The best sequence by exhaustive enumeration.
    fn exhaustive(oracle: &Oracle, seed: u32, max_len: usize, penalty: f32) -> (Vec<u32>, f32) {
        let mut best = (vec![], f32::NEG_INFINITY);
        let mut stack = vec![(vec![], seed, BOS, 0.0f32)];
        while let Some((tokens, hash, last, lp)) = stack.pop() {
            let h = mix(hash, last);
            for (tok, l) in oracle.log_probs(h).into_iter().enumerate() {
                let mut t = tokens.clone();
                t.push(tok as u32);
                let total = lp + l;
                if tok as u32 == EOS || t.len() == max_len {
                    let score = length_normalised(total, t.len(), penalty);
                    if score > best.1 {
                        best = (t, score);
                    }
                } else {
                    stack.push((t, h, tok as u32, total));
                }
            }
        }
        best
    }

    #[test]
    fn a_wide_beam_finds_the_exhaustive_optimum() -> Result<()> {
        let oracle = Oracle { vocab: 4 };
        let seeds = [3u32, 17, 29];
        let src = Tensor::from_vec(seeds.to_vec(), (3, 1), &Device::Cpu)?;
        for penalty in [0.0, 1.0] {
            let cfg = BeamConfig {
                beam_size: 64,
                max_length: 4,
                length_penalty: penalty,
                early_stopping: false,
                ..Default::default()
            };
            let out = beam_search(&oracle, &src, &[1, 1, 1], &cfg)?;
            for (i, &seed) in seeds.iter().enumerate() {
                let (tokens, score) = exhaustive(&oracle, seed, 4, penalty);
                assert_eq!(out[i][0].tokens, tokens, "sentence {i}, penalty {penalty}");
                assert!((out[i][0].score - score).abs() < 1e-5);
            }
        }
        Ok(())
    }

    #[test]
    fn greedy_follows_the_argmax_and_beams_never_do_worse() -> Result<()> {
        let oracle = Oracle { vocab: 5 };
        let src = Tensor::from_vec(vec![11u32, 12], (2, 1), &Device::Cpu)?;
        let greedy_out = greedy(&oracle, &src, &[1, 1], 6)?;
        for (i, h) in greedy_out.iter().enumerate() {
            // Re-derive the argmax path.
            let mut hash = [11u32, 12][i];
            let mut last = BOS;
            let mut path = vec![];
            for _ in 0..6 {
                hash = mix(hash, last);
                let lp = oracle.log_probs(hash);
                let tok = (0..5).max_by(|&a, &b| lp[a].total_cmp(&lp[b])).unwrap() as u32;
                path.push(tok);
                last = tok;
                if tok == EOS {
                    break;
                }
            }
            assert_eq!(h.tokens, path);
        }
        let beam = beam_search(
            &oracle,
            &src,
            &[1, 1],
            &BeamConfig {
                beam_size: 4,
                max_length: 6,
                length_penalty: 0.0,
                early_stopping: false,
                ..Default::default()
            },
        )?;
        for (g, b) in greedy_out.iter().zip(&beam) {
            assert!(b[0].log_prob >= g.log_prob - 1e-6);
        }
        Ok(())
    }

    /// Each constraint bans (or forces) exactly the tokens it names. Start token 0, EOS 1.
    #[test]
    fn constraints_ban_and_force_tokens() {
        let banned = |cfg: &BeamConfig, tokens: &[u32]| -> Vec<u32> {
            let mut lp = vec![-1.0f32; 8];
            cfg.constrain(&mut lp, 0, tokens, 1);
            (0..8).filter(|&t| lp[t as usize].is_infinite()).collect()
        };
        let min = BeamConfig {
            min_length: 2,
            ..Default::default()
        };
        assert_eq!(banned(&min, &[4]), vec![1]);
        assert!(banned(&min, &[4, 5]).is_empty());
        // Bigram (5, 6) was seen, and (0, 5) through the start token.
        let ngram = BeamConfig {
            no_repeat_ngram_size: 2,
            ..Default::default()
        };
        assert_eq!(banned(&ngram, &[5, 6, 5]), vec![6]);
        assert_eq!(banned(&ngram, &[]), Vec::<u32>::new());
        let words = BeamConfig {
            banned: vec![vec![7], vec![3, 4]],
            ..Default::default()
        };
        assert_eq!(banned(&words, &[2, 3]), vec![4, 7]);
        assert_eq!(banned(&words, &[3, 2]), vec![7]);
        let forced = BeamConfig {
            max_length: 4,
            forced_first: Some(6),
            forced_last: Some(1),
            ..Default::default()
        };
        let all_but = |t: u32| (0..8).filter(|&x| x != t).collect::<Vec<_>>();
        assert_eq!(banned(&forced, &[]), all_but(6));
        assert_eq!(banned(&forced, &[6, 2, 3]), all_but(1));
        assert!(banned(&forced, &[6, 2]).is_empty());
    }

    /// An encoder–decoder with a trainable weight, so autodiff records every op it makes, that
    /// checks it is handed nothing recorded: decoding keeps its memory and state between steps, and
    /// a recorded tensor would keep every earlier step's activations alive with it.
    struct Recorded {
        weight: candle_core::Var,
    }

    impl Seq2SeqLm for Recorded {
        fn bos_id(&self) -> u32 {
            BOS
        }
        fn eos_id(&self) -> u32 {
            EOS
        }
        fn target_vocab_size(&self) -> usize {
            3
        }
        fn encode(&self, src: &Tensor, _lengths: &[usize]) -> Result<Batched> {
            let x = src
                .to_dtype(DType::F32)?
                .broadcast_mul(self.weight.as_tensor())?;
            assert!(x.track_op(), "the test model must be recorded by autodiff");
            Ok(Batched(vec![x]))
        }
        fn initial_state(&self, memory: &Batched) -> Result<Batched> {
            Ok(Batched(vec![memory.0[0].affine(2.0, 0.0)?]))
        }
        fn decode_step(
            &self,
            memory: &Batched,
            state: &Batched,
            _last: &Tensor,
        ) -> Result<(Tensor, Batched, Option<Tensor>)> {
            assert!(!memory.0[0].track_op() && !state.0[0].track_op());
            let rows = state.0[0].dim(0)?;
            let next = (state.0[0].broadcast_mul(self.weight.as_tensor())? + 1.0)?;
            let lp = Tensor::new(&[-2.0f32, -1.0, -0.5], &Device::Cpu)?
                .broadcast_mul(self.weight.as_tensor())?
                .broadcast_as((rows, 3))?
                .contiguous()?;
            Ok((lp, Batched(vec![next]), None))
        }
    }

    #[test]
    fn decoding_keeps_nothing_recorded_by_autodiff() -> Result<()> {
        let weight = candle_core::Var::new(&[1.0f32], &Device::Cpu)?;
        let src = Tensor::from_vec(vec![5u32, 6, 7, 8], (2, 2), &Device::Cpu)?;
        let cfg = BeamConfig {
            beam_size: 2,
            max_length: 5,
            ..Default::default()
        };
        let out = beam_search(&Recorded { weight }, &src, &[2, 2], &cfg)?;
        assert_eq!(out.len(), 2);
        Ok(())
    }
}
