use super::train::RunArgs;
use clap::{Args, ValueEnum};
use lingo_data::DocumentBreak;
use lingo_tasks::{CorpusFiles, Objective, PretrainRecipe, PretrainTask};
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
enum ObjectiveArg {
    /// Masked LM (BERT, RoBERTa, ALBERT, ELECTRA).
    Mlm,
    /// Masked LM and next-sentence prediction (BERT).
    MlmNsp,
    /// Masked LM and sentence-order prediction (ALBERT).
    MlmSop,
    /// Causal LM (GPT-2).
    Clm,
    /// Span corruption (T5).
    SpanCorruption,
    /// Replaced-token detection with a jointly trained generator (ELECTRA).
    ReplacedToken,
}

#[derive(Clone, Copy, ValueEnum)]
enum DocumentsArg {
    /// A blank line ends a document; each other line is a sentence.
    BlankLine,
    /// Every line is a document.
    Line,
}

/// Pre-train a model from scratch on raw text; writes a Hugging Face folder.
#[derive(Args)]
pub struct Pretrain {
    /// A size preset: bert-tiny, bert-mini, bert-small, bert-medium, roberta-mini, albert-mini,
    /// electra-small, gpt2-tiny, gpt2-mini, t5-tiny, t5-mini (overrides the recipe's `model`).
    #[arg(long)]
    model: Option<String>,
    /// What to learn (default: the family's own).
    #[arg(long, value_enum)]
    objective: Option<ObjectiveArg>,
    /// Mask whole words (all pieces of a word together).
    #[arg(long)]
    whole_word_mask: bool,
    /// One mask per example for the whole run, instead of new masks every epoch.
    #[arg(long)]
    static_masking: bool,
    /// Training text: files, plain or .gz.
    #[arg(long, num_args = 1.., required = true)]
    corpus: Vec<PathBuf>,
    /// Validation text; without it, --valid-fraction of the training documents is held out.
    #[arg(long, num_args = 1..)]
    valid: Vec<PathBuf>,
    #[arg(long)]
    valid_fraction: Option<f64>,
    /// How documents are separated.
    #[arg(long, value_enum)]
    documents: Option<DocumentsArg>,
    /// A tokenizer.json or a folder holding one; without it one is trained on the corpus.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Vocabulary of the tokenizer trained on the corpus.
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Tokens per example.
    #[arg(long)]
    max_length: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Recipe JSON (see configs/pretrain-*.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where tokenised corpora are cached (default: ~/.cache/lingo/tokens).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

impl Pretrain {
    pub fn run(self) -> anyhow::Result<()> {
        let mut recipe = match &self.config {
            Some(path) => PretrainRecipe::load(path)?,
            None => PretrainRecipe::default(),
        };
        if let Some(m) = &self.model {
            recipe.model = m.clone();
        }
        if let Some(o) = self.objective {
            recipe.objective = Some(match o {
                ObjectiveArg::Mlm => Objective::Mlm,
                ObjectiveArg::MlmNsp => Objective::MlmNsp,
                ObjectiveArg::MlmSop => Objective::MlmSop,
                ObjectiveArg::Clm => Objective::Clm,
                ObjectiveArg::SpanCorruption => Objective::SpanCorruption,
                ObjectiveArg::ReplacedToken => Objective::ReplacedToken,
            });
        }
        recipe.masking.whole_word |= self.whole_word_mask;
        recipe.dynamic_masking &= !self.static_masking;
        if let Some(d) = self.documents {
            recipe.documents = match d {
                DocumentsArg::BlankLine => DocumentBreak::BlankLine,
                DocumentsArg::Line => DocumentBreak::Line,
            };
        }
        if let Some(f) = self.valid_fraction {
            recipe.valid_fraction = f;
        }
        if let Some(v) = self.vocab_size {
            recipe.vocab_size = v;
        }
        if let Some(n) = self.max_length {
            recipe.max_length = n;
        }
        if let Some(b) = self.batch_size {
            recipe.train.batch_size = b;
        }
        if let Some(lr) = self.lr {
            match &mut recipe.train.optimizer {
                lingo_train::OptimizerConfig::AdamW(c) => c.lr = lr,
                _ => anyhow::bail!("--lr sets AdamW's rate; set other optimizers' in the recipe"),
            }
        }
        self.run.apply(&mut recipe.train);
        let cache_root = match &self.cache_dir {
            Some(d) => d.clone(),
            None => default_cache_root(),
        };
        let files = CorpusFiles {
            train: self.corpus.clone(),
            valid: self.valid.clone(),
            cache_root,
        };
        let say = |m: &str| super::note!("{m}");
        let mut task = PretrainTask::new(
            recipe,
            &files,
            self.tokenizer.as_deref(),
            &self.run.out,
            &say,
        )?;
        let (train, valid) = task.sizes();
        super::note!(
            "{} ({:?}): {:.2}M parameters, vocab {}; {train} training and {valid} validation examples of ≤{} tokens; {} steps × {}",
            task.recipe.model,
            task.objective,
            lingo_train::TrainTask::params(&task).num_params() as f64 / 1e6,
            task.tokenizer.vocab_size(),
            task.recipe.max_length,
            task.recipe.train.steps,
            task.recipe.train.batch_size * task.recipe.train.grad_accum,
        );
        let Some(report) = self.run.train(task.recipe.train.clone(), &mut task)? else {
            return Ok(());
        };
        println!(
            "{} after {} steps: train loss {}, val loss {}, {:.0}s, {:.0} tokens/s",
            if report.interrupted {
                "stopped"
            } else {
                "done"
            },
            report.steps,
            report.train_loss.map_or("-".into(), |v| format!("{v:.4}")),
            report.val_loss.map_or("-".into(), |v| format!("{v:.4}")),
            report.elapsed_secs,
            report.tokens_per_sec
        );
        let out = self.run.out.display();
        let next = match task.objective {
            Objective::Clm => format!("lingo generate --model {out} --prompt \"…\""),
            Objective::SpanCorruption => {
                format!("lingo finetune seq2seq --model {out} --train … --out …")
            }
            _ => {
                let mask = task.tokenizer.mask_token().map_or("[MASK]", |(m, _)| m);
                format!("lingo fill-mask --model {out} \"… {mask} …\"; lingo finetune classify --model {out} …")
            }
        };
        println!("model folder: {out}  (try: {next})");
        Ok(())
    }
}

/// `$XDG_CACHE_HOME/lingo/tokens`, else `~/.cache/lingo/tokens`.
fn default_cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("lingo").join("tokens")
}
