//! Sentence-pair instances for next-sentence prediction (BERT) and sentence-order prediction
//! (ALBERT), packed as Google's `create_pretraining_data.py` packs them: sentences of one document
//! are gathered until a target length (the maximum, or with probability `short_seq_prob` a
//! shorter random one, so the model also sees short inputs), cut at a random sentence boundary
//! into A and B; then
//!
//! - **NSP**: half the time B is replaced by text from a random *other* document (label 1,
//!   "random"), the unused sentences going back to be used next; label 0 means B follows A.
//! - **SOP**: B always follows A, and half the time the two are swapped (label 1, "swapped").
//!
//! The pair is then trimmed to fit, one token at a time from the longer segment, at its front
//! or back at random.

use lingo_nn::LingoRng;
use serde::{Deserialize, Serialize};

/// Which sentence-pair task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairTask {
    NextSentence,
    SentenceOrder,
}

/// One instance: segments A and B (no special tokens yet) and the pair label.
#[derive(Clone, Debug, PartialEq)]
pub struct SentencePair {
    pub a: Vec<u32>,
    pub b: Vec<u32>,
    /// NSP: 1 when B is random; SOP: 1 when A and B are swapped.
    pub label: u32,
}

/// Documents as lists of sentences (token ids), any storage.
pub trait Documents {
    fn len(&self) -> usize;
    fn document(&self, d: usize) -> Vec<&[u32]>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Documents for Vec<Vec<Vec<u32>>> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn document(&self, d: usize) -> Vec<&[u32]> {
        self[d].iter().map(Vec::as_slice).collect()
    }
}

/// The instances of document `d` for inputs of `max_tokens` tokens including three special
/// tokens (`[CLS] A [SEP] B [SEP]`).
pub fn pair_instances(
    docs: &dyn Documents,
    d: usize,
    task: PairTask,
    max_tokens: usize,
    short_seq_prob: f32,
    rng: &mut LingoRng,
) -> Vec<SentencePair> {
    let document = docs.document(d);
    let max_num = max_tokens.saturating_sub(3);
    let target = if rng.uniform() < short_seq_prob {
        2 + rng.below(max_num.saturating_sub(1).max(1))
    } else {
        max_num
    };
    let mut out = Vec::new();
    let mut chunk: Vec<&[u32]> = Vec::new();
    let mut length = 0;
    let mut i = 0;
    while i < document.len() {
        chunk.push(document[i]);
        length += document[i].len();
        if i == document.len() - 1 || length >= target {
            let a_end = if chunk.len() >= 2 {
                1 + rng.below(chunk.len() - 1)
            } else {
                1
            };
            let mut a: Vec<u32> = chunk[..a_end].concat();
            let mut b: Vec<u32>;
            let mut label = 0;
            match task {
                PairTask::NextSentence if chunk.len() == 1 || rng.uniform() < 0.5 => {
                    label = 1;
                    let want = target.saturating_sub(a.len()).max(1);
                    let other = random_other_document(docs, d, rng);
                    let sentences = docs.document(other);
                    b = Vec::new();
                    let start = match sentences.len() {
                        0 => 0,
                        n => rng.below(n),
                    };
                    for s in &sentences[start..] {
                        b.extend_from_slice(s);
                        if b.len() >= want {
                            break;
                        }
                    }
                    // The sentences of this chunk that B did not use are used next.
                    i -= chunk.len() - a_end;
                }
                PairTask::NextSentence => b = chunk[a_end..].concat(),
                PairTask::SentenceOrder => {
                    b = chunk[a_end..].concat();
                    if b.is_empty() {
                        // A one-sentence chunk: split the sentence itself so there is an order.
                        let cut = a.len() / 2;
                        b = a.split_off(cut);
                    }
                    if rng.uniform() < 0.5 {
                        std::mem::swap(&mut a, &mut b);
                        label = 1;
                    }
                }
            }
            truncate_pair(&mut a, &mut b, max_num, rng);
            if !a.is_empty() && !b.is_empty() {
                out.push(SentencePair { a, b, label });
            }
            chunk.clear();
            length = 0;
        }
        i += 1;
    }
    out
}

/// A document other than `d` (after ten tries, whatever was drawn, as Google's script does).
fn random_other_document(docs: &dyn Documents, d: usize, rng: &mut LingoRng) -> usize {
    let mut other = d;
    for _ in 0..10 {
        other = rng.below(docs.len());
        if other != d {
            break;
        }
    }
    other
}

/// Removes tokens from the longer of `a` and `b`, at its front or back at random, until both fit
/// in `max` tokens.
pub fn truncate_pair(a: &mut Vec<u32>, b: &mut Vec<u32>, max: usize, rng: &mut LingoRng) {
    while a.len() + b.len() > max {
        let longer = if a.len() > b.len() { &mut *a } else { &mut *b };
        if rng.uniform() < 0.5 {
            longer.remove(0);
        } else {
            longer.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten documents of five sentences; sentence s of document d is `[100·d + 10·s + k]` for
    /// k in 0..3, so every token tells where it came from.
    fn docs() -> Vec<Vec<Vec<u32>>> {
        (0..10)
            .map(|d| {
                (0..5)
                    .map(|s| (0..3).map(|k| 100 * d + 10 * s + k).collect())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn next_sentence_pairs_are_half_random_and_otherwise_contiguous() {
        let docs = docs();
        let mut rng = LingoRng::new(3);
        let (mut random, mut total) = (0, 0);
        for round in 0..200 {
            let d = round % 10;
            for p in pair_instances(&docs, d, PairTask::NextSentence, 12, 0.1, &mut rng) {
                assert!(p.a.len() + p.b.len() <= 9);
                assert!(
                    p.a.iter().all(|&t| t / 100 == d as u32),
                    "A is from the document"
                );
                let b_from_d = p.b.iter().all(|&t| t / 100 == d as u32);
                if p.label == 0 {
                    assert!(b_from_d);
                    // B starts right after A ends (modulo trimming at the seam).
                    assert!(p.b[0] > *p.a.last().unwrap());
                } else {
                    assert!(
                        p.b.iter().all(|&t| t / 100 != d as u32),
                        "B from another document"
                    );
                    random += 1;
                }
                total += 1;
            }
        }
        let share = random as f64 / total as f64;
        assert!((0.4..0.65).contains(&share), "{share}");
    }

    #[test]
    fn sentence_order_swaps_half_of_the_pairs() {
        let docs = docs();
        let mut rng = LingoRng::new(4);
        let (mut swapped, mut total) = (0, 0);
        for d in 0..10 {
            for _ in 0..20 {
                for p in pair_instances(&docs, d, PairTask::SentenceOrder, 40, 0.0, &mut rng) {
                    let in_order = p.a.last() < p.b.first();
                    assert_eq!(p.label == 0, in_order);
                    swapped += p.label as usize;
                    total += 1;
                }
            }
        }
        let share = swapped as f64 / total as f64;
        assert!((0.4..0.6).contains(&share), "{share}");
    }

    #[test]
    fn trimming_takes_from_the_longer_segment() {
        let mut rng = LingoRng::new(5);
        let (mut a, mut b) = ((0..10).collect::<Vec<u32>>(), vec![100, 101]);
        truncate_pair(&mut a, &mut b, 6, &mut rng);
        assert_eq!((a.len(), b.len()), (4, 2));
    }
}
