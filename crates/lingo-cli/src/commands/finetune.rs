use super::train::RunArgs;
use clap::{Args, Subcommand};
use lingo_tasks::classification::evaluate_classifier;
use lingo_tasks::finetune::{self, Objective};
use lingo_tasks::question_answering::evaluate_qa;
use lingo_tasks::seq2seq::{evaluate_seq2seq, PairFile};
use lingo_tasks::token_classification::evaluate_tagger;
use lingo_tasks::{
    ClassifyTask, FinetuneRecipe, LanguageModel, LmTask, Pretrained, QaTask, Seq2SeqFinetune,
    TokenClassifyTask,
};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum Finetune {
    /// Sequence classification (single texts or pairs; a float label column means regression)
    /// from TSV/CSV with a header or JSONL (`text`, optional `text_pair`, `label`).
    Classify(FinetuneArgs),
    /// Token classification (named entities) from CoNLL column files (word first, tag last;
    /// -DOCSTART- and blank lines handled) or JSONL (`tokens`, `tags`); IOB1, IOB2 or BIOES tags.
    Ner(FinetuneArgs),
    /// Extractive question answering from SQuAD v1.1 JSON; long contexts are cut into windows
    /// of `max_length` tokens overlapping by `doc_stride` (recipe fields).
    Qa(FinetuneArgs),
    /// Summarisation or translation with an encoder–decoder (T5, BART, Marian, or a Lingo
    /// Transformer or recurrent model) from JSON lines or a JSON array (fields `source`/`target`
    /// unless the recipe's `source_field`/`target_field` say otherwise), a .tsv file, or aligned
    /// files (`--train-target`); T5 task prefixes from the recipe's `source_prefix`.
    Seq2seq(Seq2SeqArgs),
    /// Causal language modelling: continue training a GPT-2 (or Lingo GPT) folder on a text file,
    /// in windows of `max_length` tokens; the output folder keeps the input's layout.
    Lm(FinetuneArgs),
}

impl Finetune {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Finetune::Classify(a) => a.run(ClassifyTask::new),
            Finetune::Ner(a) => a.run(TokenClassifyTask::new),
            Finetune::Qa(a) => a.run(QaTask::new),
            Finetune::Seq2seq(a) => a.run(),
            Finetune::Lm(a) => a.run_lm(),
        }
    }
}

#[derive(Args)]
pub struct FinetuneArgs {
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
    /// Ignore --model's weights: its architecture and tokenizer, newly initialised from the seed
    /// (the from-scratch baseline of pre-training).
    #[arg(long)]
    random_init: bool,
    #[command(flatten)]
    run: RunArgs,
}

impl FinetuneArgs {
    fn recipe(&self) -> anyhow::Result<FinetuneRecipe> {
        let mut recipe = self.run.finetune_recipe(self.config.as_deref())?;
        recipe.random_init |= self.random_init;
        Ok(recipe)
    }

    fn run_lm(self) -> anyhow::Result<()> {
        let mut recipe = self.recipe()?;
        let dir = lingo_models::hub::resolve_model(&self.model, self.offline)?;
        let train = lingo_data::read_text(&self.train)?;
        let valid = self
            .valid
            .as_deref()
            .map(lingo_data::read_text)
            .transpose()?;
        let mut task = LmTask::finetune(&dir, &train, valid.as_deref(), &mut recipe)?;
        super::note!(
            "fine-tuning {} on {} training tokens over {} steps",
            dir.display(),
            task.data.train.len(),
            task.recipe.train.steps
        );
        let Some(report) = self.run.train(task.recipe.train.clone(), &mut task)? else {
            return Ok(());
        };
        eprintln!(
            "{} steps in {:.0}s; model and metrics in {}",
            report.steps,
            report.elapsed_secs,
            self.run.out.display()
        );
        Ok(())
    }

    fn run<O: Objective>(
        self,
        make: impl FnOnce(
            &Path,
            &Path,
            Option<&Path>,
            FinetuneRecipe,
        ) -> lingo_tasks::Result<finetune::Finetune<O>>,
    ) -> anyhow::Result<()> {
        let recipe = self.recipe()?;
        let dir = lingo_models::hub::resolve_model(&self.model, self.offline)?;
        let mut task = make(&dir, &self.train, self.valid.as_deref(), recipe)?;
        if let Some(w) = task.report.warning() {
            eprintln!("{w}");
        }
        let labels = match task.labels() {
            [] => String::new(),
            l => format!(" for {} labels ({})", l.len(), l.join(", ")),
        };
        super::note!(
            "fine-tuning {}{labels} over {} steps",
            dir.display(),
            task.recipe.train.steps
        );
        let Some(report) = self.run.train(task.recipe.train.clone(), &mut task)? else {
            return Ok(());
        };
        eprintln!(
            "{} steps in {:.0}s; model, tokenizer and metrics in {}",
            report.steps,
            report.elapsed_secs,
            self.run.out.display()
        );
        Ok(())
    }
}

/// `lingo finetune seq2seq`: the common arguments plus the target files of aligned data.
#[derive(Args)]
pub struct Seq2SeqArgs {
    #[command(flatten)]
    common: FinetuneArgs,
    /// The target side when --train is a plain source file (line i translates line i).
    #[arg(long)]
    train_target: Option<PathBuf>,
    /// The target side when --valid is a plain source file.
    #[arg(long)]
    valid_target: Option<PathBuf>,
}

impl Seq2SeqArgs {
    fn run(self) -> anyhow::Result<()> {
        let a = &self.common;
        let recipe = a.recipe()?;
        let dir = lingo_models::hub::resolve_model(&a.model, a.offline)?;
        let train = PairFile::new(&a.train, self.train_target.as_deref());
        let valid = (a.valid.as_deref()).map(|v| PairFile::new(v, self.valid_target.as_deref()));
        let mut task = Seq2SeqFinetune::new(&dir, &train, valid.as_ref(), recipe)?;
        if let Some(w) = task.report.warning() {
            eprintln!("{w}");
        }
        if task.skipped > 0 {
            eprintln!(
                "left out {} records with an empty source or target",
                task.skipped
            );
        }
        let (n_train, n_valid) = task.sizes();
        super::note!(
            "fine-tuning {} on {n_train} pairs ({n_valid} for validation) over {} steps",
            dir.display(),
            task.recipe.train.steps
        );
        let Some(report) = a.run.train(task.recipe.train.clone(), &mut task)? else {
            return Ok(());
        };
        eprintln!(
            "{} steps in {:.0}s; model, tokenizer and metrics in {}",
            report.steps,
            report.elapsed_secs,
            a.run.out.display()
        );
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum Evaluate {
    /// A sequence-classification folder on labelled data: the metrics of `lingo metric classification`.
    Classify(EvaluateArgs),
    /// A token-classification folder on tagged data: the metrics of `lingo metric seqeval`.
    Ner(EvaluateArgs),
    /// An extractive-QA folder on SQuAD v1.1 JSON: `exact_match` and `f1`, as the official script.
    Qa(EvaluateArgs),
    /// An encoder–decoder on pairs (as `finetune seq2seq` reads them): sources decoded by beam
    /// search, scored with ROUGE (`rouge1`…`rougeLsum`, rouge-score's) and BLEU (`bleu`,
    /// sacreBLEU's). A folder `finetune seq2seq` wrote supplies its prefix, fields and lengths.
    Seq2seq(EvaluateArgs),
    /// A causal language model on text: mean next-token loss (nats per token) and perplexity over
    /// every non-overlapping window of its context (on the last --validation-fraction of the
    /// file, the split `lingo train lm` validated on; all of it by default).
    Lm(EvaluateArgs),
}

impl Evaluate {
    pub fn run(self) -> anyhow::Result<()> {
        let (args, task) = match self {
            Evaluate::Classify(a) => (a, "classify"),
            Evaluate::Ner(a) => (a, "ner"),
            Evaluate::Qa(a) => (a, "qa"),
            Evaluate::Seq2seq(a) => (a, "seq2seq"),
            Evaluate::Lm(a) => (a, "lm"),
        };
        let dir = lingo_models::hub::resolve_model(&args.model, args.offline)?;
        let quantize = args.quantize.quantize();
        let metrics = match task {
            "lm" => {
                // The one quantization asked for above (asking again repeats its notes).
                let options = lingo_models::auto::LoadOptions {
                    quantize,
                    ..Default::default()
                };
                let lm = LanguageModel::from_pretrained(Pretrained::open(&dir, &options)?)?;
                let text = lingo_data::read_text(&args.data)?;
                serde_json::to_value(lm.evaluate(
                    &text,
                    args.validation_fraction,
                    args.batch_size,
                )?)?
            }
            "ner" => serde_json::to_value(evaluate_tagger(
                &dir,
                &args.data,
                args.max_length,
                args.batch_size,
                quantize,
            )?)?,
            "qa" => {
                let recipe = FinetuneRecipe {
                    max_length: args.max_length,
                    doc_stride: args.doc_stride,
                    max_answer_length: args.max_answer_length,
                    ..FinetuneRecipe::default()
                };
                let (scores, answers) =
                    evaluate_qa(&dir, &args.data, &recipe, args.batch_size, quantize)?;
                if let Some(path) = &args.predictions {
                    let json = serde_json::to_string_pretty(&answers)?;
                    lingo_nn::io::write_atomic(path, json.as_bytes())?;
                }
                serde_json::to_value(scores)?
            }
            "seq2seq" => {
                // The recipe the folder was fine-tuned with, where it has one.
                let saved = dir.join("finetune.json");
                let mut recipe = match saved.exists() {
                    true => FinetuneRecipe::load(&saved)?,
                    false => FinetuneRecipe::default(),
                };
                if let Some(n) = args.max_source_length {
                    recipe.max_length = n;
                }
                if let Some(n) = args.max_target_length {
                    recipe.max_target_length = n;
                }
                if let Some(prefix) = &args.source_prefix {
                    recipe.source_prefix = prefix.clone();
                }
                if let Some(beams) = args.num_beams {
                    let mut beam = recipe.beam.take().unwrap_or_default();
                    beam.beam_size = beams;
                    beam.max_length = recipe.max_target_length;
                    recipe.beam = Some(beam);
                }
                let data = PairFile::new(&args.data, args.data_target.as_deref());
                let (scores, predictions) =
                    evaluate_seq2seq(&dir, &data, &recipe, args.batch_size, quantize)?;
                if let Some(path) = &args.predictions {
                    let text = predictions.join("\n") + "\n";
                    lingo_nn::io::write_atomic(path, text.as_bytes())?;
                }
                serde_json::to_value(scores)?
            }
            _ => evaluate_classifier(&dir, &args.data, args.max_length, args.batch_size, quantize)?,
        };
        super::metric::print_metrics(&metrics, args.json)
    }
}

#[derive(Args)]
pub struct EvaluateArgs {
    #[arg(long)]
    model: String,
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    quantize: super::QuantizeArg,
    /// Labelled data (TSV/CSV with a header, or JSONL; CoNLL for ner; SQuAD JSON for qa; .gz allowed).
    #[arg(long)]
    data: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// qa: context tokens shared by consecutive windows.
    #[arg(long, default_value_t = 128)]
    doc_stride: usize,
    /// qa: the longest answer, in tokens.
    #[arg(long, default_value_t = 30)]
    max_answer_length: usize,
    /// qa: also write each question's answer as `{id: answer}` JSON (for `lingo metric squad`);
    /// seq2seq: each output, one a line.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// seq2seq: the target side when --data is a plain source file.
    #[arg(long)]
    data_target: Option<PathBuf>,
    /// lm: score the last this fraction of the file's characters (0: all of it).
    #[arg(long, default_value_t = 0.0)]
    validation_fraction: f64,
    /// seq2seq: source tokens (default: the fine-tuning recipe's `max_length`).
    #[arg(long)]
    max_source_length: Option<usize>,
    /// seq2seq: the longest output, in tokens (default: the recipe's `max_target_length`).
    #[arg(long)]
    max_target_length: Option<usize>,
    /// seq2seq: text before every source (default: the recipe's `source_prefix`).
    #[arg(long)]
    source_prefix: Option<String>,
    /// seq2seq: beam width (default: the recipe's, else the model's generation settings).
    #[arg(long)]
    num_beams: Option<usize>,
}
