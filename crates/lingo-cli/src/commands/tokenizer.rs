use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use lingo_data::{BpeStyle, Corpus, DocumentBreak, Scheme, Tokenizer, TokenizerSpec};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Train a WordPiece (BERT), byte-level BPE (GPT-2, RoBERTa) or Unigram (T5) tokenizer on a
    /// corpus; writes tokenizer.json, tokenizer_config.json and special_tokens_map.json.
    Train(TrainTokenizer),
}

impl TokenizerCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            TokenizerCommand::Train(t) => t.run(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Wordpiece,
    Bpe,
    Unigram,
}

#[derive(Clone, Copy, ValueEnum)]
enum Style {
    Gpt2,
    Roberta,
}

#[derive(Args)]
pub struct TrainTokenizer {
    #[arg(long, value_enum)]
    kind: Kind,
    /// Tokens in the vocabulary, special tokens (and T5's sentinels) included.
    #[arg(long)]
    vocab_size: usize,
    /// Text files (plain or .gz), one sentence or paragraph a line.
    #[arg(long, num_args = 1.., required = true)]
    corpus: Vec<PathBuf>,
    /// The folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Byte-level BPE: GPT-2's special token and template, or RoBERTa's.
    #[arg(long, value_enum, default_value = "gpt2")]
    style: Style,
    /// WordPiece: keep case and accents (as bert-base-cased).
    #[arg(long)]
    cased: bool,
    /// Unigram: span-corruption sentinels <extra_id_0> … (T5 has 100).
    #[arg(long, default_value_t = 100)]
    sentinels: usize,
    /// WordPiece and BPE: the fewest occurrences a piece needs.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// The longest input, recorded as model_max_length.
    #[arg(long, default_value_t = 512)]
    model_max_length: usize,
}

impl TrainTokenizer {
    fn run(self) -> anyhow::Result<()> {
        let scheme = match self.kind {
            Kind::Wordpiece => Scheme::WordPiece {
                lowercase: !self.cased,
            },
            Kind::Bpe => Scheme::Bpe {
                style: match self.style {
                    Style::Gpt2 => BpeStyle::Gpt2,
                    Style::Roberta => BpeStyle::Roberta,
                },
            },
            Kind::Unigram => Scheme::Unigram {
                sentinels: self.sentinels,
            },
        };
        let spec = TokenizerSpec {
            scheme,
            vocab_size: self.vocab_size,
            min_frequency: self.min_frequency,
        };
        let corpus = Corpus::new(self.corpus.clone(), DocumentBreak::Line)?;
        let start = std::time::Instant::now();
        let tokenizer = spec.train(corpus.lines())?;
        spec.save(&tokenizer, &self.out, self.model_max_length)?;
        eprintln!(
            "trained a {}-token tokenizer in {:.1}s; wrote {}",
            tokenizer.vocab_size(),
            start.elapsed().as_secs_f64(),
            self.out.display()
        );
        Ok(())
    }
}

/// Print the ids and tokens a tokenizer gives each text.
#[derive(Args)]
pub struct Tokenize {
    /// A tokenizer.json, a folder holding one, or a Hub model id.
    #[arg(long)]
    tokenizer: String,
    /// One JSON object per text and line: {"text", "ids", "tokens"}.
    #[arg(long)]
    json: bool,
    /// Leave out the special tokens a model input gets ([CLS] … [SEP], … </s>).
    #[arg(long)]
    no_special_tokens: bool,
    /// Never download (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// The texts.
    #[arg(required = true)]
    texts: Vec<String>,
}

impl Tokenize {
    pub fn run(self) -> anyhow::Result<()> {
        let tokenizer = load(&self.tokenizer, self.offline)?;
        for text in &self.texts {
            let enc = tokenizer
                .inner()
                .encode(text.as_str(), !self.no_special_tokens)
                .map_err(|e| anyhow::anyhow!("cannot encode {text:?}: {e}"))?;
            // Vocabulary entries (as `convert_ids_to_tokens`), not the text each id covers.
            let (ids, tokens) = (enc.get_ids(), tokenizer.tokens(enc.get_ids()));
            if self.json {
                println!(
                    "{}",
                    serde_json::json!({"text": text, "ids": ids, "tokens": tokens})
                );
            } else {
                println!("{text}");
                println!("  ids:    {ids:?}");
                println!("  tokens: {tokens:?}");
            }
        }
        Ok(())
    }
}

/// A tokenizer from a file, a folder or the Hub.
fn load(what: &str, offline: bool) -> anyhow::Result<Tokenizer> {
    let path = Path::new(what);
    let file = if path.is_file() {
        path.to_path_buf()
    } else if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        lingo_models::hub::resolve_model(what, offline)?.join("tokenizer.json")
    };
    if !file.is_file() {
        anyhow::bail!("{}: no tokenizer.json here", file.display());
    }
    Tokenizer::load(&file).with_context(|| format!("loading {}", file.display()))
}
