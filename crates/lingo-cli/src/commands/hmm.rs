//! `lingo hmm train | tag | eval | baum-welch`: HMM part-of-speech taggers (lingo_hmm) on CoNLL-U
//! treebanks.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use lingo_data::{read_conllu, read_tagged_column, TaggedSentence, UdColumn};
use lingo_hmm::{BigramTagger, Hmm, Tagger, Tnt};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Subcommand)]
pub enum HmmCommand {
    /// Train a tagger on a CoNLL-U file: TnT's trigram HMM (`--order 2`) or a first-order HMM.
    Train(Train),
    /// Tag tokenized text: one sentence a line, tokens separated by spaces (stdin by default).
    Tag(Tag),
    /// Tagging accuracy on a CoNLL-U file, overall and for words seen and unseen in training.
    Eval(Eval),
    /// Unsupervised Baum–Welch on a CoNLL-U file's words: the log-likelihood trace, and the
    /// accuracy of mapping each state to the gold tag it most often meets.
    BaumWelch(BaumWelch),
}

impl HmmCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            HmmCommand::Train(t) => t.run(),
            HmmCommand::Tag(t) => t.run(),
            HmmCommand::Eval(e) => e.run(),
            HmmCommand::BaumWelch(b) => b.run(),
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Column {
    Upos,
    Xpos,
}

impl From<Column> for UdColumn {
    fn from(c: Column) -> UdColumn {
        match c {
            Column::Upos => UdColumn::Upos,
            Column::Xpos => UdColumn::Xpos,
        }
    }
}

/// What `lingo hmm train` writes to `DIR/tagger.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    format: String,
    column: UdColumn,
    tagger: Tagger,
}

const FORMAT: &str = "lingo-hmm-tagger/1";
const FILE: &str = "tagger.json";

fn is_conllu(path: &Path) -> bool {
    let name = path.to_string_lossy().to_lowercase();
    name.trim_end_matches(".gz").ends_with(".conllu")
}

/// What the tags of `path` are called: the CoNLL-U column, or "CoNLL" for column files.
fn tag_kind(path: &Path, column: UdColumn) -> &'static str {
    if is_conllu(path) {
        column.name()
    } else {
        "CoNLL"
    }
}

fn pairs(sentences: Vec<TaggedSentence>) -> Vec<(Vec<String>, Vec<String>)> {
    sentences.into_iter().map(|s| (s.words, s.tags)).collect()
}

fn load(dir: &Path) -> anyhow::Result<Saved> {
    let path = dir.join(FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let saved: Saved = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a Lingo HMM tagger", path.display()))?;
    if saved.format != FORMAT {
        bail!(
            "{}: format `{}`, expected `{FORMAT}`",
            path.display(),
            saved.format
        );
    }
    Ok(saved)
}

#[derive(Args)]
pub struct Train {
    /// A CoNLL-U file (tags from `--column`), or a CoNLL column file (word first, tag last, as
    /// CoNLL-2003) or `.jsonl`; `.gz` allowed.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "upos")]
    column: Column,
    /// The directory to write `tagger.json` to.
    #[arg(long)]
    out: PathBuf,
    /// 2: TnT's trigram tagger (Brants 2000); 1: a first-order (bigram) HMM.
    #[arg(long, default_value_t = 2)]
    order: usize,
    /// Add-k smoothing of the first-order HMM's transitions and emissions.
    #[arg(long, default_value_t = 0.01)]
    k: f64,
}

impl Train {
    fn run(self) -> anyhow::Result<()> {
        let start = Instant::now();
        let data = pairs(read_tagged_column(&self.data, self.column.into())?);
        let words: usize = data.iter().map(|s| s.0.len()).sum();
        let tagger = match self.order {
            2 => Tagger::Tnt(Tnt::train(&data)?),
            1 => Tagger::Bigram(BigramTagger::train(&data, self.k)?),
            n => bail!("--order {n}: 1 (first-order HMM) or 2 (TnT) only"),
        };
        let saved = Saved {
            format: FORMAT.into(),
            column: self.column.into(),
            tagger,
        };
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        let path = self.out.join(FILE);
        lingo_nn::io::write_atomic(&path, serde_json::to_string(&saved)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        let detail = match &saved.tagger {
            Tagger::Tnt(t) => {
                let l = t.lambdas();
                format!("TnT, λ = {:.3} {:.3} {:.3}", l[0], l[1], l[2])
            }
            Tagger::Bigram(_) => "first-order HMM".into(),
        };
        println!(
            "{} sentences, {words} words, {} {} tags; {detail}; {:.1}s → {}",
            data.len(),
            saved.tagger.tags().len(),
            tag_kind(&self.data, saved.column),
            start.elapsed().as_secs_f64(),
            path.display()
        );
        Ok(())
    }
}

#[derive(Args)]
pub struct Tag {
    #[arg(long)]
    model: PathBuf,
    /// Tokenized text, one sentence a line (stdin when absent).
    #[arg(long)]
    input: Option<PathBuf>,
}

impl Tag {
    fn run(self) -> anyhow::Result<()> {
        let saved = load(&self.model)?;
        let text = match &self.input {
            Some(p) => lingo_data::read_file(p)?,
            None => {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            }
        };
        let sentences: Vec<Vec<String>> = text
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect();
        for (words, tags) in sentences.iter().zip(saved.tagger.tag_all(&sentences)) {
            let line: Vec<String> = words
                .iter()
                .zip(&tags)
                .map(|(w, t)| format!("{w}/{t}"))
                .collect();
            println!("{}", line.join(" "));
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct Eval {
    #[arg(long)]
    model: PathBuf,
    /// A CoNLL-U file (read with the model's column) or a CoNLL column file; `.gz` allowed.
    #[arg(long)]
    data: PathBuf,
    /// Print JSON (`accuracy`, `known_accuracy`, `unknown_accuracy`, and `f1`, `precision`,
    /// `recall` — seqeval's entity scores — for BIO tags).
    #[arg(long)]
    json: bool,
}

impl Eval {
    fn run(self) -> anyhow::Result<()> {
        let saved = load(&self.model)?;
        let gold = pairs(read_tagged_column(&self.data, saved.column)?);
        let start = Instant::now();
        let a = saved
            .tagger
            .evaluate(&gold)
            .with_context(|| format!("evaluating on {}", self.data.display()))?;
        let rate = a.words as f64 / start.elapsed().as_secs_f64();
        let entities = entity_scores(&saved.tagger, &gold)?;
        if self.json {
            let mut v = serde_json::to_value(&a)?;
            v["words_per_second"] = rate.into();
            v["column"] = saved.column.name().into();
            if let Some(e) = &entities {
                v["precision"] = e.precision.into();
                v["recall"] = e.recall.into();
                v["f1"] = e.f1.into();
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!(
                "{} accuracy {:.2}% on {} words; known words {:.2}% ({}), unknown words {:.2}% ({}); {:.0} words/s",
                tag_kind(&self.data, saved.column),
                100.0 * a.accuracy,
                a.words,
                100.0 * a.known_accuracy,
                a.known_words,
                100.0 * a.unknown_accuracy,
                a.unknown_words,
                rate
            );
            if let Some(e) = &entities {
                println!(
                    "entities (seqeval): F1 {:.2}, precision {:.2}, recall {:.2}",
                    100.0 * e.f1,
                    100.0 * e.precision,
                    100.0 * e.recall
                );
            }
        }
        Ok(())
    }
}

/// seqeval's entity scores when the tags are BIO-style (`B-…`/`I-…`), else `None`.
fn entity_scores(
    tagger: &Tagger,
    gold: &[(Vec<String>, Vec<String>)],
) -> anyhow::Result<Option<lingo_eval::SeqevalReport>> {
    let bio = |t: &String| t.starts_with("B-") || t.starts_with("I-");
    if !gold.iter().any(|(_, tags)| tags.iter().any(bio)) {
        return Ok(None);
    }
    let words: Vec<Vec<String>> = gold.iter().map(|(w, _)| w.clone()).collect();
    let predicted = tagger.tag_all(&words);
    let references: Vec<Vec<String>> = gold.iter().map(|(_, t)| t.clone()).collect();
    Ok(Some(lingo_eval::seqeval(
        &predicted,
        &references,
        lingo_eval::SeqevalMode::Default,
    )?))
}

#[derive(Args)]
pub struct BaumWelch {
    /// A CoNLL-U file (`.gz` allowed); its tags are only used to score the result.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "upos")]
    column: Column,
    /// Hidden states (default: as many as the gold tags).
    #[arg(long)]
    states: Option<usize>,
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Use the first N sentences only.
    #[arg(long)]
    max_sentences: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl BaumWelch {
    fn run(self) -> anyhow::Result<()> {
        let mut data = pairs(read_conllu(&self.data, self.column.into())?);
        if let Some(n) = self.max_sentences {
            data.truncate(n);
        }
        let mut vocab: HashMap<&str, usize> = HashMap::new();
        let mut tags: HashMap<&str, usize> = HashMap::new();
        let mut obs: Vec<Vec<usize>> = Vec::new();
        let mut gold: Vec<Vec<usize>> = Vec::new();
        for (ws, ts) in &data {
            obs.push(
                ws.iter()
                    .map(|w| {
                        let n = vocab.len();
                        *vocab.entry(w.as_str()).or_insert(n)
                    })
                    .collect(),
            );
            gold.push(
                ts.iter()
                    .map(|t| {
                        let n = tags.len();
                        *tags.entry(t.as_str()).or_insert(n)
                    })
                    .collect(),
            );
        }
        let states = self.states.unwrap_or(tags.len());
        if states == 0 {
            bail!("--states must be at least 1");
        }
        let mut hmm = Hmm::random(states, vocab.len(), self.seed);
        let start = Instant::now();
        let bar = indicatif::ProgressBar::new(self.iterations as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "Baum–Welch {bar:30} {pos}/{len} iterations, {per_sec}, ETA {eta}, {msg}",
            )?,
        );
        let mut trace = Vec::new();
        for _ in 0..self.iterations {
            trace.push(hmm.baum_welch_step(&obs));
            bar.set_message(format!("log-likelihood {:.1}", trace[trace.len() - 1]));
            bar.inc(1);
        }
        bar.finish_and_clear();
        trace.push(obs.iter().map(|o| hmm.forward(o).1).sum());
        // Many-to-one: each state takes the gold tag it most often meets under Viterbi.
        let predicted: Vec<Vec<usize>> = obs.iter().map(|o| hmm.viterbi(o).0).collect();
        let mut meets = vec![vec![0usize; tags.len()]; states];
        for (p, g) in predicted.iter().zip(&gold) {
            for (&s, &t) in p.iter().zip(g) {
                meets[s][t] += 1;
            }
        }
        let right: usize = meets
            .iter()
            .map(|m| m.iter().max().copied().unwrap_or(0))
            .sum();
        let words: usize = obs.iter().map(|o| o.len()).sum();
        for (i, ll) in trace.iter().enumerate() {
            println!("iteration {i:>3}: log-likelihood {ll:.2}");
        }
        println!(
            "{} sentences, {words} words, {states} states; many-to-one {} accuracy {:.2}%; {:.1}s",
            obs.len(),
            UdColumn::from(self.column).name(),
            100.0 * right as f64 / words.max(1) as f64,
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
