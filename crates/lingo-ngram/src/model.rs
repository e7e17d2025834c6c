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

/// How the counts of each order become probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Smoothing {
    /// Add-k (Lidstone; Laplace at k = 1), as SRILM's `-addsmooth k`: a seen n-gram gets
    /// `(c + k) / (c(h) + k·|V|)`, and the mass left for the words not seen after `h` goes to the
    /// lower order, normalised (a backoff model).
    AddK(f64),
    /// Interpolated Witten–Bell: `p = (c + T(h)·p_lower) / (c(h) + T(h))`, with `T(h)` the number of
    /// distinct words seen after `h`.
    WittenBell,
    /// Interpolated absolute discounting on raw counts; one discount per order, estimated as
    /// `n1 / (n1 + 2·n2)` when none is given.
    Absolute(Option<f64>),
    /// Interpolated Kneser–Ney: absolute discounting on continuation counts below the top order.
    KneserNey(Option<f64>),
    /// Interpolated modified Kneser–Ney: three discounts per order (Chen & Goodman), as SRILM's
    /// `-kndiscount -interpolate` and KenLM's `lmplz`.
    ModifiedKneserNey,
    /// Stupid Backoff (Brants et al. 2007): relative frequencies, and `alpha` times the lower
    /// order's score for unseen n-grams. Scores, not probabilities: they do not sum to 1.
    StupidBackoff(f64),
}

impl Smoothing {
    /// Whether lower orders count continuations (how many words precede an n-gram) rather than
    /// occurrences.
    fn continuation_counts(self) -> bool {
        matches!(self, Smoothing::KneserNey(_) | Smoothing::ModifiedKneserNey)
    }
}

/// Counts of counts `t[1..=4]` of one order.
fn counts_of_counts(counts: &[u32]) -> [f64; 5] {
    let mut t = [0f64; 5];
    for &c in counts {
        if (1..=4).contains(&c) {
            t[c as usize] += 1.0;
        }
    }
    t
}

/// The three discounts of one order from its counts of counts (Chen & Goodman's estimates):
/// `Y = t1/(t1 + 2·t2)`, `D1 = 1 − 2Y·t2/t1`, `D2 = 2 − 3Y·t3/t2`, `D3+ = 3 − 4Y·t4/t3`.
fn modified_discounts(n: usize, counts: &[u32]) -> Result<[f64; 3]> {
    let t = counts_of_counts(counts);
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

/// One discount for an order: the one given, or Ney's estimate `n1 / (n1 + 2·n2)`.
fn single_discount(n: usize, given: Option<f64>, counts: &[u32]) -> Result<f64> {
    if let Some(d) = given {
        if !(0.0..=1.0).contains(&d) {
            return Err(NgramError::Invalid(format!(
                "the discount must be in [0, 1], not {d}"
            )));
        }
        return Ok(d);
    }
    let t = counts_of_counts(counts);
    if t[1] == 0.0 || t[2] == 0.0 {
        return Err(NgramError::Invalid(format!(
            "estimating the discount needs {n}-grams seen once and twice (counts of counts: {}, \
             {}): the corpus is too small for this order; give a discount instead",
            t[1], t[2]
        )));
    }
    Ok(t[1] / (t[1] + 2.0 * t[2]))
}

/// The counts each order is estimated from: raw counts, or (for Kneser–Ney) at every order but
/// the highest the number of distinct words seen before the n-gram — except for n-grams starting
/// with `<s>`, which nothing can precede and which keep their raw counts.
fn adjusted(c: &Counts, smoothing: Smoothing) -> Vec<Vec<u32>> {
    let top = c.orders.len();
    let mut out: Vec<Vec<u32>> = c.orders.iter().map(|g| g.counts.clone()).collect();
    if !smoothing.continuation_counts() {
        return out;
    }
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

/// How a context's own estimates combine with the order below.
enum Combine {
    /// `p = own + γ·p_lower` for every word.
    Interpolate(f64),
    /// Seen words get `own`; the rest of the mass goes to the lower order, normalised over the
    /// words not seen after the context.
    BackOff,
    /// Seen words get `own`; unseen ones `alpha·p_lower` (Stupid Backoff: no normalisation).
    Fixed(f64),
}

/// Estimates a smoothed n-gram model from `counts`.
pub fn estimate(counts: &Counts, smoothing: Smoothing) -> Result<NgramModel> {
    if let Smoothing::AddK(k) | Smoothing::StupidBackoff(k) = smoothing {
        if !(k > 0.0 && k.is_finite()) {
            return Err(NgramError::Invalid(format!(
                "{smoothing:?}: the parameter must be positive"
            )));
        }
    }
    let top = counts.orders.len();
    let adj = adjusted(counts, smoothing);
    // `<s>` is never predicted: the unigram distribution is over the other words.
    let predictable = (counts.vocab.len() - 1) as f64;
    let mut levels: Vec<Level> = Vec::with_capacity(top);
    let mut unk_logp = LOG_ZERO;
    for n in 1..=top {
        let grams = &counts.orders[n - 1];
        let a = &adj[n - 1];
        let (mkn, single) = match smoothing {
            Smoothing::ModifiedKneserNey => (modified_discounts(n, a)?, 0.0),
            Smoothing::Absolute(d) | Smoothing::KneserNey(d) => {
                ([0.0; 3], single_discount(n, d, a)?)
            }
            _ => ([0.0; 3], 0.0),
        };
        let mut prob = vec![0f64; grams.len()];
        let mut backoffs: Vec<(usize, f64)> = Vec::new(); // (index of the context below, weight)
        let mut start = 0;
        while start < grams.len() {
            let context = &grams.gram(start)[..n - 1];
            let mut end = start;
            while end < grams.len() && &grams.gram(end)[..n - 1] == context {
                end += 1;
            }
            let group = start..end;
            let total: f64 = a[group.clone()].iter().map(|&c| c as f64).sum();
            let types = a[group.clone()].iter().filter(|&&c| c > 0).count() as f64;
            // Each seen word's own share, `max(c − discount[min(c, 3)], 0) / denominator` (a
            // negative discount adds), and how the rest is shared.
            let (discount, denominator, combine) = match smoothing {
                Smoothing::ModifiedKneserNey => {
                    let d = [0.0, mkn[0], mkn[1], mkn[2]];
                    let mass: f64 = a[group.clone()].iter().map(|&c| d[c.min(3) as usize]).sum();
                    (d, total, Combine::Interpolate(mass / total))
                }
                Smoothing::Absolute(_) | Smoothing::KneserNey(_) => (
                    [0.0, single, single, single],
                    total,
                    Combine::Interpolate(single * types / total),
                ),
                Smoothing::WittenBell => (
                    [0.0; 4],
                    total + types,
                    Combine::Interpolate(types / (total + types)),
                ),
                Smoothing::AddK(k) => ([-k; 4], total + k * predictable, Combine::BackOff),
                Smoothing::StupidBackoff(alpha) => ([0.0; 4], total, Combine::Fixed(alpha)),
            };
            let own = |c: u32| (c as f64 - discount[c.min(3) as usize]).max(0.0) / denominator;
            let mut seen_lower = 0f64;
            for i in group.clone() {
                let lower = if n == 1 {
                    1.0 / predictable
                } else {
                    let below = &levels[n - 2];
                    let j = below.grams.find(&grams.gram(i)[1..]).ok_or_else(|| {
                        NgramError::Invalid("a lower-order n-gram is missing".into())
                    })?;
                    10f64.powf(below.logp[j] as f64)
                };
                seen_lower += lower;
                prob[i] = own(a[i]);
                if let Combine::Interpolate(gamma) = combine {
                    prob[i] += gamma * lower;
                }
            }
            let weight = match combine {
                Combine::Interpolate(gamma) => gamma,
                Combine::Fixed(alpha) => alpha,
                Combine::BackOff => {
                    let left: f64 = 1.0 - group.clone().map(|i| prob[i]).sum::<f64>();
                    if left > 1e-12 && seen_lower < 1.0 - 1e-12 {
                        left / (1.0 - seen_lower)
                    } else {
                        0.0
                    }
                }
            };
            if n == 1 {
                // A word never seen in training (`<unk>`, unless the corpus has it) gets the
                // uniform share of what is left; Stupid Backoff scores it as if seen once.
                unk_logp = match combine {
                    Combine::Fixed(_) => (1.0 / total).log10() as f32,
                    _ => log10_or_zero(weight / predictable),
                };
            } else {
                let j = levels[n - 2].grams.find(context).ok_or_else(|| {
                    NgramError::Invalid(
                        "an n-gram's context is missing from the order below".into(),
                    )
                })?;
                backoffs.push((j, weight));
            }
            start = end;
        }
        if n > 1 {
            let below = &mut levels[n - 2];
            for &(j, weight) in &backoffs {
                below.bow[j] = log10_or_zero(weight);
            }
        }
        if n == 1 {
            if let Some(i) = grams.find(&[BOS]) {
                prob[i] = 0.0;
            }
        }
        let mut level = Level {
            grams: grams.clone(),
            logp: prob.iter().map(|&p| log10_or_zero(p)).collect(),
            bow: vec![0.0; grams.len()],
        };
        if n == 1 {
            add_unigram(&mut level, BOS, LOG_ZERO);
            add_unigram(&mut level, UNK, unk_logp);
        }
        levels.push(level);
    }
    Ok(NgramModel {
        vocab: counts.vocab.clone(),
        levels,
    })
}

fn log10_or_zero(p: f64) -> f32 {
    if p > 0.0 {
        (p.log10() as f32).max(LOG_ZERO)
    } else {
        LOG_ZERO
    }
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
    pub fn evaluate<'a>(
        &self,
        sentences: impl IntoIterator<Item = Vec<&'a str>>,
    ) -> crate::Evaluation {
        let sentences: Vec<Vec<&str>> = sentences.into_iter().collect();
        crate::perplexity(&mut &*self, &sentences).expect("an n-gram model scores every word")
    }
}

/// An n-gram model conditions each sentence on `<s>` alone.
impl crate::WordLm for &NgramModel {
    fn word_id(&self, word: &str) -> Option<u32> {
        self.vocab.get(word).filter(|&i| i != BOS && i != EOS)
    }

    fn unk_id(&self) -> u32 {
        UNK
    }

    fn log10_probs(
        &mut self,
        sentences: &[Vec<u32>],
    ) -> std::result::Result<Vec<Vec<f64>>, String> {
        let mut ids = Vec::new();
        Ok(sentences
            .iter()
            .map(|s| {
                ids.clear();
                ids.push(BOS);
                ids.extend_from_slice(s);
                ids.push(EOS);
                (1..ids.len())
                    .map(|j| self.logprob(&ids[..j], ids[j]) as f64)
                    .collect()
            })
            .collect())
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

    fn model_with(order: usize, smoothing: Smoothing) -> NgramModel {
        let c = corpus(2000);
        let counts = Counts::count(
            order,
            c.iter().map(|s| s.iter().map(|w| w.as_str()).collect()),
        )
        .unwrap();
        estimate(&counts, smoothing).unwrap()
    }

    fn model(order: usize) -> NgramModel {
        model_with(order, Smoothing::ModifiedKneserNey)
    }

    const NORMALISED: [Smoothing; 7] = [
        Smoothing::AddK(1.0),
        Smoothing::AddK(0.01),
        Smoothing::WittenBell,
        Smoothing::Absolute(None),
        Smoothing::KneserNey(None),
        Smoothing::KneserNey(Some(0.75)),
        Smoothing::ModifiedKneserNey,
    ];

    /// For every context the model has seen, p(· | context) sums to 1 over every word it can
    /// predict (all but `<s>`), backed-off words included: each smoothing is a distribution.
    #[test]
    fn every_context_is_a_distribution() {
        for smoothing in NORMALISED {
            for order in [1, 2, 3, 4] {
                let m = model_with(order, smoothing);
                let words: Vec<u32> = (0..m.vocab.len() as u32).filter(|&w| w != BOS).collect();
                let mut contexts: Vec<Vec<u32>> = vec![vec![]];
                for level in &m.levels[..order - 1] {
                    contexts.extend(
                        (0..level.grams.len().min(120)).map(|i| level.grams.gram(i).to_vec()),
                    );
                }
                for h in &contexts {
                    let sum: f64 = words
                        .iter()
                        .map(|&w| 10f64.powf(m.logprob(h, w) as f64))
                        .sum();
                    assert!(
                        (sum - 1.0).abs() < 1e-4,
                        "{smoothing:?}, order {order}, context {h:?}: sums to {sum}"
                    );
                }
            }
        }
    }

    fn ids(m: &NgramModel, words: &[&str]) -> Vec<u32> {
        words.iter().map(|w| m.vocab.get(w).unwrap()).collect()
    }

    fn p(m: &NgramModel, context: &[&str], w: &str) -> f64 {
        10f64.powf(m.logprob(&ids(m, context), ids(m, &[w])[0]) as f64)
    }

    /// The textbook formulas on a corpus small enough to count by hand:
    /// `a b a </s>`, `a a </s>`, `b </s>` — 9 tokens to predict over |V| = 4 (a, b, </s>, <unk>).
    #[test]
    fn hand_counted_values() {
        let tiny = || [vec!["a", "b", "a"], vec!["a", "a"], vec!["b"]];
        let fit = |order, s| estimate(&Counts::count(order, tiny()).unwrap(), s).unwrap();
        let close = |x: f64, y: f64| assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        // Laplace unigrams: (c + 1) / (9 + 4).
        let m = fit(1, Smoothing::AddK(1.0));
        close(p(&m, &[], "a"), 5.0 / 13.0);
        close(p(&m, &[], "<unk>"), 1.0 / 13.0);
        // Laplace bigrams after `a` (c(a) = 4: b, </s>, a, </s>): seen words (c + 1) / (4 + 4);
        // `<unk>`, unseen, gets the rest (1 − 7/8) through the unigram backoff.
        let m = fit(2, Smoothing::AddK(1.0));
        close(p(&m, &["a"], "a"), 2.0 / 8.0);
        close(p(&m, &["a"], "</s>"), 3.0 / 8.0);
        close(p(&m, &["a"], "<unk>"), 1.0 / 8.0);
        // Witten–Bell after `a`: c(a) = 4, T(a) = 3; p(a|a) = (1 + 3·p(a)) / 7, with the unigram
        // p(a) = (4 + 3·¼) / (9 + 3) (unigram types a, b, </s>; uniform over 4).
        let m = fit(2, Smoothing::WittenBell);
        let uni_a = (4.0 + 3.0 * 0.25) / 12.0;
        close(p(&m, &[], "a"), uni_a);
        close(p(&m, &["a"], "a"), (1.0 + 3.0 * uni_a) / 7.0);
        // Absolute discounting with D = 0.5 after `a`: (1 − ½)/4 + (½·3/4)·p(a).
        let m = fit(2, Smoothing::Absolute(Some(0.5)));
        let uni_a = (4.0 - 0.5) / 9.0 + (0.5 * 3.0 / 9.0) * 0.25;
        close(p(&m, &["a"], "a"), 0.5 / 4.0 + 0.375 * uni_a);
        // Kneser–Ney with D = 0.5: the unigram counts continuations, 7 bigram types — `a`
        // follows <s>, b and a (3); `b` follows <s> and a; `</s>` follows a and b.
        let m = fit(2, Smoothing::KneserNey(Some(0.5)));
        let cont_a = (3.0 - 0.5) / 7.0 + (0.5 * 3.0 / 7.0) * 0.25;
        close(p(&m, &[], "a"), cont_a);
        close(p(&m, &["a"], "a"), 0.5 / 4.0 + 0.375 * cont_a);
        // Stupid Backoff: relative frequency when seen, 0.4 × the unigram's when not.
        let m = fit(2, Smoothing::StupidBackoff(0.4));
        close(p(&m, &["a"], "</s>"), 2.0 / 4.0);
        close(p(&m, &["b"], "b"), 0.4 * 2.0 / 9.0);
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
        let err = estimate(&counts, Smoothing::ModifiedKneserNey)
            .unwrap_err()
            .to_string();
        assert!(err.contains("too small"), "{err}");
    }
}
