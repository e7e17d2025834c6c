//! `lingo prune`: magnitude, head or neuron pruning of a model folder, at once or while
//! fine-tuning (see lingo_tasks::pruning).

use super::quantize::{copy_other_files, same_folder, weights_size};
use super::train::RunArgs;
use clap::{Args, ValueEnum};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_tasks::finetune::{Finetune, Objective};
use lingo_tasks::pruning::{self, Cut, GradualPruning, Masks, Method, PruningSchedule, Scope};
use lingo_tasks::{ClassifyTask, FinetuneRecipe, QaTask, TokenClassifyTask};
use lingo_train::TrainTask;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, ValueEnum)]
enum Task {
    /// Sequence classification data (TSV/CSV/JSONL, as `lingo finetune classify`).
    Classify,
    /// Token classification data (CoNLL or JSONL, as `lingo finetune ner`).
    Ner,
    /// SQuAD JSON (as `lingo finetune qa`).
    Qa,
}

#[derive(Args)]
pub struct Prune {
    /// The model folder (or Hugging Face Hub id) to prune.
    model: String,
    /// `magnitude`: zero the smallest weights of every linear layer of the body (unstructured);
    /// `heads`: remove the least important attention heads; `neurons`: remove the least
    /// important feed-forward neurons (the same number from every layer).
    #[arg(long, default_value = "magnitude")]
    method: Method,
    /// Fraction of the weights (magnitude), heads or neurons to remove.
    #[arg(long)]
    sparsity: f64,
    /// Magnitude pruning: the same fraction of each matrix (`layer`) or one threshold over all
    /// (`global`).
    #[arg(long, default_value = "layer")]
    scope: Scope,
    /// Fine-tune with this recipe (as `lingo finetune`'s --config) after structured pruning, or
    /// with magnitude masks kept fixed (and `--gradual`, growing) through it. Needs --train.
    #[arg(long, value_name = "RECIPE")]
    finetune: Option<PathBuf>,
    /// Magnitude pruning while fine-tuning: raise the sparsity on a cubic schedule (Zhu & Gupta)
    /// instead of pruning at once before the first step.
    #[arg(long)]
    gradual: bool,
    /// With --gradual: the fraction of the fine-tuning steps after which the target sparsity is
    /// reached.
    #[arg(long, default_value_t = 0.7)]
    gradual_end: f64,
    /// With --gradual: raise the sparsity every this many steps.
    #[arg(long, default_value_t = 10)]
    prune_every: usize,
    /// What the data is for (the fine-tuned model's task).
    #[arg(long, value_enum, default_value = "classify")]
    task: Task,
    /// Labelled training data: scores heads and neurons (their loss gradients), and is what
    /// --finetune trains on.
    #[arg(long)]
    train: Option<PathBuf>,
    /// Validation data for --finetune (5% of --train held out without it).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Batches of --train whose gradients score heads and neurons.
    #[arg(long, default_value_t = 32)]
    importance_batches: usize,
    /// Examples per importance batch (without --finetune; else the recipe's batch size).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Tokens per example when scoring (without --finetune; else the recipe's max_length).
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    /// Never download (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    run: RunArgs,
}

impl Prune {
    pub fn run(self) -> anyhow::Result<()> {
        pruning::check_sparsity(self.sparsity)?;
        match self.task {
            Task::Classify => self.run_task(ClassifyTask::new),
            Task::Ner => self.run_task(TokenClassifyTask::new),
            Task::Qa => self.run_task(QaTask::new),
        }
    }

    fn run_task<O: Objective>(
        self,
        make: impl Fn(&Path, &Path, Option<&Path>, FinetuneRecipe) -> lingo_tasks::Result<Finetune<O>>,
    ) -> anyhow::Result<()> {
        let dir = lingo_models::hub::resolve_model(&self.model, self.offline)?;
        if same_folder(&dir, &self.run.out) {
            anyhow::bail!(
                "--out {} is the model folder itself: write the pruned model elsewhere",
                self.run.out.display()
            );
        }
        let recipe = self.recipe()?;
        let train = || {
            self.train.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--train FILE is needed: {}",
                    match self.method {
                        Method::Magnitude => "--finetune trains on it",
                        _ => "heads and neurons are scored by the loss gradients on it",
                    }
                )
            })
        };
        match (self.method, &recipe) {
            (Method::Magnitude, None) => self.magnitude_at_once(&dir),
            (Method::Magnitude, Some(recipe)) => {
                let task = make(&dir, train()?, self.valid.as_deref(), recipe.clone())?;
                let steps = task.recipe.train.steps;
                let end = if self.gradual {
                    ((self.gradual_end.clamp(0.0, 1.0) * steps as f64).round() as usize).max(1)
                } else {
                    0
                };
                let schedule = PruningSchedule {
                    sparsity: self.sparsity,
                    scope: self.scope,
                    begin: 0,
                    end,
                    every: self.prune_every.max(1),
                };
                let mut task = GradualPruning::new(task, schedule)?;
                eprintln!(
                    "fine-tuning {} over {steps} steps, pruning {:.0}% of the body's weights {}",
                    dir.display(),
                    100.0 * self.sparsity,
                    if self.gradual {
                        format!("gradually until step {end}")
                    } else {
                        "before the first".into()
                    }
                );
                let config = task.task.recipe.train.clone();
                let Some(report) = self.run.train(config, &mut task)? else {
                    return Ok(());
                };
                println!(
                    "{} steps in {:.0}s; sparsity {:.2}%; model in {}",
                    report.steps,
                    report.elapsed_secs,
                    100.0 * task.sparsity()?,
                    self.run.out.display()
                );
                Ok(())
            }
            (method, _) => {
                let importance_recipe = match &recipe {
                    Some(r) => r.clone(),
                    None => self.importance_recipe(&dir)?,
                };
                // A resumed fine-tune continues the folder its first run pruned.
                let resuming = self.run.resume
                    && self
                        .run
                        .out
                        .join(lingo_train::checkpoint::CHECKPOINT_FILE)
                        .exists();
                if !resuming {
                    let mut task = make(&dir, train()?, self.valid.as_deref(), importance_recipe)?;
                    self.structured(method, &dir, &mut task)?;
                }
                if let Some(recipe) = recipe {
                    let mut task = make(&self.run.out, train()?, self.valid.as_deref(), recipe)?;
                    eprintln!(
                        "fine-tuning the pruned model over {} steps",
                        task.recipe.train.steps
                    );
                    let config = task.recipe.train.clone();
                    let Some(report) = self.run.train(config, &mut task)? else {
                        return Ok(());
                    };
                    println!(
                        "{} steps in {:.0}s; model in {}",
                        report.steps,
                        report.elapsed_secs,
                        self.run.out.display()
                    );
                }
                Ok(())
            }
        }
    }

    /// The --finetune recipe with the run's overrides.
    fn recipe(&self) -> anyhow::Result<Option<FinetuneRecipe>> {
        let Some(path) = &self.finetune else {
            if self.gradual {
                anyhow::bail!("--gradual prunes while fine-tuning: give --finetune RECIPE");
            }
            return Ok(None);
        };
        Ok(Some(self.run.finetune_recipe(Some(path))?))
    }

    /// Without --finetune, heads and neurons are scored in batches of --batch-size examples of
    /// at most --max-length tokens (cut to the model's positions).
    fn importance_recipe(&self, dir: &Path) -> anyhow::Result<FinetuneRecipe> {
        let config = lingo_models::hf::read_config(dir)?;
        let positions = config["max_position_embeddings"]
            .as_u64()
            .map_or(usize::MAX, |p| p as usize);
        let mut recipe = FinetuneRecipe {
            max_length: self.max_length.min(positions),
            ..FinetuneRecipe::default()
        };
        recipe.train.batch_size = self.batch_size;
        if let Some(seed) = self.run.seed {
            recipe.train.seed = seed;
        }
        Ok(recipe)
    }

    /// Unstructured pruning of a folder with no data: its weights, masked, saved whole.
    fn magnitude_at_once(&self, dir: &Path) -> anyhow::Result<()> {
        let start = Instant::now();
        let loaded = AutoModel::load(dir, &LoadOptions::default())?;
        let weights = pruning::prunable_weights(&loaded.store);
        if weights.is_empty() {
            anyhow::bail!("{}: no linear weights to prune", dir.display());
        }
        let masks = Masks::magnitude(&weights, self.sparsity, self.scope)?;
        masks.apply()?;
        loaded.save(&self.run.out)?;
        copy_other_files(dir, &self.run.out)?;
        let count: usize = weights.iter().map(|(_, w)| w.elem_count()).sum();
        println!(
            "{} matrices ({:.1}M weights): {:.2}% zero ({} scope); {:.1}s",
            weights.len(),
            count as f64 / 1e6,
            100.0 * masks.sparsity()?,
            match self.scope {
                Scope::Layer => "layer",
                Scope::Global => "global",
            },
            start.elapsed().as_secs_f64()
        );
        println!("wrote {}", self.run.out.display());
        Ok(())
    }

    /// Head or neuron pruning: scores from the loss gradients on --train, the folder saved with
    /// the smaller shapes.
    fn structured<O: Objective>(
        &self,
        method: Method,
        dir: &Path,
        task: &mut Finetune<O>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let batch_size = task.recipe.train.batch_size;
        eprintln!(
            "scoring heads and neurons on {} batches of {batch_size}",
            self.importance_batches
        );
        let importance = pruning::importance(task, self.importance_batches, batch_size)?;
        let cut = match method {
            Method::Heads => Cut {
                heads: pruning::heads_to_prune(&importance.heads, self.sparsity)?,
                neurons: None,
            },
            _ => Cut {
                heads: Vec::new(),
                neurons: Some(pruning::neurons_to_keep(
                    &importance.neurons,
                    self.sparsity,
                )?),
            },
        };
        let params_before = task.params().num_params();
        let (heads_before, neurons_before) =
            pruning::shape_summary(&task.model().layer_params(), task.params());
        let (config, tensors) = pruning::cut(task.model(), task.config(), task.params(), &cut)?;
        let params_after: usize = tensors.iter().map(|(_, t)| t.elem_count()).sum();
        let out = &self.run.out;
        std::fs::create_dir_all(out)?;
        task.save_artifacts(out)?;
        lingo_models::hf::save_tensors(out, &config, tensors)?;
        copy_other_files(dir, out)?;
        let heads_after = heads_before - cut.heads.iter().map(Vec::len).sum::<usize>();
        let neurons_after =
            (cut.neurons.as_ref()).map_or(neurons_before, |kept| kept.iter().map(Vec::len).sum());
        for (l, drop) in cut.heads.iter().enumerate().filter(|(_, d)| !d.is_empty()) {
            eprintln!("layer {l}: removed heads {drop:?}");
        }
        println!(
            "heads {heads_before} → {heads_after}, feed-forward neurons {neurons_before} → {neurons_after}, \
             parameters {:.2}M → {:.2}M, weights file {:.1} MB → {:.1} MB; {:.1}s",
            params_before as f64 / 1e6,
            params_after as f64 / 1e6,
            weights_size(dir) as f64 / 1e6,
            weights_size(out) as f64 / 1e6,
            start.elapsed().as_secs_f64()
        );
        println!("wrote {}", out.display());
        Ok(())
    }
}
