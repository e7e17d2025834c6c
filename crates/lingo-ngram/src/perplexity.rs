//! Perplexity of any word-level language model, counted as SRILM's `ngram -ppl` counts it: the n-gram
//! models here and the recurrent ones (`lingo rnn-lm eval`) are scored by this one function over
//! the same tokens — each sentence's words and its end, out-of-vocabulary words as `<unk>`.

/// A word-level language model that can be scored.
pub trait WordLm {
    /// The id of `word`, `None` when it is out of the vocabulary.
    fn word_id(&self, word: &str) -> Option<u32>;
    /// The id out-of-vocabulary words are scored as.
    fn unk_id(&self) -> u32;
    /// log10 p of every word of every sentence (ids without boundaries) and then of the sentence's
    /// end, sentences in corpus order. A model may carry its context from one sentence to the next.
    fn log10_probs(&mut self, sentences: &[Vec<u32>]) -> Result<Vec<Vec<f64>>, String>;
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

/// Scores `sentences` (their words, without `<s>`/`</s>`) under `model`.
pub fn perplexity<S: AsRef<str>>(
    model: &mut impl WordLm,
    sentences: &[Vec<S>],
) -> Result<Evaluation, String> {
    let mut unknown = Vec::with_capacity(sentences.len());
    let ids: Vec<Vec<u32>> = sentences
        .iter()
        .map(|s| {
            let looked: Vec<Option<u32>> = s.iter().map(|w| model.word_id(w.as_ref())).collect();
            unknown.push(looked.iter().map(Option::is_none).collect::<Vec<_>>());
            looked
                .into_iter()
                .map(|id| id.unwrap_or(model.unk_id()))
                .collect()
        })
        .collect();
    let scores = model.log10_probs(&ids)?;
    if scores.len() != ids.len() {
        return Err(format!(
            "the model scored {} sentences of {}",
            scores.len(),
            ids.len()
        ));
    }
    let (mut words, mut oovs) = (0usize, 0usize);
    let (mut total, mut oov_total, mut eos_total) = (0f64, 0f64, 0f64);
    for (i, (lps, unknown)) in scores.iter().zip(&unknown).enumerate() {
        if lps.len() != unknown.len() + 1 {
            return Err(format!(
                "sentence {}: {} scores for {} words and the end",
                i + 1,
                lps.len(),
                unknown.len()
            ));
        }
        words += unknown.len();
        for (lp, &oov) in lps.iter().zip(unknown) {
            total += lp;
            if oov {
                oovs += 1;
                oov_total += lp;
            }
        }
        let end = lps[unknown.len()];
        total += end;
        eos_total += end;
    }
    let n_sent = sentences.len();
    let ppl = |sum: f64, n: usize| 10f64.powf(-sum / n.max(1) as f64);
    let known = total - oov_total;
    Ok(Evaluation {
        sentences: n_sent,
        words,
        oovs,
        logprob: total,
        perplexity: ppl(total, words + n_sent),
        perplexity_excluding_oovs: ppl(known, words + n_sent - oovs),
        perplexity_without_eos: ppl(known - eos_total, words - oovs),
    })
}
