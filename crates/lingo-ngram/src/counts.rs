//! Word ids and n-gram counts in sorted arrays.

use std::collections::HashMap;

pub const UNK: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;

/// Words and their ids: `<unk>`, `<s>`, `</s>` first, then words in order of first appearance.
#[derive(Clone, Debug)]
pub struct Vocab {
    words: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Default for Vocab {
    fn default() -> Self {
        let mut v = Vocab {
            words: Vec::new(),
            ids: HashMap::new(),
        };
        for w in ["<unk>", "<s>", "</s>"] {
            v.add(w);
        }
        v
    }
}

impl Vocab {
    /// The id of `word`, added if new.
    pub fn add(&mut self, word: &str) -> u32 {
        if let Some(&id) = self.ids.get(word) {
            return id;
        }
        let id = self.words.len() as u32;
        self.words.push(word.to_string());
        self.ids.insert(word.to_string(), id);
        id
    }

    /// The id of `word`, if known.
    pub fn get(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    pub fn word(&self, id: u32) -> &str {
        &self.words[id as usize]
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// The n-grams of one order, sorted lexicographically by word ids: gram `i` is
/// `ids[i·n .. (i+1)·n]`, seen `counts[i]` times.
#[derive(Clone, Debug, Default)]
pub struct Grams {
    pub n: usize,
    pub ids: Vec<u32>,
    pub counts: Vec<u32>,
}

impl Grams {
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn gram(&self, i: usize) -> &[u32] {
        &self.ids[i * self.n..(i + 1) * self.n]
    }

    /// The index of `gram` (of this order), by binary search.
    pub fn find(&self, gram: &[u32]) -> Option<usize> {
        debug_assert_eq!(gram.len(), self.n);
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.gram(mid).cmp(gram) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Sorts and counts occurrences given as a flat array of `n`-id grams.
    fn from_occurrences(n: usize, flat: Vec<u32>) -> Grams {
        let total = flat.len() / n.max(1);
        let mut order: Vec<u32> = (0..total as u32).collect();
        let at = |i: u32| &flat[i as usize * n..(i as usize + 1) * n];
        order.sort_unstable_by(|&a, &b| at(a).cmp(at(b)));
        let mut grams = Grams {
            n,
            ids: Vec::new(),
            counts: Vec::new(),
        };
        for &i in &order {
            let g = at(i);
            if grams.counts.last().is_some() && grams.gram(grams.len() - 1) == g {
                *grams.counts.last_mut().expect("non-empty") += 1;
            } else {
                grams.ids.extend_from_slice(g);
                grams.counts.push(1);
            }
        }
        grams
    }
}

/// The counts of every order `1..=order` over a corpus.
#[derive(Clone, Debug)]
pub struct Counts {
    pub vocab: Vocab,
    /// `orders[n − 1]`: the n-grams.
    pub orders: Vec<Grams>,
    pub sentences: usize,
    pub tokens: usize,
}

impl Counts {
    /// Counts the n-grams of `sentences` (each a sequence of words, without `<s>`/`</s>`).
    pub fn count<'a>(
        order: usize,
        sentences: impl IntoIterator<Item = Vec<&'a str>>,
    ) -> crate::Result<Counts> {
        if order == 0 {
            return Err(crate::NgramError::Invalid(
                "the order must be at least 1".into(),
            ));
        }
        let mut vocab = Vocab::default();
        let mut flat: Vec<Vec<u32>> = vec![Vec::new(); order];
        let (mut n_sentences, mut tokens) = (0, 0);
        let mut ids = Vec::new();
        for words in sentences {
            ids.clear();
            ids.push(BOS);
            for w in words {
                if w == "<s>" || w == "</s>" {
                    continue;
                }
                ids.push(vocab.add(w));
            }
            ids.push(EOS);
            n_sentences += 1;
            tokens += ids.len() - 2;
            for j in 1..ids.len() {
                for n in 1..=order.min(j + 1) {
                    flat[n - 1].extend_from_slice(&ids[j + 1 - n..=j]);
                }
            }
        }
        if n_sentences == 0 {
            return Err(crate::NgramError::Invalid(
                "the corpus has no sentences".into(),
            ));
        }
        let orders = flat
            .into_iter()
            .enumerate()
            .map(|(i, f)| Grams::from_occurrences(i + 1, f))
            .collect();
        Ok(Counts {
            vocab,
            orders,
            sentences: n_sentences,
            tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_order_in_sorted_arrays() {
        let c = Counts::count(3, [vec!["a", "b", "a"], vec!["a", "b"]]).unwrap();
        let (a, b) = (c.vocab.get("a").unwrap(), c.vocab.get("b").unwrap());
        let uni = &c.orders[0];
        assert_eq!(uni.counts[uni.find(&[a]).unwrap()], 3);
        assert_eq!(uni.counts[uni.find(&[EOS]).unwrap()], 2);
        assert!(uni.find(&[BOS]).is_none(), "<s> is never predicted");
        let bi = &c.orders[1];
        assert_eq!(bi.counts[bi.find(&[BOS, a]).unwrap()], 2);
        assert_eq!(bi.counts[bi.find(&[a, b]).unwrap()], 2);
        let tri = &c.orders[2];
        assert_eq!(tri.counts[tri.find(&[BOS, a, b]).unwrap()], 2);
        assert_eq!(tri.counts[tri.find(&[b, a, EOS]).unwrap()], 1);
        for g in &c.orders {
            for i in 1..g.len() {
                assert!(g.gram(i - 1) < g.gram(i));
            }
        }
        assert_eq!((c.sentences, c.tokens), (2, 5));
    }
}
