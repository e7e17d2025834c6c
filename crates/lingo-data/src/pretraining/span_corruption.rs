//! T5's span corruption (Raffel et al., 2020), exactly as `DataCollatorForT5MLM` of
//! `transformers`' `run_t5_mlm_flax.py` computes it: of a block of `n` tokens, `round(n · 0.15)`
//! form noise spans of mean length 3, the spans' lengths and the gaps between them drawn as random
//! segmentations. The encoder input keeps the other tokens with each span replaced by one sentinel
//! (`<extra_id_0>`, `<extra_id_1>`, … — the last ids, counting down); the target lists each
//! sentinel followed by the tokens it hid; both end with `</s>`. Rounding is NumPy's (half to even).

use lingo_nn::LingoRng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpanCorruption {
    pub noise_density: f64,
    pub mean_noise_span_length: f64,
}

impl Default for SpanCorruption {
    fn default() -> Self {
        SpanCorruption {
            noise_density: 0.15,
            mean_noise_span_length: 3.0,
        }
    }
}

/// `np.round`: halves go to the even neighbour.
fn round(x: f64) -> usize {
    x.round_ties_even() as usize
}

impl SpanCorruption {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.noise_density > 0.0 && self.noise_density < 1.0) {
            return Err(format!(
                "span corruption: noise_density must be in (0, 1), got {}",
                self.noise_density
            ));
        }
        if self.mean_noise_span_length < 1.0 {
            return Err(format!(
                "span corruption: mean_noise_span_length must be at least 1, got {}",
                self.mean_noise_span_length
            ));
        }
        Ok(())
    }

    /// Encoder and decoder lengths (with `</s>`) that a block of `tokens` tokens corrupts into.
    fn lengths_of(&self, tokens: usize) -> (usize, usize) {
        let noise = round(tokens as f64 * self.noise_density);
        let spans = round(noise as f64 / self.mean_noise_span_length);
        (tokens - noise + spans + 1, noise + spans + 1)
    }

    /// `compute_input_and_target_lengths`: the raw block length whose corrupted input is at most
    /// `input_length` tokens, and the target length it gives.
    pub fn block_lengths(&self, input_length: usize) -> (usize, usize) {
        let mut tokens = input_length;
        while self.lengths_of(tokens + 1).0 <= input_length {
            tokens += 1;
        }
        let (_, mut targets) = self.lengths_of(tokens);
        if self.noise_density == 0.5 && targets > input_length {
            tokens -= 1;
            targets -= 1;
        }
        (tokens, targets)
    }

    /// `random_spans_noise_mask`: which of `length` tokens are noise.
    pub fn noise_mask(&self, length: usize, rng: &mut LingoRng) -> Vec<bool> {
        if length < 2 {
            return vec![false; length];
        }
        // As the reference: the kept count is taken before the noise count is clamped, and the
        // mask cut to `length` at the end.
        let noise = round(length as f64 * self.noise_density);
        let nonnoise = length - noise;
        let noise = noise.clamp(1, length - 1);
        let spans = round(noise.min(nonnoise) as f64 / self.mean_noise_span_length).max(1);
        let noise_lengths = random_segmentation(noise, spans, rng);
        let nonnoise_lengths = random_segmentation(nonnoise, spans, rng);
        let mut mask = Vec::with_capacity(length);
        for (gap, span) in nonnoise_lengths.into_iter().zip(noise_lengths) {
            mask.extend(std::iter::repeat_n(false, gap));
            mask.extend(std::iter::repeat_n(true, span));
        }
        mask.truncate(length);
        mask
    }

    /// The encoder input and decoder target of `ids` under `mask`; `first_sentinel` is the id of
    /// `<extra_id_0>` (the next sentinels count down from it), `eos` that of `</s>`. The input
    /// replaces each noise span by a sentinel, the target each kept span (`create_sentinel_ids`
    /// then `filter_input_ids`, once on the mask and once on its complement).
    pub fn corrupt(
        &self,
        ids: &[u32],
        mask: &[bool],
        first_sentinel: u32,
        eos: u32,
    ) -> (Vec<u32>, Vec<u32>) {
        let keep: Vec<bool> = mask.iter().map(|m| !m).collect();
        (
            replace_spans(ids, mask, first_sentinel, eos),
            replace_spans(ids, &keep, first_sentinel, eos),
        )
    }
}

/// `ids` with each run of `replaced` positions turned into one sentinel (counting down from
/// `first_sentinel`), then `eos`.
fn replace_spans(ids: &[u32], replaced: &[bool], first_sentinel: u32, eos: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len() + 1);
    let mut sentinel = first_sentinel;
    for (i, (&id, &r)) in ids.iter().zip(replaced).enumerate() {
        if !r {
            out.push(id);
        } else if i == 0 || !replaced[i - 1] {
            out.push(sentinel);
            sentinel = sentinel.saturating_sub(1);
        }
    }
    out.push(eos);
    out
}

/// `_random_segmentation`: `items` split into `segments` non-empty runs, uniformly among all
/// such splits (`segments − 1` cut points shuffled among the `items − 1` gaps).
fn random_segmentation(items: usize, segments: usize, rng: &mut LingoRng) -> Vec<usize> {
    let mut cuts: Vec<bool> = (0..items.saturating_sub(1))
        .map(|i| i < segments - 1)
        .collect();
    rng.shuffle(&mut cuts);
    let mut lengths = vec![1usize];
    for cut in cuts {
        if cut {
            lengths.push(1);
        } else {
            *lengths.last_mut().expect("starts with one") += 1;
        }
    }
    lengths
}
