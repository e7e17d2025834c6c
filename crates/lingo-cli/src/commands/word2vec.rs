//! `lingo word2vec train | similar`: word vectors by skip-gram with negative sampling
//! (lingo_word2vec), written in the `.vec` text format `lingo train classify|tag --embeddings`
//! and other tools read.

use anyhow::Context;
use clap::{Args, Subcommand};
use lingo_word2vec::{most_similar, Word2Vec, Word2VecConfig};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub enum Word2VecCommand {
    /// Train vectors on a corpus (one sentence or paragraph a line, tokens separated by spaces;
    /// `.gz` allowed) and write them as a `.vec` file.
    Train(Train),
    /// The words nearest to some words by cosine similarity.
    Similar(Similar),
}

impl Word2VecCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Word2VecCommand::Train(t) => t.run(),
            Word2VecCommand::Similar(s) => s.run(),
        }
    }
}

#[derive(Args)]
pub struct Train {
    #[arg(long)]
    corpus: PathBuf,
    /// The `.vec` file to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 100)]
    dim: usize,
    #[arg(long, default_value_t = 5)]
    window: usize,
    /// Negative samples per positive pair.
    #[arg(long, default_value_t = 5)]
    negative: usize,
    #[arg(long, default_value_t = 5)]
    min_count: usize,
    /// Subsampling threshold for frequent words (0: off).
    #[arg(long, default_value_t = 1e-3)]
    sample: f64,
    #[arg(long, default_value_t = 0.025)]
    lr: f32,
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl Train {
    fn run(self) -> anyhow::Result<()> {
        let text = lingo_data::read_file(&self.corpus)?;
        let sentences: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect();
        let words: usize = sentences.iter().map(|s| s.len()).sum();
        let config = Word2VecConfig {
            dim: self.dim,
            window: self.window,
            negative: self.negative,
            min_count: self.min_count,
            sample: self.sample,
            lr: self.lr,
            epochs: self.epochs,
            seed: self.seed,
        };
        let start = Instant::now();
        let bar = indicatif::ProgressBar::new(self.epochs as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "word2vec {bar:30} {pos}/{len} epochs, ETA {eta}, {msg}",
            )?,
        );
        let model = Word2Vec::train(&sentences, &config, |epoch, loss| {
            bar.set_message(format!("loss {loss:.4}"));
            bar.set_position(epoch as u64 + 1);
        })
        .with_context(|| format!("training on {}", self.corpus.display()))?;
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        lingo_data::write_word_vectors(&self.out, &model.words, &model.vectors, model.dim)?;
        let losses: Vec<String> = model.losses.iter().map(|l| format!("{l:.4}")).collect();
        println!(
            "{words} words, vocabulary {} (min count {}); {} epochs, loss {}; {secs:.1}s, {:.0} words/s → {}",
            model.words.len(),
            self.min_count,
            self.epochs,
            losses.join(" → "),
            words as f64 * self.epochs as f64 / secs,
            self.out.display()
        );
        Ok(())
    }
}

#[derive(Args)]
pub struct Similar {
    /// A `.vec` or GloVe text file.
    #[arg(long)]
    vectors: PathBuf,
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// The words to look up.
    #[arg(required = true)]
    words: Vec<String>,
}

impl Similar {
    fn run(self) -> anyhow::Result<()> {
        let v = lingo_data::read_word_vectors(&self.vectors, |_| true)?;
        let mut words: Vec<String> = v.vectors.keys().cloned().collect();
        words.sort();
        let flat: Vec<f32> = words.iter().flat_map(|w| v.vectors[w].clone()).collect();
        for w in &self.words {
            let Some(i) = words.iter().position(|x| x == w) else {
                println!("{w}: not in {}", self.vectors.display());
                continue;
            };
            let near: Vec<String> = most_similar(&words, &flat, v.dim, i, self.top)
                .into_iter()
                .map(|(n, s)| format!("{n} {s:.3}"))
                .collect();
            println!("{w}: {}", near.join(", "));
        }
        Ok(())
    }
}
