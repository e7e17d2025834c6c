//! TnT, the trigram HMM tagger of Brants (2000): tag trigrams smoothed by deleted interpolation,
//! word emissions from the lexicon, and for words never seen in training a suffix model learnt from
//! the rare words, with separate suffix statistics for capitalised and lower-case words.

use crate::{Error, Result};
use std::collections::HashMap;

/// Words seen at most this often train the suffix model (Brants: 10).
const RARE: u32 = 10;
/// The longest suffix the model looks at (Brants: 10).
const MAX_SUFFIX: usize = 10;

/// Tag counts under suffixes of rare words, for one kind of word (capitalised or not).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Suffixes {
    /// Suffix (up to [`MAX_SUFFIX`] characters, `""` for all rare words) → tag counts.
    counts: HashMap<String, Vec<(u16, u32)>>,
}

/// A trained TnT tagger.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Tnt {
    pub tags: Vec<String>,
    /// Word → (tag, count) for every tag the word was seen with.
    lexicon: HashMap<String, Vec<(u16, u32)>>,
    /// How often each tag was seen (`tags.len()` entries).
    tag_counts: Vec<u32>,
    /// Counts of predicted tag `c` after context `(a, b)`, over the tag indices plus `<s>`
    /// (index `T`) in contexts and `</s>` (index `T + 1`) predicted: `(T+2)³`, row-major.
    trigrams: Vec<u32>,
    lambdas: [f64; 3],
    theta: f64,
    upper: Suffixes,
    lower: Suffixes,
}

fn capitalised(word: &str) -> bool {
    word.chars().next().is_some_and(char::is_uppercase)
}

/// The last `n` characters of `word` (all of it when shorter).
fn suffix(word: &str, n: usize) -> &str {
    let start = word
        .char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    if n == 0 {
        ""
    } else {
        &word[start..]
    }
}

fn add(list: &mut Vec<(u16, u32)>, tag: u16, n: u32) {
    match list.iter_mut().find(|(t, _)| *t == tag) {
        Some((_, c)) => *c += n,
        None => list.push((tag, n)),
    }
}

/// Ratios for deleted interpolation: `(x − 1)/(y − 1)`, 0 when `y ≤ 1`.
fn held_out(x: u32, y: u32) -> f64 {
    if y <= 1 {
        0.0
    } else {
        (x as f64 - 1.0) / (y as f64 - 1.0)
    }
}

/// What the tag trigram counts imply: counts of predicted bigrams `(b, c)` and unigrams `c`, their
/// total, and how often each `(a, b)` and each `b` is a context.
struct Marginals {
    bigrams: Vec<u32>,
    unigrams: Vec<u32>,
    total: u32,
    contexts2: Vec<u32>,
    contexts1: Vec<u32>,
}

impl Marginals {
    fn of(trigrams: &[u32], k: usize) -> Marginals {
        let mut m = Marginals {
            bigrams: vec![0; k * k],
            unigrams: vec![0; k],
            total: 0,
            contexts2: vec![0; k * k],
            contexts1: vec![0; k],
        };
        for a in 0..k {
            for b in 0..k {
                for c in 0..k {
                    let n = trigrams[(a * k + b) * k + c];
                    m.bigrams[b * k + c] += n;
                    m.unigrams[c] += n;
                    m.contexts2[a * k + b] += n;
                    m.contexts1[b] += n;
                    m.total += n;
                }
            }
        }
        m
    }
}

/// Per-position candidates for decoding: tag index and log emission score.
type Candidates = Vec<(usize, f64)>;

impl Tnt {
    /// Trains on `(words, tags)` sentences.
    pub fn train(sentences: &[(Vec<String>, Vec<String>)]) -> Result<Tnt> {
        let mut tag_ids: HashMap<&str, u16> = HashMap::new();
        let mut tags: Vec<String> = Vec::new();
        for (words, ts) in sentences {
            if words.len() != ts.len() {
                return Err(Error::Invalid(format!(
                    "a sentence has {} words but {} tags",
                    words.len(),
                    ts.len()
                )));
            }
            for t in ts {
                if !tag_ids.contains_key(t.as_str()) {
                    if tags.len() >= u16::MAX as usize - 2 {
                        return Err(Error::Invalid("more than 65,533 tags".into()));
                    }
                    tag_ids.insert(t, tags.len() as u16);
                    tags.push(t.clone());
                }
            }
        }
        if tags.is_empty() {
            return Err(Error::Invalid("no tagged words to train on".into()));
        }
        let t = tags.len();
        let k = t + 2;
        let (bos, eos) = (t, t + 1);
        let mut lexicon: HashMap<String, Vec<(u16, u32)>> = HashMap::new();
        let mut tag_counts = vec![0u32; t];
        let mut trigrams = vec![0u32; k * k * k];
        for (words, ts) in sentences {
            let ids: Vec<usize> = ts.iter().map(|x| tag_ids[x.as_str()] as usize).collect();
            for (w, &id) in words.iter().zip(&ids) {
                add(lexicon.entry(w.clone()).or_default(), id as u16, 1);
                tag_counts[id] += 1;
            }
            let mut seq = vec![bos, bos];
            seq.extend(&ids);
            seq.push(eos);
            for w in seq.windows(3) {
                trigrams[(w[0] * k + w[1]) * k + w[2]] += 1;
            }
        }
        let m = Marginals::of(&trigrams, k);
        // Deleted interpolation (Brants 2000, fig. 1): each trigram votes, with its count, for the
        // order that predicts it best once that very trigram is held out.
        let mut lambdas = [0f64; 3];
        for a in 0..k {
            for b in 0..k {
                let cab = m.contexts2[a * k + b];
                if cab == 0 {
                    continue;
                }
                for c in 0..k {
                    let f = trigrams[(a * k + b) * k + c];
                    if f == 0 {
                        continue;
                    }
                    let ratios = [
                        held_out(m.unigrams[c], m.total),
                        held_out(m.bigrams[b * k + c], m.contexts1[b]),
                        held_out(f, cab),
                    ];
                    let best = ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let winners: Vec<usize> = (0..3).filter(|&i| ratios[i] == best).collect();
                    for &i in &winners {
                        lambdas[i] += f as f64 / winners.len() as f64;
                    }
                }
            }
        }
        let sum: f64 = lambdas.iter().sum();
        lambdas.iter_mut().for_each(|l| *l /= sum);
        // θ: the standard deviation of the tags' unconditioned probabilities.
        let n_words: u32 = tag_counts.iter().sum();
        let mean = 1.0 / t as f64;
        let theta = if t > 1 {
            (tag_counts
                .iter()
                .map(|&c| (c as f64 / n_words as f64 - mean).powi(2))
                .sum::<f64>()
                / (t as f64 - 1.0))
                .sqrt()
        } else {
            1.0
        };
        let (mut upper, mut lower) = (Suffixes::default(), Suffixes::default());
        for (word, seen) in &lexicon {
            let freq: u32 = seen.iter().map(|x| x.1).sum();
            if freq > RARE {
                continue;
            }
            let trie = if capitalised(word) {
                &mut upper
            } else {
                &mut lower
            };
            let len = word.chars().count().min(MAX_SUFFIX);
            for n in 0..=len {
                let entry = trie.counts.entry(suffix(word, n).to_string()).or_default();
                for &(tag, c) in seen {
                    add(entry, tag, c);
                }
            }
        }
        Ok(Tnt {
            tags,
            lexicon,
            tag_counts,
            trigrams,
            lambdas,
            theta,
            upper,
            lower,
        })
    }

    /// The interpolation weights λ1 (unigram), λ2 (bigram), λ3 (trigram).
    pub fn lambdas(&self) -> [f64; 3] {
        self.lambdas
    }

    /// Whether `word` was seen in training.
    pub fn knows(&self, word: &str) -> bool {
        self.lexicon.contains_key(word)
    }

    fn k(&self) -> usize {
        self.tags.len() + 2
    }

    /// The interpolated transition table `log p(c | a, b)` over contexts with `<s>` and predicted
    /// tags with `</s>`.
    fn transitions(&self) -> Vec<f64> {
        let k = self.k();
        let tri = &self.trigrams;
        let m = Marginals::of(tri, k);
        let [l1, l2, l3] = self.lambdas;
        let ratio = |x: u32, y: u32| if y == 0 { 0.0 } else { x as f64 / y as f64 };
        let mut out = vec![f64::NEG_INFINITY; k * k * k];
        for a in 0..k {
            for b in 0..k {
                let (cab, cb) = (m.contexts2[a * k + b], m.contexts1[b]);
                for c in 0..k {
                    let p = l1 * ratio(m.unigrams[c], m.total)
                        + l2 * ratio(m.bigrams[b * k + c], cb)
                        + l3 * ratio(tri[(a * k + b) * k + c], cab);
                    out[(a * k + b) * k + c] = p.ln();
                }
            }
        }
        out
    }

    /// The tags a word may take, each with `log p(word | tag)` up to a per-word constant.
    fn candidates(&self, word: &str) -> Candidates {
        if let Some(seen) = self.lexicon.get(word) {
            return seen
                .iter()
                .map(|&(t, c)| {
                    (
                        t as usize,
                        (c as f64 / self.tag_counts[t as usize] as f64).ln(),
                    )
                })
                .collect();
        }
        // Unknown: p(t | suffix) by successive abstraction from the empty suffix to the longest
        // one seen, then Bayes' rule, p(w | t) ∝ p(t | suffix) / p(t).
        let trie = if capitalised(word) && !self.upper.counts.is_empty() {
            &self.upper
        } else {
            &self.lower
        };
        let t = self.tags.len();
        let ml = |list: &Vec<(u16, u32)>| {
            let total: u32 = list.iter().map(|x| x.1).sum();
            let mut p = vec![0f64; t];
            for &(tag, c) in list {
                p[tag as usize] = c as f64 / total.max(1) as f64;
            }
            p
        };
        let Some(base) = trie.counts.get("") else {
            // No rare words at all: every tag, by its overall frequency.
            let n: u32 = self.tag_counts.iter().sum();
            return (0..t)
                .map(|i| (i, (self.tag_counts[i] as f64 / n as f64).ln()))
                .collect();
        };
        let mut p = ml(base);
        for n in 1..=word.chars().count().min(MAX_SUFFIX) {
            let Some(list) = trie.counts.get(suffix(word, n)) else {
                break;
            };
            let here = ml(list);
            for (pi, h) in p.iter_mut().zip(here) {
                *pi = (h + self.theta * *pi) / (1.0 + self.theta);
            }
        }
        // Divided by the tags' overall probabilities, which the transitions already carry: what
        // stays is how much likelier the tag is for a word like this one than for any word.
        let n: u32 = self.tag_counts.iter().sum();
        (0..t)
            .filter(|&i| p[i] > 0.0)
            .map(|i| (i, (p[i] * n as f64 / self.tag_counts[i] as f64).ln()))
            .collect()
    }

    /// Tags sentences (second-order Viterbi over the candidate tags of each word).
    pub fn tag_all<'a>(
        &self,
        sentences: impl IntoIterator<Item = &'a [String]>,
    ) -> Vec<Vec<String>> {
        let trans = self.transitions();
        sentences
            .into_iter()
            .map(|words| {
                self.viterbi(&trans, words)
                    .into_iter()
                    .map(|i| self.tags[i].clone())
                    .collect()
            })
            .collect()
    }

    fn viterbi(&self, trans: &[f64], words: &[String]) -> Vec<usize> {
        let k = self.k();
        let (bos, eos) = (k - 2, k - 1);
        let n = words.len();
        if n == 0 {
            return Vec::new();
        }
        // cands[i + 1] are word i's candidates; cands[0] is `<s>`.
        let mut cands: Vec<Candidates> = vec![vec![(bos, 0.0)]];
        cands.extend(words.iter().map(|w| self.candidates(w)));
        // delta[i][p][c]: best log score of words 0..i with tags (p of word i−1, c of word i),
        // p and c indexing cands[i] and cands[i + 1]; back[i][p][c]: the best tag index of word i−2.
        let mut delta: Vec<Vec<f64>> = Vec::with_capacity(n);
        let mut back: Vec<Vec<u32>> = Vec::with_capacity(n);
        let t = |a: usize, b: usize, c: usize| trans[(a * k + b) * k + c];
        for i in 0..n {
            let (prev, cur) = (&cands[i], &cands[i + 1]);
            let before: &[(usize, f64)] = if i == 0 { &cands[0] } else { &cands[i - 1] };
            let mut d = vec![f64::NEG_INFINITY; prev.len() * cur.len()];
            let mut bp = vec![0u32; prev.len() * cur.len()];
            for (pi, &(p, _)) in prev.iter().enumerate() {
                for (ci, &(c, emit)) in cur.iter().enumerate() {
                    let (mut best, mut arg) = (f64::NEG_INFINITY, 0);
                    for (qi, &(q, _)) in before.iter().enumerate() {
                        let score = if i == 0 {
                            0.0
                        } else {
                            delta[i - 1][qi * prev.len() + pi]
                        } + t(q, p, c);
                        if score > best {
                            (best, arg) = (score, qi);
                        }
                    }
                    d[pi * cur.len() + ci] = best + emit;
                    bp[pi * cur.len() + ci] = arg as u32;
                }
            }
            delta.push(d);
            back.push(bp);
        }
        // Close with `</s>`, then follow the pointers back.
        let (prev, cur) = (&cands[n - 1], &cands[n]);
        let (mut bp, mut bc, mut best) = (0, 0, f64::NEG_INFINITY);
        for pi in 0..prev.len() {
            for ci in 0..cur.len() {
                let s = delta[n - 1][pi * cur.len() + ci] + t(prev[pi].0, cur[ci].0, eos);
                if s > best {
                    (bp, bc, best) = (pi, ci, s);
                }
            }
        }
        let mut out = vec![0usize; n];
        let (mut p, mut c) = (bp, bc);
        for i in (0..n).rev() {
            out[i] = cands[i + 1][c].0;
            let q = back[i][p * cands[i + 1].len() + c] as usize;
            (p, c) = (q, p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(words: &str, tags: &str) -> (Vec<String>, Vec<String>) {
        let split = |x: &str| x.split(' ').map(String::from).collect();
        (split(words), split(tags))
    }

    #[test]
    fn suffixes_count_characters() {
        assert_eq!(suffix("running", 3), "ing");
        assert_eq!(suffix("café", 2), "fé");
        assert_eq!(suffix("ab", 5), "ab");
        assert_eq!(suffix("ab", 0), "");
    }

    #[test]
    fn tags_by_context_and_guesses_unknown_words_by_suffix() {
        let train = vec![
            s("the dog runs", "DET NOUN VERB"),
            s("the cat sleeps", "DET NOUN VERB"),
            s("a dog sleeps quietly", "DET NOUN VERB ADV"),
            s("dogs run", "NOUN VERB"),
            s("the run", "DET NOUN"),
            s("she runs slowly", "PRON VERB ADV"),
            s("he walks happily", "PRON VERB ADV"),
        ];
        let tnt = Tnt::train(&train).unwrap();
        let l = tnt.lambdas();
        assert!((l.iter().sum::<f64>() - 1.0).abs() < 1e-12 && l.iter().all(|&x| x >= 0.0));
        let tag = |x: &str| -> Vec<String> {
            let words: Vec<String> = x.split(' ').map(String::from).collect();
            tnt.tag_all([words.as_slice()]).remove(0)
        };
        // `run` is a noun after a determiner and a verb after a noun.
        assert_eq!(tag("the run"), ["DET", "NOUN"]);
        assert_eq!(tag("dogs run"), ["NOUN", "VERB"]);
        // Unknown `loudly`: the `-ly` suffix of rare adverbs.
        assert!(!tnt.knows("loudly"));
        assert_eq!(tag("she runs loudly"), ["PRON", "VERB", "ADV"]);
    }

    #[test]
    fn mismatched_or_empty_data_is_an_error() {
        assert!(Tnt::train(&[]).is_err());
        let bad = vec![(vec!["a".to_string()], vec![])];
        assert!(Tnt::train(&bad)
            .unwrap_err()
            .to_string()
            .contains("1 words but 0 tags"));
    }
}
