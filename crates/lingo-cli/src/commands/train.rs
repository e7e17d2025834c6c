use anyhow::Context;
use clap::{Args, Subcommand};
use lingo_data::{read_pairs, read_text, Tokenizer};
use lingo_tasks::translation::Arch;
use lingo_tasks::{LmRecipe, LmTask, Seq2SeqRecipe, Seq2SeqTask, Translator};
use lingo_train::Trainer;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Train {
    /// Train a GPT-style language model on a text file.
    Lm(TrainLm),
    /// Train a sequence-to-sequence (translation) model on sentence pairs.
    Seq2seq(TrainSeq2Seq),
    /// Train a recurrent sentence classifier (many-to-one: (bi)LSTM/GRU/RNN with pooling) from
    /// scratch on labelled texts.
    Classify(TrainClassify),
    /// Train a recurrent tagger (synchronous many-to-many: BiLSTM with character features,
    /// optionally with a CRF) from scratch on tagged sentences.
    Tag(TrainTag),
    /// Train a recurrent word-level language model (LSTM/GRU/RNN, truncated BPTT over running
    /// text, Zaremba et al.) — or, from labelled texts, one that generates a sentence from a label.
    RnnLm(TrainRnnLm),
}

impl Train {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Train::Lm(t) => t.run(),
            Train::Seq2seq(t) => t.run(),
            Train::Classify(t) => t.run(),
            Train::Tag(t) => t.run(),
            Train::RnnLm(t) => t.run(),
        }
    }
}

#[derive(Args)]
pub struct TrainSeq2Seq {
    /// Training sources, one sentence per line (with --target), or a .tsv / .jsonl file of pairs; .gz allowed.
    #[arg(long)]
    source: PathBuf,
    /// Training targets, line-aligned with --source.
    #[arg(long)]
    target: Option<PathBuf>,
    /// Validation sources (same formats); without them the last --validation-fraction of the pairs is held out.
    #[arg(long)]
    valid_source: Option<PathBuf>,
    #[arg(long)]
    valid_target: Option<PathBuf>,
    #[arg(long, default_value_t = 0.05)]
    validation_fraction: f64,
    /// Recipe JSON: `model`, `source_tokenizer`, `target_tokenizer`, `train`, `teacher_forcing`, `beam`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Architecture: `rnn` (recurrent encoder–decoder with attention) or `transformer`; overrides the
    /// recipe's `arch`.
    #[arg(long)]
    arch: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

/// What every training command takes besides its data and recipe.
#[derive(Args)]
pub struct RunArgs {
    /// Output folder: model, tokenizer(s), checkpoint, metrics.jsonl, loss.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Override the recipe's number of optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the recipe's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bar (evaluation lines are still printed).
    #[arg(long)]
    pub quiet: bool,
    /// Recompute each layer in the backward pass instead of keeping its activations (less
    /// memory, more time; BERT-family and GPT models).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Arithmetic of the matrix products: f32, or bf16 mixed precision (bf16 products with f32
    /// accumulation, f32 weights and optimizer; AVX-512 BF16 CPUs, f32 elsewhere).
    #[arg(long)]
    pub precision: Option<lingo_train::Precision>,
    /// Cut each micro-batch into N shards computed at the same time, one thread each (small
    /// models: faster than splitting every small matrix product across the cores).
    #[arg(long, value_name = "N")]
    pub data_parallel: Option<usize>,
    /// Under `mpirun -np N`: cut the model into N pipeline stages, one per rank (GPipe), instead
    /// of giving each rank a share of the data. The recipe's `grad_accum` micro-batches fill the
    /// pipeline. GPT language models (`train lm`, `pretrain` with clm) and BERT-family masked LM
    /// pre-training (not ALBERT).
    #[arg(long, value_name = "N")]
    pub pipeline_stages: Option<usize>,
    /// Under mpirun: sum the gradients over the ranks after the backward pass instead of during
    /// it. The same sums; faster only when the ranks share one machine's cores (docs/distributed.md).
    #[arg(long)]
    pub allreduce_after_backward: bool,
}

impl RunArgs {
    /// Applies the overrides to `train`.
    pub fn apply(&self, train: &mut lingo_train::TrainConfig) {
        if let Some(steps) = self.steps {
            train.steps = steps;
        }
        if let Some(seed) = self.seed {
            train.seed = seed;
        }
        train.gradient_checkpointing |= self.gradient_checkpointing;
        if let Some(precision) = self.precision {
            train.precision = precision;
        }
        if let Some(n) = self.data_parallel {
            train.data_parallel = n;
        }
        if let Some(n) = self.pipeline_stages {
            train.pipeline_stages = n;
        }
    }

    /// A fine-tuning recipe (`--config`, else the defaults) with these overrides: `--steps`
    /// replaces the recipe's epochs.
    pub fn finetune_recipe(
        &self,
        config: Option<&std::path::Path>,
    ) -> anyhow::Result<lingo_tasks::FinetuneRecipe> {
        let mut recipe = match config {
            Some(path) => lingo_tasks::FinetuneRecipe::load(path)?,
            None => lingo_tasks::FinetuneRecipe::default(),
        };
        if self.steps.is_some() {
            recipe.epochs = None;
        }
        self.apply(&mut recipe.train);
        Ok(recipe)
    }

    /// Trains `task` with `config`, on every rank when `mpirun` started this process. The report,
    /// on rank 0; `None` on the other ranks, whose command ends there (rank 0 alone evaluates,
    /// prints and writes the output folder).
    pub fn train(
        &self,
        config: lingo_train::TrainConfig,
        task: &mut dyn lingo_train::TrainTask,
    ) -> anyhow::Result<Option<lingo_train::TrainReport>> {
        let mut trainer = Trainer::new(config, &self.out);
        trainer.progress = !self.quiet;
        trainer.interrupt = super::interrupt_flag();
        trainer.collective = super::collective()?;
        trainer.overlap_allreduce = !self.allreduce_after_backward;
        let (root, world) = (
            trainer.collective.is_root(),
            trainer.collective.world_size(),
        );
        let report = trainer.run(task, self.resume)?;
        if root && world > 1 && report.allreduce_share > 0.0 {
            eprintln!(
                "{world} ranks; all-reducing the gradients took {:.1}% of the steps' time",
                100.0 * report.allreduce_share
            );
        }
        Ok(root.then_some(report))
    }
}

impl TrainSeq2Seq {
    pub fn run(self) -> anyhow::Result<()> {
        let mut recipe = match &self.config {
            Some(path) => Seq2SeqRecipe::load(path)?,
            None => Seq2SeqRecipe::default(),
        };
        if let Some(arch) = &self.arch {
            recipe.arch = match arch.as_str() {
                "rnn" => Arch::Rnn,
                "transformer" => Arch::Transformer,
                other => anyhow::bail!("--arch {other}: expected rnn or transformer"),
            };
        }
        self.run.apply(&mut recipe.train);
        let mut train = read_pairs(&self.source, self.target.as_deref())?;
        let validation = match &self.valid_source {
            Some(vs) => read_pairs(vs, self.valid_target.as_deref())?,
            None => {
                if !(0.0..1.0).contains(&self.validation_fraction) {
                    anyhow::bail!("--validation-fraction must be in [0, 1)");
                }
                let n = ((train.len() as f64 * self.validation_fraction).ceil() as usize).max(1);
                if n >= train.len() {
                    anyhow::bail!(
                        "{} pairs are too few to hold out {n} for validation",
                        train.len()
                    );
                }
                train.split_off(train.len() - n)
            }
        };
        let tokenizers = if self.run.resume {
            let load = |name: &str| {
                Tokenizer::load(&self.run.out.join(name))
                    .context("resuming needs the run's tokenizers")
            };
            Some((
                load("source_tokenizer.json")?,
                load("target_tokenizer.json")?,
            ))
        } else {
            None
        };
        let mut task = Seq2SeqTask::new(recipe, &train, &validation, tokenizers)?;
        let r = &task.recipe;
        let network = match r.arch {
            Arch::Rnn => format!(
                "{:?} {}×{} with {:?} attention",
                r.model.cell, r.model.encoder_layers, r.model.hidden_size, r.model.attention
            ),
            Arch::Transformer => {
                let t = &r.transformer;
                format!(
                    "Transformer {}+{} layers, d_model {}, {} heads, d_ff {}",
                    t.encoder_layers, t.decoder_layers, t.d_model, t.n_heads, t.d_ff
                )
            }
        };
        super::note!(
            "{} training and {} validation pairs; vocab {} → {}; {network}, {:.2}M parameters; {} steps × {}",
            task.train.len(),
            task.validation.len(),
            r.model.src_vocab_size,
            r.model.tgt_vocab_size,
            lingo_train::TrainTask::params(&task).num_params() as f64 / 1e6,
            r.train.steps,
            r.train.batch_size * r.train.grad_accum,
        );
        let Some(report) = self.run.train(task.recipe.train.clone(), &mut task)? else {
            return Ok(());
        };
        println!("{}", summary(&report, "target tokens/s"));
        if !report.interrupted {
            let translator = Translator::load(&self.run.out)?;
            let sources: Vec<String> = validation.iter().map(|p| p.0.clone()).collect();
            let refs: Vec<String> = validation.iter().map(|p| p.1.clone()).collect();
            let out = translator.translate(&sources, &translator.beam, 64)?;
            let hyps: Vec<&str> = out.iter().map(|t| t.text.as_str()).collect();
            let bleu = lingo_eval::corpus_bleu(&hyps, &[refs]).map_err(anyhow::Error::msg)?;
            println!("validation {bleu}");
        }
        println!(
            "model folder: {}  (try: lingo translate --model {} \"...\")",
            self.run.out.display(),
            self.run.out.display()
        );
        Ok(())
    }
}

/// Pretrained word vectors for the recurrent models' embeddings.
#[derive(Args)]
pub struct EmbeddingArgs {
    /// Pretrained word vectors (GloVe, word2vec or fastText text; `.gz` allowed) to start the word
    /// embeddings from; their width must be the recipe's `embed_dim`.
    #[arg(long)]
    embeddings: Option<PathBuf>,
    /// Keep the pretrained embeddings fixed.
    #[arg(long, requires = "embeddings")]
    freeze_embeddings: bool,
}

impl EmbeddingArgs {
    fn spec(&self) -> Option<lingo_tasks::recurrent::PretrainedEmbeddings> {
        self.embeddings
            .as_ref()
            .map(|path| lingo_tasks::recurrent::PretrainedEmbeddings {
                path: path.clone(),
                freeze: self.freeze_embeddings,
            })
    }

    /// Says how many vocabulary words (of `vocab_size`, `<pad>` and `<unk>` aside) got a vector.
    fn report(found: Option<usize>, vocab_size: usize) {
        if let Some(found) = found {
            eprintln!("pretrained vectors for {found} of {} words", vocab_size - 2);
        }
    }
}

#[derive(Args)]
pub struct TrainClassify {
    /// Labelled texts: `.tsv`/`.csv` with a header (`sentence`/`text` and `label` columns) or
    /// `.jsonl`; `.gz` allowed.
    #[arg(long)]
    train: PathBuf,
    /// Validation texts (same formats); without them 5% of --train is held out.
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Recipe JSON: `model` (cell, hidden_size, pooling, …), `vocab_size`, `max_length`,
    /// `epochs`, `train` (see configs/sst2-bilstm.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The recurrent cell: `lstm`, `gru`, `rnn` (tanh) or `rnn_relu`; overrides the recipe's.
    #[arg(long)]
    arch: Option<String>,
    /// How a sentence's states become one vector: `last`, `mean`, `max` or `attention`.
    #[arg(long)]
    pooling: Option<String>,
    #[command(flatten)]
    embeddings: EmbeddingArgs,
    #[command(flatten)]
    run: RunArgs,
}

impl TrainClassify {
    pub fn run(self) -> anyhow::Result<()> {
        use lingo_models::Pooling;
        let mut recipe = match &self.config {
            Some(path) => lingo_tasks::RnnClassifyRecipe::load(path)?,
            None => lingo_tasks::RnnClassifyRecipe::default(),
        };
        if let Some(arch) = &self.arch {
            recipe.model.cell = cell(arch)?;
        }
        if let Some(pooling) = &self.pooling {
            recipe.model.pooling = match pooling.as_str() {
                "last" => Pooling::Last,
                "mean" => Pooling::Mean,
                "max" => Pooling::Max,
                "attention" => Pooling::Attention,
                other => anyhow::bail!("--pooling {other}: expected last, mean, max or attention"),
            };
        }
        if self.run.steps.is_some() {
            recipe.epochs = None;
        }
        if let Some(spec) = self.embeddings.spec() {
            recipe.pretrained_embeddings = Some(spec);
        }
        self.run.apply(&mut recipe.train);
        let mut train = lingo_data::read_labelled(&self.train)?;
        let valid = match &self.valid {
            Some(v) => lingo_data::read_labelled(v)?,
            None => lingo_tasks::finetune::hold_out(&mut train, recipe.train.seed, &self.train)?,
        };
        let tokenizer = if self.run.resume {
            Some(
                Tokenizer::load(&self.run.out.join("tokenizer.json"))
                    .context("resuming needs the run's tokenizer.json")?,
            )
        } else {
            None
        };
        let mut task = lingo_tasks::RnnClassifyTask::new(recipe, &train, &valid, tokenizer)?;
        EmbeddingArgs::report(task.embeddings_found, task.recipe.model.vocab_size);
        let (n_train, n_valid) = task.sizes();
        let m = &task.recipe.model;
        super::note!(
            "{n_train} training and {n_valid} validation texts, labels {}; vocabulary {}; {}{:?} {}×{} with {:?} pooling, {:.2}M parameters; {} steps × {}",
            task.labels.join("/"),
            m.vocab_size,
            if m.bidirectional { "bi" } else { "" },
            m.cell,
            m.num_layers,
            m.hidden_size,
            m.pooling,
            lingo_train::TrainTask::params(&task).num_params() as f64 / 1e6,
            task.recipe.train.steps,
            task.recipe.train.batch_size * task.recipe.train.grad_accum,
        );
        let Some(report) = self.run.train(task.recipe.train.clone(), &mut task)? else {
            return Ok(());
        };
        let scores = task.scores(256)?;
        println!("{}", summary(&report, "words/s"));
        println!(
            "validation accuracy {:.2}%, macro F1 {:.2}; {:.0} sentences/s",
            100.0 * scores["accuracy"],
            100.0 * scores["macro_f1"],
            scores["sentences_per_second"]
        );
        println!(
            "model folder: {}  (try: lingo classify --model {} \"...\")",
            self.run.out.display(),
            self.run.out.display()
        );
        Ok(())
    }
}

#[derive(Args)]
pub struct TrainTag {
    /// Tagged sentences: CoNLL columns (word first, tag last; CoNLL-2003 as it is), CoNLL-U
    /// (`--column`), or `.jsonl` with `tokens` and `tags`; `.gz` allowed.
    #[arg(long)]
    train: PathBuf,
    /// Validation sentences (same formats); without them 5% of --train is held out.
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Which tag of a CoNLL-U file: `upos` or `xpos`.
    #[arg(long, default_value = "upos")]
    column: String,
    /// Recipe JSON: `model` (cell, hidden_size, crf, …), `char_features`, `min_word_count`,
    /// `word_dropout`, `epochs`, `train` (see configs/ewt-bilstm.json, configs/conll-bilstm-crf.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The recurrent cell: `lstm`, `gru`, `rnn` or `rnn_relu`; overrides the recipe's.
    #[arg(long)]
    arch: Option<String>,
    /// Score whole tag sequences with a linear-chain CRF.
    #[arg(long)]
    crf: bool,
    #[command(flatten)]
    embeddings: EmbeddingArgs,
    #[command(flatten)]
    run: RunArgs,
}

fn cell(arch: &str) -> anyhow::Result<lingo_nn::CellKind> {
    use lingo_nn::CellKind;
    Ok(match arch {
        "lstm" => CellKind::Lstm,
        "gru" => CellKind::Gru,
        "rnn" => CellKind::Rnn,
        "rnn_relu" => CellKind::RnnRelu,
        other => anyhow::bail!("--arch {other}: expected lstm, gru, rnn or rnn_relu"),
    })
}

impl TrainTag {
    pub fn run(self) -> anyhow::Result<()> {
        let mut recipe = match &self.config {
            Some(path) => lingo_tasks::RnnTagRecipe::load(path)?,
            None => lingo_tasks::RnnTagRecipe::default(),
        };
        if let Some(arch) = &self.arch {
            recipe.model.cell = cell(arch)?;
        }
        recipe.model.crf |= self.crf;
        if let Some(spec) = self.embeddings.spec() {
            recipe.pretrained_embeddings = Some(spec);
        }
        if self.run.steps.is_some() {
            recipe.epochs = None;
        }
        self.run.apply(&mut recipe.train);
        let column = match self.column.as_str() {
            "upos" => lingo_data::UdColumn::Upos,
            "xpos" => lingo_data::UdColumn::Xpos,
            other => anyhow::bail!("--column {other}: expected upos or xpos"),
        };
        let read = |path: &std::path::Path| lingo_data::read_tagged_column(path, column);
        let mut train = read(&self.train)?;
        let valid = match &self.valid {
            Some(v) => read(v)?,
            None => lingo_tasks::finetune::hold_out(&mut train, recipe.train.seed, &self.train)?,
        };
        let vocab = if self.run.resume {
            let path = self.run.out.join("vocab.json");
            Some(
                lingo_models::config::read_json(&path)
                    .context("resuming needs the run's vocab.json")?,
            )
        } else {
            None
        };
        let mut task = lingo_tasks::RnnTagTask::new(recipe, &train, &valid, vocab)?;
        EmbeddingArgs::report(task.embeddings_found, task.recipe.model.vocab_size);
        let (n_train, n_valid) = task.sizes();
        let m = &task.recipe.model;
        super::note!(
            "{n_train} training and {n_valid} validation sentences, {} tags; {} words, {} characters; {}{:?} {}×{}{}{}, {:.2}M parameters; {} steps × {}",
            task.tags.len(),
            m.vocab_size,
            m.char_vocab_size,
            if m.bidirectional { "bi" } else { "" },
            m.cell,
            m.num_layers,
            m.hidden_size,
            if m.char_vocab_size > 0 { " with character BiLSTM" } else { "" },
            if m.crf { " and CRF" } else { "" },
            lingo_train::TrainTask::params(&task).num_params() as f64 / 1e6,
            task.recipe.train.steps,
            task.recipe.train.batch_size * task.recipe.train.grad_accum,
        );
        let Some(report) = self.run.train(task.recipe.train.clone(), &mut task)? else {
            return Ok(());
        };
        let scores = task.scores(64)?;
        println!("{}", summary(&report, "words/s"));
        let f1 = scores
            .get("f1")
            .map_or(String::new(), |f| format!(", entity F1 {:.2}", 100.0 * f));
        println!(
            "validation accuracy {:.2}% (known words {:.2}%, unknown {:.2}%){f1}; {:.0} words/s",
            100.0 * scores["accuracy"],
            100.0 * scores["known_accuracy"],
            100.0 * scores["unknown_accuracy"],
            scores["words_per_second"]
        );
        println!("model folder: {}", self.run.out.display());
        Ok(())
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
    #[command(flatten)]
    run: RunArgs,
}

impl TrainLm {
    pub fn run(self) -> anyhow::Result<()> {
        let mut recipe = match &self.config {
            Some(path) => LmRecipe::load(path)?,
            None => LmRecipe::default(),
        };
        self.run.apply(&mut recipe.train);
        let text = read_text(&self.data)?;
        // On resume, keep the tokenizer the run started with.
        let tokenizer = if self.run.resume {
            Some(
                Tokenizer::load(&self.run.out.join("tokenizer.json"))
                    .context("resuming needs the run's tokenizer.json")?,
            )
        } else {
            None
        };
        let mut task = LmTask::new(recipe, &text, tokenizer)?;
        let r = &task.recipe;
        super::note!(
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
        let Some(report) = self.run.train(task.recipe.train.clone(), &mut task)? else {
            return Ok(());
        };
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
            self.run.out.display(),
            self.run.out.display()
        );
        Ok(())
    }
}

/// The run's closing line: how it ended, its losses, time and rate (`unit`: what the rate counts).
fn summary(report: &lingo_train::TrainReport, unit: &str) -> String {
    format!(
        "{} after {} steps: val loss {} (best {}), {:.1}s, {:.0} {unit}",
        if report.interrupted {
            "stopped"
        } else {
            "done"
        },
        report.steps,
        fmt(report.val_loss),
        fmt(report.best_val_loss),
        report.elapsed_secs,
        report.tokens_per_sec
    )
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.4}"))
}

#[derive(Args)]
pub struct TrainRnnLm {
    /// Training text, one sentence a line, words separated by spaces (PTB, WikiText); or labelled
    /// texts (`.tsv`/`.csv` with a header, `.jsonl`) for a model that generates from a label;
    /// `.gz` allowed.
    #[arg(long)]
    train: PathBuf,
    /// Validation text in the same format.
    #[arg(long)]
    valid: PathBuf,
    /// Recipe JSON: `model` (cell, hidden_size, num_layers, dropout, …), `vocab_size`, `bptt`,
    /// `epochs`, `lr_decay`, `train` (see configs/ptb-lstm-small.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The recurrent cell: `lstm`, `gru`, `rnn` (tanh) or `rnn_relu`; overrides the recipe's.
    #[arg(long)]
    arch: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

/// Whether a data file holds labelled texts rather than running text.
fn is_labelled(path: &std::path::Path) -> bool {
    let name = path.to_string_lossy().to_lowercase();
    let name = name.trim_end_matches(".gz");
    [".tsv", ".csv", ".jsonl", ".json"]
        .iter()
        .any(|e| name.ends_with(e))
}

impl TrainRnnLm {
    pub fn run(self) -> anyhow::Result<()> {
        use lingo_tasks::rnn_lm::{sentences_of, WordVocab};
        let mut recipe = match &self.config {
            Some(path) => lingo_tasks::RnnLmRecipe::load(path)?,
            None => lingo_tasks::RnnLmRecipe::default(),
        };
        if let Some(arch) = &self.arch {
            recipe.model.cell = cell(arch)?;
        }
        if self.run.steps.is_some() {
            recipe.epochs = None;
            recipe.lr_decay = None;
        }
        self.run.apply(&mut recipe.train);
        let vocab = if self.run.resume {
            let path = self.run.out.join("vocab.json");
            Some(WordVocab::load(&path).context("resuming needs the run's vocab.json")?)
        } else {
            None
        };
        let labelled = is_labelled(&self.train);
        let mut task = if labelled {
            let train = lingo_data::read_labelled(&self.train)?;
            let valid = lingo_data::read_labelled(&self.valid)?;
            lingo_tasks::RnnLmTask::from_labelled(recipe, &train, &valid, vocab)?
        } else {
            let train = sentences_of(&lingo_data::read_file(&self.train)?);
            let valid = sentences_of(&lingo_data::read_file(&self.valid)?);
            lingo_tasks::RnnLmTask::from_text(recipe, &train, &valid, vocab)?
        };
        let (n_train, n_valid) = task.sizes();
        let m = &task.recipe.model;
        let network = match &task.recipe.transformer {
            Some(t) => format!(
                "Transformer {}×{} ({} heads, context {})",
                t.n_layers, t.d_model, t.n_heads, t.context_length
            ),
            None => format!("{:?} {}×{}", m.cell, m.num_layers, m.hidden_size),
        };
        super::note!(
            "{}; vocabulary {}; {network}, {:.2}M parameters; {} steps × {}",
            if labelled {
                format!(
                    "{n_train} training and {n_valid} validation sentences, generated from labels {}",
                    task.labels.join("/")
                )
            } else {
                format!(
                    "{n_train} training and {n_valid} validation tokens, windows of {}",
                    task.recipe.bptt
                )
            },
            m.vocab_size,
            lingo_train::TrainTask::params(&task).num_params() as f64 / 1e6,
            task.recipe.train.steps,
            task.recipe.train.batch_size * task.recipe.train.grad_accum,
        );
        let Some(report) = self.run.train(task.recipe.train.clone(), &mut task)? else {
            return Ok(());
        };
        println!("{}", summary(&report, "words/s"));
        if let Some(loss) = report.val_loss {
            println!("validation perplexity {:.2}", loss.exp());
        }
        println!(
            "model folder: {}  (try: lingo rnn-lm eval --model {} --corpus FILE)",
            self.run.out.display(),
            self.run.out.display()
        );
        Ok(())
    }
}
