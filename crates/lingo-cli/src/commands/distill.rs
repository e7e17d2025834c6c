//! `lingo distill`: a student fine-tuned on a task from a fine-tuned teacher's softened outputs
//! (see lingo_tasks::distillation).

use super::train::RunArgs;
use clap::{Args, ValueEnum};
use lingo_tasks::distillation::{
    student_from_teacher, teacher_targets, write_pairs, DistillLoss, Distillation,
};
use lingo_tasks::finetune::{Finetune, Objective};
use lingo_tasks::seq2seq::PairFile;
use lingo_tasks::{ClassifyTask, FinetuneRecipe, Seq2SeqFinetune, TokenClassifyTask};
use lingo_train::TrainTask;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, ValueEnum)]
enum Task {
    /// Sequence classification (data as `lingo finetune classify` reads it).
    Classify,
    /// Token classification (data as `lingo finetune ner` reads it).
    Ner,
    /// Sequence-level distillation of an encoder–decoder: the teacher's beam-search outputs
    /// for the training sources (OUT/teacher-targets.jsonl) are the student's targets.
    Seq2seq,
}

#[derive(Args)]
pub struct Distill {
    /// The fine-tuned teacher folder (its head and labels are the task's).
    #[arg(long)]
    teacher: PathBuf,
    /// The student: a model folder to start from, or a JSON file of config.json fields that
    /// change the teacher's (e.g. `{"num_hidden_layers": 3}`) — a student initialised from the
    /// teacher's embeddings, head and every other layer, written to OUT/initial-student.
    #[arg(long)]
    student: PathBuf,
    #[arg(long, value_enum, default_value = "classify")]
    task: Task,
    #[arg(long)]
    train: PathBuf,
    /// Validation data (5% of --train held out without it).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Seq2seq: the target side when --train is a plain source file (the teacher replaces it).
    #[arg(long)]
    train_target: Option<PathBuf>,
    /// Seq2seq: the target side when --valid is a plain source file.
    #[arg(long)]
    valid_target: Option<PathBuf>,
    /// Seq2seq: sentences the teacher decodes at once.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Fine-tuning recipe JSON (as `lingo finetune`'s --config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Softmax temperature of the teacher's and student's distributions.
    #[arg(long, default_value_t = 2.0)]
    temperature: f64,
    /// Weight of T²·KL between the softened distributions.
    #[arg(long, default_value_t = 0.5)]
    alpha_soft: f64,
    /// Weight of the task loss on the labels.
    #[arg(long, default_value_t = 0.5)]
    alpha_hard: f64,
    /// Weight of 1 − cos between the last hidden states (same width only).
    #[arg(long, default_value_t = 0.0)]
    alpha_cos: f64,
    #[command(flatten)]
    run: RunArgs,
}

impl Distill {
    pub fn run(self) -> anyhow::Result<()> {
        match self.task {
            Task::Classify => self.run_task(ClassifyTask::new),
            Task::Ner => self.run_task(TokenClassifyTask::new),
            Task::Seq2seq => self.run_seq2seq(),
        }
    }

    /// Sequence-level distillation: decode the training sources with the teacher, fine-tune
    /// the student on those outputs.
    fn run_seq2seq(self) -> anyhow::Result<()> {
        if !self.student.is_dir() {
            anyhow::bail!(
                "--student {}: sequence-level distillation trains a model folder (a smaller \
                 encoder-decoder; the recipe's \"random_init\": true starts it afresh)",
                self.student.display()
            );
        }
        let recipe = self.run.finetune_recipe(self.config.as_deref())?;
        let (pairs, _) = PairFile::new(&self.train, self.train_target.as_deref()).read(&recipe)?;
        if pairs.is_empty() {
            anyhow::bail!("{}: no training pairs", self.train.display());
        }
        std::fs::create_dir_all(&self.run.out)?;
        let targets = self.run.out.join("teacher-targets.jsonl");
        let reuse = std::fs::read_to_string(&targets)
            .map(|t| t.lines().count() == pairs.len())
            .unwrap_or(false);
        if reuse {
            eprintln!("reusing the teacher's outputs in {}", targets.display());
        } else {
            let bar = indicatif::ProgressBar::new(pairs.len() as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "teacher decoding {bar:30} {pos}/{len} sentences, {per_sec}, ETA {eta}",
                )?,
            );
            if self.run.quiet {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let taught = teacher_targets(&self.teacher, &pairs, self.batch_size, |done| {
                bar.set_position(done as u64)
            })?;
            bar.finish_and_clear();
            write_pairs(&targets, &taught, &recipe)?;
            eprintln!(
                "the teacher decoded {} training sources into {}",
                taught.len(),
                targets.display()
            );
        }
        let valid = (self.valid.as_deref()).map(|v| PairFile::new(v, self.valid_target.as_deref()));
        let mut task = Seq2SeqFinetune::new(
            &self.student,
            &PairFile::new(&targets, None),
            valid.as_ref(),
            recipe,
        )?;
        eprintln!(
            "training {} on the teacher's outputs over {} steps",
            self.student.display(),
            task.recipe.train.steps
        );
        let config = task.recipe.train.clone();
        self.train(&mut task, config)
    }

    fn run_task<O: Objective>(
        self,
        make: impl Fn(&Path, &Path, Option<&Path>, FinetuneRecipe) -> lingo_tasks::Result<Finetune<O>>,
    ) -> anyhow::Result<()> {
        let loss = DistillLoss {
            temperature: self.temperature,
            soft: self.alpha_soft,
            hard: self.alpha_hard,
            cosine: self.alpha_cos,
        };
        loss.check()?;
        let recipe = self.run.finetune_recipe(self.config.as_deref())?;
        let student_dir = if self.student.is_dir() {
            self.student.clone()
        } else {
            let text = std::fs::read_to_string(&self.student)
                .map_err(|e| anyhow::anyhow!("--student {}: {e}", self.student.display()))?;
            let overrides: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: not valid JSON ({e})", self.student.display()))?;
            let dir = self.run.out.join("initial-student");
            let taken = student_from_teacher(&self.teacher, &overrides, &dir)?;
            eprintln!(
                "student initialised from teacher layers {taken:?} in {}",
                dir.display()
            );
            dir
        };
        let student = make(&student_dir, &self.train, self.valid.as_deref(), recipe)?;
        let mut task = Distillation::new(student, &self.teacher, loss)?;
        eprintln!(
            "distilling {} into {} ({:.1}M parameters) over {} steps",
            self.teacher.display(),
            student_dir.display(),
            TrainTask::params(&task).num_params() as f64 / 1e6,
            task.student.recipe.train.steps
        );
        let config = task.student.recipe.train.clone();
        self.train(&mut task, config)
    }

    /// Trains the student and says where it is.
    fn train(
        &self,
        task: &mut dyn TrainTask,
        config: lingo_train::TrainConfig,
    ) -> anyhow::Result<()> {
        let Some(report) = self.run.train(config, task)? else {
            return Ok(());
        };
        println!(
            "{} steps in {:.0}s; student in {}",
            report.steps,
            report.elapsed_secs,
            self.run.out.display()
        );
        Ok(())
    }
}
