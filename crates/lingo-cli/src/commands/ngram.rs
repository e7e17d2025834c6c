//! `lingo ngram train | eval | generate`: n-gram language models in ARPA files (lingo_ngram).

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use lingo_ngram::{estimate, Counts, NgramModel, BOS, EOS};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Subcommand)]
pub enum NgramCommand {
    /// Count a corpus (one sentence a line, tokens separated by spaces; .gz allowed) and write a
    /// smoothed model as an ARPA file.
    Train(Train),
    /// Perplexity of an ARPA model on a corpus, as SRILM's `ngram -ppl` reports it.
    Eval(Eval),
    /// Sample sentences from an ARPA model.
    Generate(Generate),
    /// Classify texts with one n-gram model per label (the label whose model, times its prior,
    /// makes the text likeliest; order 1 with add-k is multinomial Naive Bayes).
    Classify(Classify),
}

impl NgramCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            NgramCommand::Train(t) => t.run(),
            NgramCommand::Eval(e) => e.run(),
            NgramCommand::Generate(g) => g.run(),
            NgramCommand::Classify(c) => c.run(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Smoothing {
    /// Add-k (`--k 1` is Laplace), backing the unseen mass off to the lower order.
    AddK,
    /// Interpolated Witten–Bell.
    WittenBell,
    /// Interpolated absolute discounting (`--discount`, or estimated per order).
    Absolute,
    /// Interpolated Kneser–Ney (`--discount`, or estimated per order).
    Kn,
    /// Interpolated modified Kneser–Ney (SRILM `-kndiscount -interpolate`, KenLM `lmplz`).
    Mkn,
    /// Stupid Backoff (`--alpha`): scores, not probabilities.
    Stupid,
}

#[derive(Args)]
pub struct Train {
    #[arg(long, default_value_t = 3)]
    order: usize,
    #[arg(long, value_enum, default_value = "mkn")]
    smoothing: Smoothing,
    /// The k of add-k smoothing.
    #[arg(long, default_value_t = 1.0)]
    k: f64,
    /// The discount of absolute discounting and Kneser–Ney; estimated as n1/(n1 + 2·n2) per order
    /// when not given.
    #[arg(long)]
    discount: Option<f64>,
    /// Stupid Backoff's factor for backing off.
    #[arg(long, default_value_t = 0.4)]
    alpha: f64,
    #[arg(long)]
    corpus: PathBuf,
    /// The ARPA file to write.
    #[arg(long)]
    out: PathBuf,
}

/// The estimator a `--smoothing` flag and its parameters name.
fn smoothing(kind: Smoothing, k: f64, discount: Option<f64>, alpha: f64) -> lingo_ngram::Smoothing {
    use lingo_ngram::Smoothing as S;
    match kind {
        Smoothing::AddK => S::AddK(k),
        Smoothing::WittenBell => S::WittenBell,
        Smoothing::Absolute => S::Absolute(discount),
        Smoothing::Kn => S::KneserNey(discount),
        Smoothing::Mkn => S::ModifiedKneserNey,
        Smoothing::Stupid => S::StupidBackoff(alpha),
    }
}

/// The sentences of a corpus file: whitespace-separated tokens, blank lines skipped.
fn read_corpus(path: &Path) -> anyhow::Result<String> {
    Ok(lingo_data::read_file(path)?)
}

fn sentences(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
}

impl Train {
    fn run(self) -> anyhow::Result<()> {
        let start = Instant::now();
        let text = read_corpus(&self.corpus)?;
        let counts = Counts::count(self.order, sentences(&text))
            .with_context(|| format!("counting {}", self.corpus.display()))?;
        let model = estimate(
            &counts,
            smoothing(self.smoothing, self.k, self.discount, self.alpha),
        )?;
        lingo_nn::io::write_atomic(&self.out, model.to_arpa().as_bytes())
            .with_context(|| format!("writing {}", self.out.display()))?;
        let sizes: Vec<String> = (model.levels.iter().enumerate())
            .map(|(i, l)| format!("{}-grams {}", i + 1, l.grams.len()))
            .collect();
        println!(
            "{} sentences, {} tokens, vocabulary {}; {}; {:.1}s → {}",
            counts.sentences,
            counts.tokens,
            counts.vocab.len(),
            sizes.join(", "),
            start.elapsed().as_secs_f64(),
            self.out.display()
        );
        if self.smoothing == Smoothing::Stupid {
            println!(
                "note: Stupid Backoff gives scores that do not sum to 1; a perplexity from them \
                 is not comparable with the other smoothings'"
            );
        }
        Ok(())
    }
}

fn load(path: &Path) -> anyhow::Result<NgramModel> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(NgramModel::from_arpa(&text, &path.display().to_string())?)
}

#[derive(Args)]
pub struct Eval {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    corpus: PathBuf,
    /// Print JSON (`perplexity`, `perplexity_excluding_oovs`, `oovs`, …).
    #[arg(long)]
    json: bool,
}

impl Eval {
    fn run(self) -> anyhow::Result<()> {
        let model = load(&self.model)?;
        let text = read_corpus(&self.corpus)?;
        let start = Instant::now();
        let e = model.evaluate(sentences(&text));
        print_evaluation(
            &e,
            "queries",
            start.elapsed().as_secs_f64(),
            self.json,
            None,
        )
    }
}

/// Prints a perplexity as SRILM does (or as JSON, with `<unit>_per_second` and `extra` fields):
/// `lingo ngram eval` and `lingo rnn-lm eval` alike.
pub fn print_evaluation(
    e: &lingo_ngram::Evaluation,
    unit: &str,
    secs: f64,
    json: bool,
    extra: Option<(&str, f64)>,
) -> anyhow::Result<()> {
    let rate = (e.words + e.sentences) as f64 / secs;
    if json {
        let mut value = serde_json::to_value(e)?;
        value[format!("{unit}_per_second")] = rate.into();
        if let Some((key, v)) = extra {
            value[key] = v.into();
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "{} sentences, {} words, {} OOVs\nlogprob= {:.2} ppl= {:.2} ppl1= {:.2} (OOVs as <unk>: ppl {:.2}); {rate:.0} {unit}/s",
            e.sentences,
            e.words,
            e.oovs,
            e.logprob,
            e.perplexity_excluding_oovs,
            e.perplexity_without_eos,
            e.perplexity,
        );
        if let Some((key, v)) = extra {
            println!("{key}: {v:.4}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct Generate {
    #[arg(long)]
    model: PathBuf,
    /// Sentences to sample.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// Longest sentence, in words.
    #[arg(long, default_value_t = 50)]
    max_words: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl Generate {
    fn run(self) -> anyhow::Result<()> {
        let model = load(&self.model)?;
        let mut rng = lingo_nn::LingoRng::new(self.seed);
        let words: Vec<u32> = (0..model.vocab.len() as u32)
            .filter(|&w| w != BOS)
            .collect();
        for _ in 0..self.count {
            let mut ids = vec![BOS];
            let mut out = Vec::new();
            while out.len() < self.max_words {
                let probs: Vec<f64> = (words.iter())
                    .map(|&w| 10f64.powf(model.logprob(&ids, w) as f64))
                    .collect();
                let total: f64 = probs.iter().sum();
                let mut u = rng.uniform() as f64 * total;
                let mut pick = words[words.len() - 1];
                for (&w, &p) in words.iter().zip(&probs) {
                    if u < p {
                        pick = w;
                        break;
                    }
                    u -= p;
                }
                if pick == EOS {
                    break;
                }
                ids.push(pick);
                out.push(model.vocab.word(pick));
            }
            println!("{}", out.join(" "));
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct Classify {
    /// Labelled texts: `.tsv`/`.csv` with a header (`sentence`/`text` and `label`) or `.jsonl`.
    #[arg(long)]
    train: PathBuf,
    /// Texts to classify and score, in the same format.
    #[arg(long)]
    valid: PathBuf,
    #[arg(long, default_value_t = 1)]
    order: usize,
    #[arg(long, value_enum, default_value = "add-k")]
    smoothing: Smoothing,
    #[arg(long, default_value_t = 1.0)]
    k: f64,
    #[arg(long)]
    discount: Option<f64>,
    /// Print JSON (`accuracy`, `sentences_per_second`, …).
    #[arg(long)]
    json: bool,
}

impl Classify {
    fn run(self) -> anyhow::Result<()> {
        let start = Instant::now();
        let train = lingo_data::read_labelled(&self.train)?;
        let valid = lingo_data::read_labelled(&self.valid)?;
        let smoothing = smoothing(self.smoothing, self.k, self.discount, 0.4);
        let words = |t: &str| t.split_whitespace().map(String::from).collect::<Vec<_>>();
        let labels =
            lingo_eval::classification::sorted_labels(train.iter().map(|e| e.label.as_str()));
        // One model and one log10 prior per label.
        let models = (labels.iter())
            .map(|label| {
                let texts: Vec<Vec<String>> = (train.iter())
                    .filter(|e| &e.label == label)
                    .map(|e| words(&e.text))
                    .collect();
                let counts = Counts::count(
                    self.order,
                    texts.iter().map(|t| t.iter().map(String::as_str).collect()),
                )
                .with_context(|| format!("counting the texts labelled `{label}`"))?;
                let model = estimate(&counts, smoothing)
                    .with_context(|| format!("the model of `{label}`"))?;
                let prior = (texts.len() as f64 / train.len() as f64).log10();
                Ok((model, prior))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let trained = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut right = 0;
        for e in &valid {
            let truth = (e.label_index(&labels))
                .map_err(|m| anyhow::anyhow!("{}: {m}", self.valid.display()))?;
            let text = words(&e.text);
            let sentence = [text.iter().map(String::as_str).collect::<Vec<_>>()];
            let best = (models.iter())
                .map(|(m, prior)| prior + m.evaluate(sentence.clone()).logprob)
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(i, _)| i);
            right += usize::from(best as u32 == truth);
        }
        let rate = valid.len() as f64 / start.elapsed().as_secs_f64();
        let accuracy = right as f64 / valid.len().max(1) as f64;
        if self.json {
            let v = serde_json::json!({
                "accuracy": accuracy,
                "texts": valid.len(),
                "labels": labels,
                "train_seconds": trained,
                "sentences_per_second": rate,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!(
                "accuracy {:.2}% on {} texts ({} labels); trained in {trained:.2}s, {rate:.0} texts/s",
                100.0 * accuracy,
                valid.len(),
                labels.len()
            );
        }
        Ok(())
    }
}
