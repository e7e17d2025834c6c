//! `lingo quickstart`: the first thing a new user runs. Lingo writes its own data — dates in a dozen
//! surface forms and their ISO normalisation — trains a bidirectional GRU encoder–decoder with
//! Bahdanau attention on it, reports exact-match accuracy on held-out dates, shows a few translations
//! and draws the attention map of one.

use clap::Args;
use lingo_data::DateTask;
use lingo_generate::BeamConfig;
use lingo_models::{RnnSeq2SeqConfig, Seq2SeqAttention};
use lingo_nn::CellKind;
use lingo_tasks::{exact_match, Seq2SeqRecipe, Seq2SeqTask, Translator};
use lingo_train::{AdamWConfig, OptimizerConfig, Schedule, ScheduleKind, TrainConfig, Trainer};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct Quickstart {
    /// Where to write the data, the model and the attention map.
    #[arg(long, default_value = "runs/quickstart")]
    out: PathBuf,
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Held-out dates to evaluate on.
    #[arg(long, default_value_t = 1000)]
    test_size: usize,
    #[arg(long)]
    quiet: bool,
}

impl Quickstart {
    pub fn run(self) -> anyhow::Result<()> {
        let start = Instant::now();
        std::fs::create_dir_all(&self.out)?;
        let (train, held_out) = DateTask::split(50_000, self.test_size + 500, 1);
        let (validation, test) = held_out.split_at(500);
        let tsv: String = train.iter().map(|(s, t)| format!("{s}\t{t}\n")).collect();
        lingo_nn::io::write_atomic(&self.out.join("train.tsv"), tsv.as_bytes())?;
        println!(
            "data: {} training pairs in {} formats, {} validation and {} test pairs on held-out dates → {}",
            train.len(),
            DateTask::FORMATS,
            validation.len(),
            test.len(),
            self.out.join("train.tsv").display()
        );
        for (s, t) in train.iter().take(3) {
            println!("  {s:<32} → {t}");
        }
        let recipe = Seq2SeqRecipe {
            model: RnnSeq2SeqConfig {
                embed_dim: 64,
                hidden_size: 128,
                cell: CellKind::Gru,
                bidirectional_encoder: true,
                attention: Seq2SeqAttention::Bahdanau,
                ..Default::default()
            },
            train: TrainConfig {
                steps: self.steps,
                batch_size: 64,
                optimizer: OptimizerConfig::AdamW(AdamWConfig {
                    lr: 3e-3,
                    weight_decay: 0.0,
                    ..Default::default()
                }),
                schedule: Schedule {
                    kind: ScheduleKind::Cosine,
                    warmup_steps: 50,
                    min_lr: 1e-4,
                    ..Default::default()
                },
                clip_norm: Some(1.0),
                eval_every: 200,
                checkpoint_every: 200,
                ..Default::default()
            },
            beam: BeamConfig {
                beam_size: 4,
                max_length: 16,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut task = Seq2SeqTask::new(recipe, &train, validation, None)?;
        let mut trainer = Trainer::new(task.recipe.train.clone(), &self.out);
        trainer.progress = !self.quiet;
        trainer.interrupt = super::interrupt_flag();
        let report = trainer.run(&mut task, false)?;
        println!(
            "trained {} steps in {:.0}s ({:.0} target tokens/s), validation loss {:.4}",
            report.steps,
            report.elapsed_secs,
            report.tokens_per_sec,
            report.val_loss.unwrap_or(f64::NAN)
        );

        let translator = Translator::load(&self.out)?;
        let sources: Vec<String> = test.iter().map(|p| p.0.clone()).collect();
        let references: Vec<String> = test.iter().map(|p| p.1.clone()).collect();
        let decode_start = Instant::now();
        let out = translator.translate(&sources, &translator.beam, 64)?;
        let predictions: Vec<String> = out.iter().map(|t| t.text.clone()).collect();
        let accuracy = exact_match(&predictions, &references);
        println!(
            "held-out exact match (beam {}): {:.1}% of {} ({:.1}s to decode)",
            translator.beam.beam_size,
            100.0 * accuracy,
            test.len(),
            decode_start.elapsed().as_secs_f64()
        );
        for (i, t) in out.iter().enumerate().take(6) {
            let mark = if predictions[i] == references[i] {
                "✓"
            } else {
                "✗"
            };
            println!("  {mark} {:<32} → {}", sources[i], t.text);
        }
        if let Some(i) = out.iter().position(|t| t.source_tokens.len() > 12) {
            let (example, base) = (&out[i], self.out.join("attention"));
            let title = format!("Bahdanau attention: {} → {}", sources[i], example.text);
            lingo_viz::attention_map(
                &example.source_tokens,
                &example.target_tokens,
                &example.attention,
                &base,
                &title,
            )?;
            println!(
                "attention map: {}.png and {}.html",
                base.display(),
                base.display()
            );
        }
        println!(
            "total {:.0}s; model folder {}",
            start.elapsed().as_secs_f64(),
            self.out.display()
        );
        Ok(())
    }
}
