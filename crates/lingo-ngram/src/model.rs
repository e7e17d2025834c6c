//! Interpolated modified Kneser–Ney estimation, and the backoff model it gives.

use crate::counts::{Counts, Grams, Vocab, BOS, EOS, UNK};
use crate::{NgramError, Result};

/// One order of a backoff model: the n-grams (sorted), their log10 probabilities and the log10
/// backoff weights of the grams as contexts (0 where a gram is no context).
#[derive(Clone, Debug)]
pub struct Level {
    pub grams: Grams,
    pub logp: Vec<f32>,
    pub bow: Vec<f32>,
}

/// A backoff n-gram model, as an ARPA file holds one.
#[derive(Clone, Debug)]
pub struct NgramModel {
    pub vocab: Vocab,
    /// `levels[n − 1]`: the n-grams.
    pub levels: Vec<Level>,
}

/// Log10 of zero probability in ARPA files (`<s>`'s unigram).
pub const LOG_ZERO: f32 = -99.0;

/// The three discounts of one order from its counts of counts (Chen & Goodman's estimates):
/// `Y = t1/(t1 + 2·t2)`, `D1 = 1 − 2Y·t2/t1`, `D2 = 2 − 3Y·t3/t2`, `D3+ = 3 − 4Y·t4/t3`.
fn discounts(n: usize, counts: &[u32]) -> Result<[f64; 3]> {
    let mut t = [0f64; 5];
    for &c in counts {
        if (1..=4).contains(&c) {
            t[c as usize] += 1.0;
        }
    }
    if t[1] == 0.0 || t[2] == 0.0 || t[3] == 0.0 || t[4] == 0.0 {
        return Err(NgramError::Invalid(format!(
            "modified Kneser–Ney needs {n}-grams seen once, twice, three and four times to estimate \
             its discounts (counts of counts: {}, {}, {}, {}): the corpus is too small for this \
             order",
            t[1], t[2], t[3], t[4]
        )));
    }
    let y = t[1] / (t[1] + 2.0 * t[2]);
    let d = [
        1.0 - 2.0 * y * t[2] / t[1],
        2.0 - 3.0 * y * t[3] / t[2],
        3.0 - 4.0 * y * t[4] / t[3],
    ];
    if d.iter().any(|&d| !(0.0..).contains(&d) || !d.is_finite()) {
        return Err(NgramError::Invalid(format!(
            "modified Kneser–Ney discounts for order {n} out of range: {d:?}"
        )));
    }
    Ok(d)
}

/// The adjusted counts of each order: raw counts at the highest order and for n-grams starting
/// with `<s>`; elsewhere the number of distinct words seen before the n-gram.
fn adjusted(c: &Counts) -> Vec<Vec<u32>> {
    let top = c.orders.len();
    let mut out: Vec<Vec<u32>> = c.orders.iter().map(|g| g.counts.clone()).collect();
    for n in 1..top {
        let (lower, higher) = (&c.orders[n - 1], &c.orders[n]);
        let mut cont = vec![0u32; lower.len()];
        for i in 0..higher.len() {
            let suffix = &higher.gram(i)[1..];
            if let Some(j) = lower.find(suffix) {
                cont[j] += 1;
            }
        }
        for (j, a) in out[n - 1].iter_mut().enumerate() {
            if lower.gram(j)[0] != BOS {
                *a = cont[j];
            }
        }
    }
    out
}

/// Estimates an interpolated modified Kneser–Ney model from `counts`.
pub fn estimate_mkn(counts: &Counts) -> Result<NgramModel> {
    let top = counts.orders.len();
    let adj = adjusted(counts);
    // `<s>` is never predicted: the unigram distribution is over the other words.
    let predictable = (counts.vocab.len() - 1) as f64;
    let mut levels: Vec<Level> = Vec::with_capacity(top);
    // γ of each context, by the context's index in the order below (the unigram level's own
    // context is empty: one value).
    for n in 1..=top {
        let grams = &counts.orders[n - 1];
        let a = &adj[n - 1];
        let d = discounts(n, a)?;
        let discount = |a: u32| match a {
            0 => 0.0,
            1 => d[0],
            2 => d[1],
            _ => d[2],
        };
        let mut prob = vec![0f64; grams.len()];
        let mut gammas: Vec<(usize, f64)> = Vec::new(); // (index of the context in level n−1, γ)
        let mut start = 0;
        while start < grams.len() {
            let context = &grams.gram(start)[..n - 1];
            let mut end = start;
            let (mut total, mut k) = (0f64, [0f64; 3]);
            while end < grams.len() && &grams.gram(end)[..n - 1] == context {
                let ai = a[end];
                total += ai as f64;
                if ai > 0 {
                    k[(ai.min(3) - 1) as usize] += 1.0;
                }
                end += 1;
            }
            let gamma = if total > 0.0 {
                (d[0] * k[0] + d[1] * k[1] + d[2] * k[2]) / total
            } else {
                1.0
            };
            for i in start..end {
                let w = grams.gram(i)[n - 1];
                let lower = if n == 1 {
                    1.0 / predictable
                } else {
                    let below = &levels[n - 2];
                    let j = below.grams.find(&grams.gram(i)[1..]).ok_or_else(|| {
                        NgramError::Invalid("a lower-order n-gram is missing".into())
                    })?;
                    10f64.powf(below.logp[j] as f64)
                };
                let own = if total > 0.0 {
                    (a[i] as f64 - discount(a[i])).max(0.0) / total
                } else {
                    0.0
                };
                prob[i] = own + gamma * lower;
                if n == 1 && w == BOS {
                    prob[i] = 0.0;
                }
            }
            if n > 1 {
                let j = levels[n - 2].grams.find(context).ok_or_else(|| {
                    NgramError::Invalid(
                        "an n-gram's context is missing from the order below".into(),
                    )
                })?;
                gammas.push((j, gamma));
            } else {
                gammas.push((usize::MAX, gamma));
            }
            start = end;
        }
        if n > 1 {
            let below = &mut levels[n - 2];
            for &(j, gamma) in &gammas {
                below.bow[j] = gamma.log10() as f32;
            }
        }
        let logp = prob
            .iter()
            .map(|&p| if p > 0.0 { p.log10() as f32 } else { LOG_ZERO })
            .collect();
        let mut level = Level {
            grams: grams.clone(),
            logp,
            bow: vec![0.0; grams.len()],
        };
        if n == 1 {
            add_unigram(&mut level, BOS, LOG_ZERO);
            // `<unk>` unseen in training still gets the uniform share.
            let (_, gamma) = gammas[0];
            add_unigram(&mut level, UNK, (gamma / predictable).log10() as f32);
        }
        levels.push(level);
    }
    Ok(NgramModel {
        vocab: counts.vocab.clone(),
        levels,
    })
}

/// Adds unigram `w` with `logp` if the level lacks it, keeping the order sorted.
fn add_unigram(level: &mut Level, w: u32, logp: f32) {
    if level.grams.find(&[w]).is_some() {
        return;
    }
    let at = level.grams.ids.partition_point(|&x| x < w);
    level.grams.ids.insert(at, w);
    level.grams.counts.insert(at, 0);
    level.logp.insert(at, logp);
    level.bow.insert(at, 0.0);
}

/// Perplexity of a model over a corpus, as SRILM's `ngram -ppl` reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Evaluation {
    pub sentences: usize,
    pub words: usize,
    /// Words not in the vocabulary (scored as `<unk>`).
    pub oovs: usize,
    /// Total log10 probability of the words and `</s>`, OOVs scored as `<unk>`.
    pub logprob: f64,
    /// `10^(−logprob / (words + sentences))`, OOVs scored as `<unk>` (KenLM's "including OOVs").
    pub perplexity: f64,
    /// SRILM's `ppl`: OOVs left out of the sum and the count.
    pub perplexity_excluding_oovs: f64,
    /// SRILM's `ppl1`: OOVs and the `</s>` tokens left out.
    pub perplexity_without_eos: f64,
}

impl NgramModel {
    pub fn order(&self) -> usize {
        self.levels.len()
    }

    /// log10 p(w | context) by backing off: the longest seen n-gram ending in `w`, plus the
    /// backoff weights of the longer contexts it skipped.
    pub fn logprob(&self, context: &[u32], w: u32) -> f32 {
        let keep = context.len().min(self.order() - 1);
        let context = &context[context.len() - keep..];
        let mut gram: Vec<u32> = Vec::with_capacity(keep + 1);
        let mut bow = 0f32;
        for start in 0..=keep {
            let h = &context[start..];
            gram.clear();
            gram.extend_from_slice(h);
            gram.push(w);
            let level = &self.levels[gram.len() - 1];
            if let Some(i) = level.grams.find(&gram) {
                return level.logp[i] + bow;
            }
            if !h.is_empty() {
                let ctx = &self.levels[h.len() - 1];
                if let Some(j) = ctx.grams.find(h) {
                    bow += ctx.bow[j];
                }
            }
        }
        LOG_ZERO
    }

    /// Scores `sentences` (words without `<s>`/`</s>`).
    pub fn evaluate<'a>(&self, sentences: impl IntoIterator<Item = Vec<&'a str>>) -> Evaluation {
        let (mut n_sent, mut words, mut oovs) = (0usize, 0usize, 0usize);
        let (mut total, mut oov_total, mut eos_total) = (0f64, 0f64, 0f64);
        let mut ids = Vec::new();
        let mut unknown = Vec::new();
        for sentence in sentences {
            n_sent += 1;
            ids.clear();
            unknown.clear();
            ids.push(BOS);
            unknown.push(false);
            for w in sentence {
                words += 1;
                let id = self.vocab.get(w).filter(|&i| i != BOS && i != EOS);
                oovs += usize::from(id.is_none());
                unknown.push(id.is_none());
                ids.push(id.unwrap_or(UNK));
            }
            ids.push(EOS);
            unknown.push(false);
            for j in 1..ids.len() {
                let lp = self.logprob(&ids[..j], ids[j]) as f64;
                total += lp;
                if unknown[j] {
                    oov_total += lp;
                }
                if j == ids.len() - 1 {
                    eos_total += lp;
                }
            }
        }
        let ppl = |sum: f64, n: usize| 10f64.powf(-sum / n.max(1) as f64);
        let known = total - oov_total;
        Evaluation {
            sentences: n_sent,
            words,
            oovs,
            logprob: total,
            perplexity: ppl(total, words + n_sent),
            perplexity_excluding_oovs: ppl(known, words + n_sent - oovs),
            perplexity_without_eos: ppl(known - eos_total, words - oovs),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Sentences from a skewed random source with rare words, deterministic.
    pub(crate) fn corpus(n: usize) -> Vec<Vec<String>> {
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        (0..n)
            .map(|_| {
                let len = 3 + next() % 8;
                (0..len)
                    .map(|_| match next() % 4 {
                        // Rare words (continuation counts of 1–4 for the unigram discounts)…
                        0 => format!("r{}", next() % 3000),
                        // …and a skewed core vocabulary.
                        _ => format!("w{}", 2000 / (1 + next() % 2000)),
                    })
                    .collect()
            })
            .collect()
    }

    fn model(order: usize) -> NgramModel {
        let c = corpus(2000);
        let counts = Counts::count(
            order,
            c.iter().map(|s| s.iter().map(|w| w.as_str()).collect()),
        )
        .unwrap();
        estimate_mkn(&counts).unwrap()
    }

    /// For every context the model has seen, p(· | context) sums to 1 over every word it can
    /// predict (all but `<s>`), backed-off words included: the smoothing is a distribution.
    #[test]
    fn every_context_is_a_distribution() {
        for order in [1, 2, 3, 4] {
            let m = model(order);
            let words: Vec<u32> = (0..m.vocab.len() as u32).filter(|&w| w != BOS).collect();
            let mut contexts: Vec<Vec<u32>> = vec![vec![]];
            for level in &m.levels[..order - 1] {
                contexts
                    .extend((0..level.grams.len().min(200)).map(|i| level.grams.gram(i).to_vec()));
            }
            for h in &contexts {
                let sum: f64 = words
                    .iter()
                    .map(|&w| 10f64.powf(m.logprob(h, w) as f64))
                    .sum();
                assert!(
                    (sum - 1.0).abs() < 1e-4,
                    "order {order}, context {h:?}: sums to {sum}"
                );
            }
        }
    }

    #[test]
    fn higher_orders_fit_the_training_text_better() {
        let c = corpus(2000);
        let sentences = || {
            c.iter()
                .map(|s| s.iter().map(|w| w.as_str()).collect::<Vec<_>>())
        };
        let ppl: Vec<f64> = [1, 2, 3]
            .iter()
            .map(|&o| model(o).evaluate(sentences()).perplexity)
            .collect();
        assert!(ppl[0] > ppl[1] && ppl[1] > ppl[2], "{ppl:?}");
        let e = model(3).evaluate([vec!["w1", "never-seen", "w2"]]);
        assert_eq!((e.words, e.oovs, e.sentences), (3, 1, 1));
        assert!(e.perplexity.is_finite() && e.perplexity_excluding_oovs.is_finite());
    }

    #[test]
    fn a_corpus_too_small_for_the_discounts_is_an_error() {
        let counts = Counts::count(3, [vec!["a", "b"]]).unwrap();
        let err = estimate_mkn(&counts).unwrap_err().to_string();
        assert!(err.contains("too small"), "{err}");
    }
}
