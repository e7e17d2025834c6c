//! `lingo rnn-lm eval | generate`: the recurrent language models `lingo train rnn-lm` writes,
//! scored by the same perplexity code as `lingo ngram eval`.

use clap::{Args, Subcommand};
use lingo_tasks::rnn_lm::sentences_of;
use lingo_tasks::RnnLmPipeline;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub enum RnnLmCommand {
    /// Perplexity on a corpus, counted as `lingo ngram eval` counts it (every word and each
    /// sentence's end; OOVs as <unk>). A model trained on labels reads labelled texts, scores each
    /// sentence from its label, and also classifies them by which label makes them likeliest.
    Eval(Eval),
    /// Sample sentences (from a label, for a model trained on labels).
    Generate(Generate),
}

impl RnnLmCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            RnnLmCommand::Eval(e) => e.run(),
            RnnLmCommand::Generate(g) => g.run(),
        }
    }
}

#[derive(Args)]
pub struct Eval {
    /// A folder `lingo train rnn-lm` wrote.
    #[arg(long)]
    model: PathBuf,
    /// One sentence a line (words separated by spaces); labelled texts for a model trained on
    /// labels; `.gz` allowed.
    #[arg(long)]
    corpus: PathBuf,
    /// Print JSON (`perplexity`, `perplexity_excluding_oovs`, `oovs`, … as `lingo ngram eval`).
    #[arg(long)]
    json: bool,
}

impl Eval {
    fn run(self) -> anyhow::Result<()> {
        let lm = RnnLmPipeline::load(&self.model)?;
        let start = Instant::now();
        let (e, label_accuracy) = if lm.labels.is_empty() {
            let sentences = sentences_of(&lingo_data::read_file(&self.corpus)?);
            (
                lingo_ngram::perplexity(&mut lm.scorer(None), &sentences),
                None,
            )
        } else {
            let data = lingo_data::read_labelled(&self.corpus)?;
            let labels: Vec<u32> = (data.iter())
                .map(|e| {
                    lm.label_id(&e.label).map_err(|err| {
                        anyhow::anyhow!("{}: line {}: {err}", self.corpus.display(), e.line)
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            let sentences: Vec<Vec<String>> = (data.iter())
                .map(|e| e.text.split_whitespace().map(String::from).collect())
                .collect();
            let e = lingo_ngram::perplexity(&mut lm.scorer(Some(&labels)), &sentences);
            let ids: Vec<Vec<u32>> = sentences.iter().map(|s| lm.vocab.encode(s)).collect();
            let predicted = lm.classify(&ids)?;
            let right = (predicted.iter().zip(&labels))
                .filter(|((p, _), l)| p == *l)
                .count();
            (e, Some(right as f64 / labels.len().max(1) as f64))
        };
        let e = e.map_err(|err| anyhow::anyhow!("{}: {err}", self.corpus.display()))?;
        // The label under which each sentence is likeliest, right or wrong.
        let extra = label_accuracy.map(|a| ("label_accuracy", a));
        super::ngram::print_evaluation(&e, "words", start.elapsed().as_secs_f64(), self.json, extra)
    }
}

#[derive(Args)]
pub struct Generate {
    #[arg(long)]
    model: PathBuf,
    /// The label to generate from (a model trained on labelled texts).
    #[arg(long)]
    label: Option<String>,
    /// Sentences to sample.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// Longest sentence, in words.
    #[arg(long, default_value_t = 50)]
    max_words: usize,
    /// Sharpen (<1) or flatten (>1) the distribution; 0 takes the most probable word.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl Generate {
    fn run(self) -> anyhow::Result<()> {
        let lm = RnnLmPipeline::load(&self.model)?;
        let label = match (&self.label, lm.labels.is_empty()) {
            (Some(l), _) => Some(lm.label_id(l)?),
            (None, true) => None,
            (None, false) => anyhow::bail!(
                "this model generates from a label: give --label ({})",
                lm.labels.join(", ")
            ),
        };
        for sentence in lm.generate(
            label,
            self.count,
            self.max_words,
            self.temperature,
            self.seed,
        )? {
            println!("{sentence}");
        }
        Ok(())
    }
}
