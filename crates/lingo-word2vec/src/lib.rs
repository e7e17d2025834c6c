//! word2vec's skip-gram with negative sampling (Mikolov et al. 2013), trained as `word2vec.c`
//! trains it: a vocabulary of the words seen at least `min_count` times; frequent words
//! subsampled (kept with probability `(√(f/(s·N)) + 1)·s·N/f`); for each word, a window shrunk to a
//! random width in `1..=window`; for each (centre, context) pair one positive and `negative`
//! negatives drawn from the unigram distribution raised to ¾, each a logistic-loss SGD step (the logistic function tabulated) on the
//! input vector of the context word and the output vectors; the rate falls linearly from `lr` to
//! `lr·10⁻⁴` over the run. One thread, seeded: the same corpus and seed give the same vectors.

use rand::{Rng, SeedableRng};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct Word2VecConfig {
    pub dim: usize,
    pub window: usize,
    pub negative: usize,
    pub min_count: usize,
    /// Subsampling threshold `s` (0: off).
    pub sample: f64,
    pub lr: f32,
    pub epochs: usize,
    pub seed: u64,
}

impl Default for Word2VecConfig {
    fn default() -> Self {
        Word2VecConfig {
            dim: 100,
            window: 5,
            negative: 5,
            min_count: 5,
            sample: 1e-3,
            lr: 0.025,
            epochs: 5,
            seed: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Word2VecError(String);

/// Trained vectors: `vectors[i·dim..(i+1)·dim]` is `words[i]`'s (the input vectors, as word2vec.c
/// saves them), words by decreasing count.
pub struct Word2Vec {
    pub dim: usize,
    pub words: Vec<String>,
    pub counts: Vec<u64>,
    pub vectors: Vec<f32>,
    /// The mean logistic loss of each epoch's updates.
    pub losses: Vec<f64>,
}

/// The cumulative negative-sampling distribution in units of 2⁻³¹.
const CUM_SCALE: u32 = 1 << 31;
const MAX_EXP: f32 = 6.0;

/// The logistic function tabulated on [−6, 6] (word2vec.c's `expTable`, finer): an `exp` per
/// update would cost more than the update's arithmetic.
struct Sigmoid(Vec<f32>);

impl Sigmoid {
    const SIZE: usize = 4096;

    fn new() -> Self {
        Sigmoid(
            (0..=Self::SIZE)
                .map(|i| {
                    let x = (i as f32 / Self::SIZE as f32 * 2.0 - 1.0) * MAX_EXP;
                    1.0 / (1.0 + (-x).exp())
                })
                .collect(),
        )
    }

    fn at(&self, x: f32) -> f32 {
        let i = ((x.clamp(-MAX_EXP, MAX_EXP) / MAX_EXP + 1.0) * 0.5 * Self::SIZE as f32) as usize;
        self.0[i]
    }
}

/// The reported loss is the mean over every 16th update (a logarithm per update would cost as
/// much as the update).
const LOSS_EVERY: u64 = 16;

/// Sixteen independent partial sums, so the compiler vectorises the loop (a single f32 sum must
/// keep its order and cannot be).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// word2vec.c's linear congruential generator: the inner loop draws a window width and several
/// negatives per pair, where a cryptographic generator would dominate. Seeded from the run's
/// seeded ChaCha stream.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(25_214_903_917).wrapping_add(11);
        ((self.0 >> 16) % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        self.below(1 << 24) as f64 / (1u64 << 24) as f64
    }
}

#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

impl Word2Vec {
    /// Trains on `sentences` (each a list of words); `progress` is told each epoch's loss.
    pub fn train<'a, S>(
        sentences: &'a [S],
        config: &Word2VecConfig,
        mut progress: impl FnMut(usize, f64),
    ) -> Result<Word2Vec, Word2VecError>
    where
        S: AsRef<[&'a str]>,
    {
        let c = config;
        if c.dim == 0 || c.window == 0 || c.epochs == 0 || c.lr.is_nan() || c.lr <= 0.0 {
            return Err(Word2VecError(format!(
                "dim, window, epochs and lr must be positive: {c:?}"
            )));
        }
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for s in sentences {
            for &w in s.as_ref() {
                *counts.entry(w).or_default() += 1;
            }
        }
        let mut vocab: Vec<(&str, u64)> = counts
            .into_iter()
            .filter(|&(_, n)| n >= c.min_count.max(1) as u64)
            .collect();
        vocab.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        if vocab.len() < 2 {
            return Err(Word2VecError(format!(
                "{} words are seen at least {} times: too few to learn from",
                vocab.len(),
                c.min_count
            )));
        }
        let index: HashMap<&str, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, w)| (w.0, i as u32))
            .collect();
        let corpus: Vec<Vec<u32>> = (sentences.iter())
            .map(|s| {
                s.as_ref()
                    .iter()
                    .filter_map(|w| index.get(w).copied())
                    .collect()
            })
            .collect();
        let total: u64 = vocab.iter().map(|w| w.1).sum();
        // Negatives: the cumulative distribution of count^¾ over the vocabulary, searched with a
        // uniform draw (gensim's `cum_table`). word2vec.c's 10⁸-entry table is a cache miss per
        // negative; this array is the vocabulary's size.
        let norm: f64 = vocab.iter().map(|w| (w.1 as f64).powf(0.75)).sum();
        let mut cumulative = 0.0;
        let cum_table: Vec<u32> = (vocab.iter())
            .map(|w| {
                cumulative += (w.1 as f64).powf(0.75) / norm;
                (cumulative * CUM_SCALE as f64)
                    .round()
                    .min(CUM_SCALE as f64) as u32
            })
            .collect();
        let keep: Vec<f64> = (vocab.iter())
            .map(|w| {
                if c.sample <= 0.0 {
                    return 1.0;
                }
                let f = w.1 as f64;
                let t = c.sample * total as f64;
                ((f / t).sqrt() + 1.0) * t / f
            })
            .collect();
        let (v, d) = (vocab.len(), c.dim);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c.seed);
        // word2vec.c: inputs uniform in ±0.5/dim, outputs zero.
        let mut input: Vec<f32> = (0..v * d)
            .map(|_| (rng.random::<f32>() - 0.5) / d as f32)
            .collect();
        let mut output = vec![0f32; v * d];
        let mut grad = vec![0f32; d];
        let mut targets: Vec<(u32, f32)> = Vec::with_capacity(c.negative + 1);
        let mut fast = Lcg(rng.random());
        let sigmoid = Sigmoid::new();
        let planned = total as f64 * c.epochs as f64;
        let mut seen = 0f64;
        let mut losses = Vec::with_capacity(c.epochs);
        let mut sentence = Vec::new();
        for epoch in 0..c.epochs {
            let (mut loss, mut updates) = (0f64, 0u64);
            for s in &corpus {
                seen += s.len() as f64;
                let lr = (c.lr * (1.0 - (seen / (planned + 1.0)) as f32)).max(c.lr * 1e-4);
                sentence.clear();
                sentence.extend(
                    s.iter()
                        .copied()
                        .filter(|&w| keep[w as usize] >= fast.unit()),
                );
                for (pos, &centre) in sentence.iter().enumerate() {
                    let b = fast.below(c.window);
                    let lo = pos.saturating_sub(c.window - b);
                    let hi = (pos + c.window - b + 1).min(sentence.len());
                    for (ctx_pos, &context) in sentence.iter().enumerate().take(hi).skip(lo) {
                        if ctx_pos == pos {
                            continue;
                        }
                        targets.clear();
                        targets.push((centre, 1.0));
                        for _ in 0..c.negative {
                            let u = fast.below(CUM_SCALE as usize) as u32;
                            let t = cum_table.partition_point(|&c| c <= u).min(v - 1) as u32;
                            if t != centre {
                                targets.push((t, 0.0));
                            }
                        }
                        let scores = update_pair(
                            &mut input[context as usize * d..(context as usize + 1) * d],
                            &mut output,
                            &targets,
                            lr,
                            &sigmoid,
                            &mut grad,
                        );
                        for (&(_, label), p) in targets.iter().zip(scores) {
                            updates += 1;
                            if updates % LOSS_EVERY == 0 {
                                loss -= f64::from(if label == 1.0 { p } else { 1.0 - p })
                                    .max(1e-12)
                                    .ln();
                            }
                        }
                    }
                }
            }
            let mean = loss / (updates / LOSS_EVERY).max(1) as f64;
            progress(epoch, mean);
            losses.push(mean);
        }
        Ok(Word2Vec {
            dim: d,
            words: vocab.iter().map(|w| w.0.to_string()).collect(),
            counts: vocab.iter().map(|w| w.1).collect(),
            vectors: input,
            losses,
        })
    }

    /// The `n` words most similar to `word` by cosine, with their similarities.
    pub fn most_similar(&self, word: &str, n: usize) -> Option<Vec<(String, f32)>> {
        let i = self.words.iter().position(|w| w == word)?;
        Some(most_similar(&self.words, &self.vectors, self.dim, i, n))
    }
}

/// One (context, centre) pair's logistic-loss SGD step: for each target (the centre with label
/// 1, the negatives with 0) the output vector moves, and the context's input vector moves by the
/// sum of their gradients. Returns the predicted probabilities.
/// Compiled for AVX-512 and AVX2 as well, chosen at run time.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn update_pair(
    x: &mut [f32],
    output: &mut [f32],
    targets: &[(u32, f32)],
    lr: f32,
    sigmoid: &Sigmoid,
    grad: &mut [f32],
) -> Vec<f32> {
    let d = x.len();
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut scores = Vec::with_capacity(targets.len());
    for &(target, label) in targets {
        let out = &mut output[target as usize * d..(target as usize + 1) * d];
        let p = sigmoid.at(dot(x, out));
        scores.push(p);
        let g = (label - p) * lr;
        axpy(g, out, grad);
        axpy(g, x, out);
    }
    x.iter_mut().zip(grad.iter()).for_each(|(x, g)| *x += g);
    scores
}

/// The `n` rows most similar to row `i` by cosine.
pub fn most_similar(
    words: &[String],
    vectors: &[f32],
    dim: usize,
    i: usize,
    n: usize,
) -> Vec<(String, f32)> {
    let norm = |r: &[f32]| dot(r, r).sqrt().max(1e-12);
    let q = &vectors[i * dim..(i + 1) * dim];
    let qn = norm(q);
    let mut scored: Vec<(usize, f32)> = (0..words.len())
        .filter(|&j| j != i)
        .map(|j| {
            let r = &vectors[j * dim..(j + 1) * dim];
            (j, dot(q, r) / (qn * norm(r)))
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
        .into_iter()
        .take(n)
        .map(|(j, s)| (words[j].clone(), s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two topics whose words only ever meet words of their own topic.
    fn corpus() -> Vec<Vec<String>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        (0..3000)
            .map(|i| {
                let topic = if i % 2 == 0 { "a" } else { "b" };
                (0..8)
                    .map(|_| format!("{topic}{}", rng.random_range(0..10)))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn words_of_a_topic_end_up_near_each_other() {
        let text = corpus();
        let sentences: Vec<Vec<&str>> = text
            .iter()
            .map(|s| s.iter().map(|w| w.as_str()).collect())
            .collect();
        let config = Word2VecConfig {
            dim: 16,
            epochs: 3,
            sample: 0.0,
            ..Default::default()
        };
        let m = Word2Vec::train(&sentences, &config, |_, _| {}).unwrap();
        assert_eq!(m.words.len(), 20);
        assert!(m.losses[2] < m.losses[0], "{:?}", m.losses);
        for w in ["a3", "b7"] {
            let near = m.most_similar(w, 5).unwrap();
            assert!(near.iter().all(|(n, _)| n[..1] == w[..1]), "{w}: {near:?}");
        }
        // Seeded: the same run gives the same vectors.
        let again = Word2Vec::train(&sentences, &config, |_, _| {}).unwrap();
        assert_eq!(again.vectors, m.vectors);
    }

    #[test]
    fn too_little_text_is_an_error() {
        let sentences = vec![vec!["one", "two"]];
        let e = Word2Vec::train(&sentences, &Word2VecConfig::default(), |_, _| {})
            .err()
            .unwrap();
        assert!(e.to_string().contains("too few"));
    }
}
