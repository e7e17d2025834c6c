//! Masked language modelling (Devlin et al., 2019): about 15% of the tokens are chosen for
//! prediction; of those, 80% become `[MASK]`, 10% a random token and 10% stay as they are, so the
//! model cannot learn that only `[MASK]` positions matter. Special tokens are never chosen.
//!
//! The choice is `transformers`' `DataCollatorForLanguageModeling`'s: each token is chosen
//! independently with the probability, then 80/10/10 decided per chosen token. With
//! **whole-word masking** each *word* is chosen with the probability and all its pieces together
//! (as the collator's `whole_word_mask=True`); a word is a WordPiece token with its `##`
//! continuations (BERT's definition), or a byte-level BPE / SentencePiece token with the tokens
//! up to the next word start (`Ġ`, `▁`).

use crate::tokenizer::Tokenizer;
use crate::{DataError, Result};
use lingo_nn::LingoRng;
use serde::{Deserialize, Serialize};

/// The label of a position that is not predicted (PyTorch's cross-entropy `ignore_index`).
pub const IGNORE: i64 = -100;

/// How tokens are chosen and corrupted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskingConfig {
    /// Share of the (non-special) tokens predicted.
    pub probability: f32,
    /// Of the chosen tokens, the share replaced by the mask token …
    pub mask_fraction: f32,
    /// … and the share replaced by a random token; the rest stay.
    pub random_fraction: f32,
    /// Choose whole words rather than single tokens.
    pub whole_word: bool,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        MaskingConfig {
            probability: 0.15,
            mask_fraction: 0.8,
            random_fraction: 0.1,
            whole_word: false,
        }
    }
}

impl MaskingConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, p) in [
            ("probability", self.probability),
            ("mask_fraction", self.mask_fraction),
            ("random_fraction", self.random_fraction),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "masking: field `{name}` must be in [0, 1], got {p}"
                ));
            }
        }
        if self.mask_fraction + self.random_fraction > 1.0 + 1e-6 {
            return Err(format!(
                "masking: mask_fraction {} + random_fraction {} exceed 1",
                self.mask_fraction, self.random_fraction
            ));
        }
        Ok(())
    }
}

/// A masked sequence: the corrupted input and, at each chosen position, the original id
/// ([`IGNORE`] elsewhere).
#[derive(Clone, Debug, PartialEq)]
pub struct Masked {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

/// Masks sequences of one tokenizer's ids.
#[derive(Clone, Debug)]
pub struct Masker {
    pub config: MaskingConfig,
    pub mask_id: u32,
    /// Per id: a special token, never chosen and never drawn as a random replacement.
    special: Vec<bool>,
    /// Per id: whether the token continues the word before it.
    continues_word: Vec<bool>,
    /// The ids a random replacement is drawn from.
    ordinary: Vec<u32>,
}

impl Masker {
    /// A masker for `tokenizer`, whose mask token (`[MASK]` or `<mask>`) it uses and whose pieces
    /// tell where words start.
    pub fn new(tokenizer: &Tokenizer, config: MaskingConfig) -> Result<Self> {
        config.validate().map_err(DataError::Invalid)?;
        let (_, mask_id) = tokenizer.mask_token().ok_or_else(|| {
            DataError::Invalid(
                "masked-LM pre-training needs a tokenizer with a mask token ([MASK] or <mask>)"
                    .into(),
            )
        })?;
        let vocab = tokenizer.vocab_size();
        let specials = tokenizer.special_ids();
        let mut special = vec![false; vocab];
        for id in specials {
            if (id as usize) < vocab {
                special[id as usize] = true;
            }
        }
        let pieces = tokenizer.tokens(&(0..vocab as u32).collect::<Vec<_>>());
        // WordPiece marks continuations (`##`); byte-level BPE and SentencePiece mark word starts
        // (`Ġ`, `▁`), so there a piece without the mark continues a word.
        let wordpiece = pieces.iter().any(|p| p.starts_with("##"));
        let continues_word = pieces
            .iter()
            .map(|p| {
                if wordpiece {
                    p.starts_with("##")
                } else {
                    !(p.starts_with('Ġ') || p.starts_with('▁'))
                }
            })
            .collect();
        let ordinary = (0..vocab as u32)
            .filter(|&i| !special[i as usize])
            .collect();
        Ok(Masker {
            config,
            mask_id,
            special,
            continues_word,
            ordinary,
        })
    }

    fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Which positions of `ids` are predicted.
    pub fn choose(&self, ids: &[u32], rng: &mut LingoRng) -> Vec<bool> {
        if self.config.whole_word {
            self.choose_words(ids, rng)
        } else {
            ids.iter()
                .map(|&id| !self.is_special(id) && rng.uniform() < self.config.probability)
                .collect()
        }
    }

    /// Each whole word (a first piece and its continuations) chosen with the probability, all its
    /// pieces together.
    fn choose_words(&self, ids: &[u32], rng: &mut LingoRng) -> Vec<bool> {
        let mut chosen = vec![false; ids.len()];
        let mut word_chosen = false;
        for (i, &id) in ids.iter().enumerate() {
            if self.is_special(id) {
                continue;
            }
            let continues = self
                .continues_word
                .get(id as usize)
                .copied()
                .unwrap_or(false);
            // A continuation belongs to the word before it only if it directly follows it.
            let starts_word = !continues || i == 0 || self.is_special(ids[i - 1]);
            if starts_word {
                word_chosen = rng.uniform() < self.config.probability;
            }
            chosen[i] = word_chosen;
        }
        chosen
    }

    /// Chooses positions of `ids` and corrupts them (80/10/10 by default).
    pub fn mask(&self, ids: &[u32], rng: &mut LingoRng) -> Masked {
        let chosen = self.choose(ids, rng);
        let mut input_ids = ids.to_vec();
        let mut labels = vec![IGNORE; ids.len()];
        for (i, &c) in chosen.iter().enumerate() {
            if !c {
                continue;
            }
            labels[i] = ids[i] as i64;
            let r = rng.uniform();
            if r < self.config.mask_fraction {
                input_ids[i] = self.mask_id;
            } else if r < self.config.mask_fraction + self.config.random_fraction {
                input_ids[i] = self.ordinary[rng.below(self.ordinary.len())];
            }
        }
        Masked { input_ids, labels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer_training::{Scheme, TokenizerSpec};

    fn wordpiece() -> Tokenizer {
        let text = "the unbelievable tokenizer tokenizes unbelievably long words\n".repeat(20);
        TokenizerSpec {
            scheme: Scheme::WordPiece { lowercase: true },
            vocab_size: 60,
            min_frequency: 1,
        }
        .train(text.lines().map(|l| Ok(l.to_string())))
        .unwrap()
    }

    #[test]
    fn rates_split_and_specials_are_as_specified() {
        let tok = wordpiece();
        let masker = Masker::new(&tok, MaskingConfig::default()).unwrap();
        let ids = tok
            .encode_input("the unbelievable tokenizer tokenizes words")
            .unwrap()
            .ids;
        let (cls, sep) = (ids[0], *ids.last().unwrap());
        let mut rng = LingoRng::new(1);
        let (mut chosen, mut masked, mut kept, mut total) = (0, 0, 0, 0);
        for _ in 0..20_000 {
            let m = masker.mask(&ids, &mut rng);
            assert_eq!((m.labels[0], *m.labels.last().unwrap()), (IGNORE, IGNORE));
            assert_eq!((m.input_ids[0], *m.input_ids.last().unwrap()), (cls, sep));
            let n = ids.len() - 1;
            for ((&id, &label), &input) in
                ids.iter().zip(&m.labels).zip(&m.input_ids).take(n).skip(1)
            {
                total += 1;
                if label != IGNORE {
                    assert_eq!(label, id as i64);
                    chosen += 1;
                    masked += (input == masker.mask_id) as usize;
                    kept += (input == id) as usize;
                } else {
                    assert_eq!(input, id);
                }
            }
        }
        let rate = chosen as f64 / total as f64;
        assert!((rate - 0.15).abs() < 0.005, "{rate}");
        let (m, k) = (masked as f64 / chosen as f64, kept as f64 / chosen as f64);
        assert!((m - 0.8).abs() < 0.01, "{m}");
        // "Kept" also counts random draws that happened to be the original (1 in ~50 here).
        assert!((k - 0.1).abs() < 0.012, "{k}");
    }

    #[test]
    fn whole_words_are_chosen_together() {
        let tok = wordpiece();
        let masker = Masker::new(
            &tok,
            MaskingConfig {
                whole_word: true,
                ..Default::default()
            },
        )
        .unwrap();
        let text = "the unbelievable tokenizer tokenizes unbelievably long words the words";
        let enc = tok.encode_input(text).unwrap();
        let ids = enc.ids.clone();
        let words: Vec<Option<u32>> = enc.word_ids.clone();
        assert!(
            words.windows(2).any(|w| w[0].is_some() && w[0] == w[1]),
            "some word spans several pieces"
        );
        let mut rng = LingoRng::new(2);
        let n_words = words
            .iter()
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let mut words_chosen = 0;
        let draws = 4000;
        for _ in 0..draws {
            let chosen = masker.choose(&ids, &mut rng);
            let mut seen = std::collections::BTreeSet::new();
            for (i, &c) in chosen.iter().enumerate() {
                if c {
                    seen.insert(words[i]);
                }
            }
            words_chosen += seen.len();
            for i in 1..ids.len() - 1 {
                for j in 1..ids.len() - 1 {
                    if words[i].is_some() && words[i] == words[j] {
                        assert_eq!(chosen[i], chosen[j], "pieces of one word");
                    }
                }
            }
        }
        let rate = words_chosen as f64 / (draws * n_words) as f64;
        assert!((rate - 0.15).abs() < 0.01, "words chosen at {rate}");
    }
}
