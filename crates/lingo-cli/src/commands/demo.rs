use clap::{Args, Subcommand};
use lingo_data::{Grammar, TokenizerKind};
use lingo_generate::SamplingConfig;
use lingo_models::GptConfig;
use lingo_nn::LingoRng;
use lingo_tasks::{LanguageModel, LmRecipe, LmTask};
use lingo_train::{AdamWConfig, OptimizerConfig, Schedule, ScheduleKind, TrainConfig, Trainer};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Demo {
    /// Generate a corpus from a small grammar, train a character-level GPT on it, and check how many
    /// of the model's own sentences the grammar accepts.
    Lm(DemoLm),
}

impl Demo {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Demo::Lm(d) => d.run(),
        }
    }
}

#[derive(Args)]
pub struct DemoLm {
    /// Where to write the corpus and the trained model.
    #[arg(long, default_value = "runs/demo-lm")]
    out: PathBuf,
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// Sentences to sample and check.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    #[arg(long)]
    quiet: bool,
}

impl DemoLm {
    pub fn run(self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.out)?;
        let text = Grammar::corpus(20_000, 1);
        lingo_nn::io::write_atomic(&self.out.join("corpus.txt"), text.as_bytes())?;
        println!(
            "corpus: {} sentences ({} KB) from a small English-like grammar → {}",
            text.lines().count(),
            text.len() / 1024,
            self.out.join("corpus.txt").display()
        );
        let recipe = LmRecipe {
            model: GptConfig {
                context_length: 64,
                d_model: 128,
                n_heads: 4,
                n_layers: 4,
                ..Default::default()
            },
            tokenizer: TokenizerKind::Char,
            train: TrainConfig {
                steps: self.steps,
                batch_size: 16,
                optimizer: OptimizerConfig::AdamW(AdamWConfig {
                    lr: 2e-3,
                    beta2: 0.99,
                    weight_decay: 0.1,
                    ..Default::default()
                }),
                schedule: Schedule {
                    kind: ScheduleKind::Cosine,
                    warmup_steps: 100,
                    min_lr: 2e-4,
                    ..Default::default()
                },
                eval_every: 500,
                eval_batches: 50,
                checkpoint_every: 500,
                ..Default::default()
            },
            validation_fraction: 0.1,
        };
        let mut task = LmTask::new(recipe, &text, None)?;
        let mut trainer = Trainer::new(task.recipe.train.clone(), &self.out);
        trainer.progress = !self.quiet;
        trainer.interrupt = super::interrupt_flag();
        let report = trainer.run(&mut task, false)?;
        println!(
            "trained {} steps in {:.0}s ({:.0} tokens/s): validation loss {:.3} nats/char",
            report.steps,
            report.elapsed_secs,
            report.tokens_per_sec,
            report.val_loss.unwrap_or(f64::NAN)
        );

        let lm = LanguageModel::load(&self.out)?;
        let newline = lm
            .tokenizer
            .token_to_id("\n")
            .ok_or_else(|| anyhow::anyhow!("corpus has no newline token"))?;
        let cfg = SamplingConfig {
            temperature: 0.8,
            max_new_tokens: 120,
            stop_tokens: vec![newline],
            ..Default::default()
        };
        let mut rng = LingoRng::new(7);
        let mut accepted = 0;
        println!("samples (✓ = the grammar accepts the sentence):");
        for i in 0..self.samples {
            // The newline tells the model a sentence starts here: a bare "the" could also be the
            // middle of one, since training windows start anywhere.
            let sentence = format!("the{}", lm.generate("\nthe", &cfg, &mut rng, |_| {})?);
            let sentence = sentence.trim_end_matches('\n');
            let ok = Grammar::accepts(sentence);
            accepted += usize::from(ok);
            if i < 8 {
                println!("  {} {sentence}", if ok { "✓" } else { "✗" });
            }
        }
        println!(
            "{accepted}/{} sampled sentences ({:.1}%) are grammatical; model folder {}",
            self.samples,
            100.0 * accepted as f64 / self.samples.max(1) as f64,
            self.out.display()
        );
        Ok(())
    }
}
