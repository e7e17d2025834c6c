use anyhow::Context;
use clap::{Args, Subcommand};
use lingo_data::{read_text, Tokenizer};
use lingo_tasks::{LmRecipe, LmTask};
use lingo_train::Trainer;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Train {
    /// Train a GPT-style language model on a text file.
    Lm(TrainLm),
}

impl Train {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Train::Lm(t) => t.run(),
        }
    }
}

#[derive(Args)]
pub struct TrainLm {
    /// UTF-8 text to learn from; the last part (`validation_fraction`, 10% by default) is held out.
    #[arg(long)]
    data: PathBuf,
    /// Recipe JSON: `model`, `tokenizer`, `train`, `validation_fraction` (see configs/).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder: model, tokenizer, checkpoint, metrics.jsonl, loss.png.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Override the recipe's number of optimizer steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Override the recipe's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// No progress bar (evaluation lines are still printed).
    #[arg(long)]
    quiet: bool,
}

impl TrainLm {
    pub fn run(self) -> anyhow::Result<()> {
        let mut recipe = match &self.config {
            Some(path) => LmRecipe::load(path)?,
            None => LmRecipe::default(),
        };
        if let Some(steps) = self.steps {
            recipe.train.steps = steps;
        }
        if let Some(seed) = self.seed {
            recipe.train.seed = seed;
        }
        let text = read_text(&self.data)?;
        // On resume, keep the tokenizer the run started with.
        let tokenizer = if self.resume {
            Some(
                Tokenizer::load(&self.out.join("tokenizer.json"))
                    .context("resuming needs the run's tokenizer.json")?,
            )
        } else {
            None
        };
        let mut task = LmTask::new(recipe, &text, tokenizer)?;
        let r = &task.recipe;
        eprintln!(
            "model: {} layers, {} heads, d_model {}, context {}, vocab {} — {:.2}M parameters; training {} steps × {} × {} tokens",
            r.model.n_layers,
            r.model.n_heads,
            r.model.d_model,
            r.model.context_length,
            r.model.vocab_size,
            lingo_train::TrainTask::params(&task).num_params() as f64 / 1e6,
            r.train.steps,
            r.train.batch_size * r.train.grad_accum,
            r.model.context_length,
        );
        let mut trainer = Trainer::new(task.recipe.train.clone(), &self.out);
        trainer.progress = !self.quiet;
        trainer.interrupt = super::interrupt_flag();
        let report = trainer.run(&mut task, self.resume)?;
        println!(
            "{} after {} steps: train loss {}, val loss {} (best {}), {:.1}s, {:.0} tokens/s",
            if report.interrupted {
                "stopped"
            } else {
                "done"
            },
            report.steps,
            fmt(report.train_loss),
            fmt(report.val_loss),
            fmt(report.best_val_loss),
            report.elapsed_secs,
            report.tokens_per_sec
        );
        println!(
            "model folder: {}  (try: lingo generate --model {} --prompt \"...\")",
            self.out.display(),
            self.out.display()
        );
        Ok(())
    }
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.4}"))
}
