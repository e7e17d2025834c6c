use super::train::RunArgs;
use clap::{Args, Subcommand};
use lingo_tasks::classification::evaluate_classifier;
use lingo_tasks::{ClassifyRecipe, ClassifyTask};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Finetune {
    /// Sequence classification (single texts or pairs; a float label column means regression)
    /// from TSV/CSV with a header or JSONL (`text`, optional `text_pair`, `label`).
    Classify(FinetuneClassify),
}

impl Finetune {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Finetune::Classify(c) => c.run(),
        }
    }
}

#[derive(Args)]
pub struct FinetuneClassify {
    /// A pretrained model folder (config.json, safetensors, tokenizer.json) or a Hub id.
    #[arg(long)]
    model: String,
    /// Never download (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    #[arg(long)]
    train: PathBuf,
    /// Validation data (same format), evaluated every `eval_every` steps and at the end; without
    /// it, 5% of --train (drawn with the seed) is held out.
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Recipe JSON: `max_length`, `epochs`, `warmup_ratio`, `dropout`, `train` (optimizer, schedule, …).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

impl FinetuneClassify {
    pub fn run(self) -> anyhow::Result<()> {
        let mut recipe = match &self.config {
            Some(path) => ClassifyRecipe::load(path)?,
            None => ClassifyRecipe::default(),
        };
        if self.run.steps.is_some() {
            recipe.epochs = None;
        }
        self.run.apply(&mut recipe.train);
        let dir = lingo_models::hub::resolve_model(&self.model, self.offline)?;
        let mut task = ClassifyTask::new(&dir, &self.train, self.valid.as_deref(), recipe)?;
        if let Some(w) = task.report.warning() {
            eprintln!("{w}");
        }
        eprintln!(
            "fine-tuning {} for {} labels ({}) over {} steps",
            dir.display(),
            task.labels().len(),
            task.labels().join(", "),
            task.recipe.train.steps
        );
        let trainer = self.run.trainer(task.recipe.train.clone());
        let report = trainer.run(&mut task, self.run.resume)?;
        eprintln!(
            "{} steps in {:.0}s; model, tokenizer and metrics in {}",
            report.steps,
            report.elapsed_secs,
            self.run.out.display()
        );
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum Evaluate {
    /// A sequence-classification folder on labelled data: the metrics of `lingo metric classification`.
    Classify(EvaluateClassify),
}

impl Evaluate {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Evaluate::Classify(c) => c.run(),
        }
    }
}

#[derive(Args)]
pub struct EvaluateClassify {
    #[arg(long)]
    model: String,
    #[arg(long)]
    offline: bool,
    /// Labelled data (TSV/CSV with a header, or JSONL; .gz allowed).
    #[arg(long)]
    data: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

impl EvaluateClassify {
    pub fn run(self) -> anyhow::Result<()> {
        let dir = lingo_models::hub::resolve_model(&self.model, self.offline)?;
        let metrics = evaluate_classifier(&dir, &self.data, self.max_length, self.batch_size)?;
        super::metric::print_metrics(&metrics, self.json)
    }
}
