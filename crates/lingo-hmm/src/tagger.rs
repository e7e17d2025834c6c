//! Taggers over HMMs, their accuracy, and their files.

use crate::{Error, Hmm, Result, Tnt};
use std::collections::HashMap;

/// A part-of-speech tagger: TnT (second order) or the first-order HMM.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tagger {
    Tnt(Tnt),
    Bigram(BigramTagger),
}

/// A first-order HMM tagger: tag bigrams and word emissions with add-k smoothing; words never
/// seen in training share one `<unk>` symbol whose emissions are those of the words seen once.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BigramTagger {
    pub tags: Vec<String>,
    words: HashMap<String, usize>,
    hmm: Hmm,
}

impl BigramTagger {
    pub fn train(sentences: &[(Vec<String>, Vec<String>)], k: f64) -> Result<BigramTagger> {
        let mut tags: Vec<String> = Vec::new();
        let mut tag_ids: HashMap<String, usize> = HashMap::new();
        let mut words: HashMap<String, usize> = HashMap::new();
        let mut freq: Vec<u32> = Vec::new();
        for (ws, ts) in sentences {
            if ws.len() != ts.len() {
                return Err(Error::Invalid(format!(
                    "a sentence has {} words but {} tags",
                    ws.len(),
                    ts.len()
                )));
            }
            for (w, t) in ws.iter().zip(ts) {
                if !tag_ids.contains_key(t) {
                    tag_ids.insert(t.clone(), tags.len());
                    tags.push(t.clone());
                }
                let next = words.len();
                let id = *words.entry(w.clone()).or_insert(next);
                if id == freq.len() {
                    freq.push(0);
                }
                freq[id] += 1;
            }
        }
        if tags.is_empty() {
            return Err(Error::Invalid("no tagged words to train on".into()));
        }
        let unk = words.len();
        let mut data: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        let mut hapaxes: Vec<(usize, usize)> = Vec::new();
        for (ws, ts) in sentences.iter().filter(|s| !s.0.is_empty()) {
            let obs: Vec<usize> = ws.iter().map(|w| words[w]).collect();
            let path: Vec<usize> = ts.iter().map(|t| tag_ids[t]).collect();
            // The words seen once teach `<unk>` which tags unknown words take.
            hapaxes.extend(
                obs.iter()
                    .zip(&path)
                    .filter(|(&o, _)| freq[o] == 1)
                    .map(|(_, &s)| (s, unk)),
            );
            data.push((obs, path));
        }
        let hmm = Hmm::supervised_with(&data, hapaxes, tags.len(), unk + 1, k);
        Ok(BigramTagger { tags, words, hmm })
    }

    pub fn knows(&self, word: &str) -> bool {
        self.words.contains_key(word)
    }

    pub fn tag(&self, words: &[String]) -> Vec<String> {
        let unk = self.words.len();
        let obs: Vec<usize> = words
            .iter()
            .map(|w| self.words.get(w).copied().unwrap_or(unk))
            .collect();
        self.hmm
            .viterbi(&obs)
            .0
            .into_iter()
            .map(|i| self.tags[i].clone())
            .collect()
    }
}

/// Per-word accuracy, split by whether the word was seen in training.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Accuracy {
    pub words: usize,
    pub accuracy: f64,
    pub known_words: usize,
    pub known_accuracy: f64,
    pub unknown_words: usize,
    pub unknown_accuracy: f64,
}

impl Tagger {
    pub fn tags(&self) -> &[String] {
        match self {
            Tagger::Tnt(t) => &t.tags,
            Tagger::Bigram(b) => &b.tags,
        }
    }

    pub fn knows(&self, word: &str) -> bool {
        match self {
            Tagger::Tnt(t) => t.knows(word),
            Tagger::Bigram(b) => b.knows(word),
        }
    }

    /// Tags each sentence.
    pub fn tag_all(&self, sentences: &[Vec<String>]) -> Vec<Vec<String>> {
        match self {
            Tagger::Tnt(t) => t.tag_all(sentences.iter().map(|s| s.as_slice())),
            Tagger::Bigram(b) => sentences.iter().map(|s| b.tag(s)).collect(),
        }
    }

    /// Accuracy against gold `(words, tags)` sentences. A gold tag the model has never seen is an
    /// error: the model and the data use different tag sets.
    pub fn evaluate(&self, gold: &[(Vec<String>, Vec<String>)]) -> Result<Accuracy> {
        let known_tags: std::collections::HashSet<&str> =
            self.tags().iter().map(|t| t.as_str()).collect();
        for (i, (_, tags)) in gold.iter().enumerate() {
            if let Some(t) = tags.iter().find(|t| !known_tags.contains(t.as_str())) {
                return Err(Error::Invalid(format!(
                    "sentence {}: the tag `{t}` is not in the model's tag set ({} tags: {}…); \
                     was the model trained on another column?",
                    i + 1,
                    known_tags.len(),
                    self.tags()
                        .iter()
                        .take(8)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" ")
                )));
            }
        }
        let words: Vec<Vec<String>> = gold.iter().map(|g| g.0.clone()).collect();
        let predicted = self.tag_all(&words);
        let mut a = Accuracy::default();
        let (mut right, mut known_right, mut unknown_right) = (0, 0, 0);
        for ((ws, gold), pred) in gold.iter().zip(&predicted) {
            for ((w, g), p) in ws.iter().zip(gold).zip(pred) {
                let ok = usize::from(g == p);
                a.words += 1;
                right += ok;
                if self.knows(w) {
                    a.known_words += 1;
                    known_right += ok;
                } else {
                    a.unknown_words += 1;
                    unknown_right += ok;
                }
            }
        }
        let ratio = |r: usize, n: usize| if n == 0 { 0.0 } else { r as f64 / n as f64 };
        a.accuracy = ratio(right, a.words);
        a.known_accuracy = ratio(known_right, a.known_words);
        a.unknown_accuracy = ratio(unknown_right, a.unknown_words);
        Ok(a)
    }
}
