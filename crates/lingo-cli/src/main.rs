//! `lingo`: the command-line face of the Lingo libraries. Each subcommand parses its arguments and
//! calls the library; no logic lives here that a library user would need too.

mod commands;

use clap::{Parser, Subcommand};

// Training allocates and frees many large buffers per step; mimalloc reuses them instead of
// returning pages to the kernel and faulting in fresh zeroed ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's run-time option setter (linked in with the allocator).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e`.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Keep freed memory mapped: a training step frees and reallocates the same large buffers (logits,
/// their gradient: tens of MB), and memory handed back to the OS comes back as fresh pages the kernel
/// must zero (measured: ~10% of a seq2seq step in `clear_page`).
fn keep_freed_memory() {
    // SAFETY: setting an integer option is thread-safe in mimalloc and has no other precondition.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[derive(Parser)]
#[command(
    name = "lingo",
    version,
    about = "Build, train, evaluate and run NLP sequence models in pure Rust"
)]
struct Cli {
    /// Worker threads for the numeric kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start here: Lingo writes a date-normalisation dataset, trains an attention GRU on it, reports
    /// held-out accuracy and draws an attention map.
    Quickstart(commands::quickstart::Quickstart),
    /// Train a model.
    #[command(subcommand)]
    Train(commands::train::Train),
    /// Continue a prompt with a trained language model.
    Generate(commands::generate::Generate),
    /// Translate (or summarize: same command) with a seq2seq model: Lingo-trained, T5, BART or
    /// Marian; beam search; BLEU with --reference.
    #[command(alias = "summarize")]
    Translate(commands::translate::Translate),
    /// Draw the attention of a sequence-to-sequence model over one sentence (PNG and HTML).
    Attention(commands::translate::Attention),
    /// Self-contained demonstrations on data Lingo generates itself.
    #[command(subcommand)]
    Demo(commands::demo::Demo),
    /// Measure training and inference speed against PyTorch on this machine.
    Bench(commands::bench::Bench),
    /// Run a Hugging Face model folder on token ids from JSON; write its output as .npy.
    Forward(commands::forward::Forward),
    /// Fill in a [MASK] token with a masked-language model.
    FillMask(commands::encoder::FillMask),
    /// Classify texts with a sequence-classification model.
    Classify(commands::encoder::Classify),
    /// Tag named entities with a token-classification model.
    Ner(commands::encoder::Ner),
    /// Answer a question from a context with an extractive QA model.
    Qa(commands::encoder::Qa),
    /// Sentence embeddings from an encoder (mean, CLS or max pooling).
    Embed(commands::encoder::Embed),
    /// Pre-train a model from scratch on raw text (masked LM, NSP/SOP, causal LM, span
    /// corruption); writes a Hugging Face folder.
    Pretrain(commands::pretrain::Pretrain),
    /// Fine-tune a pretrained checkpoint on labelled data; writes a Hugging Face folder.
    #[command(subcommand)]
    Finetune(commands::finetune::Finetune),
    /// Score a fine-tuned model on labelled data.
    #[command(subcommand)]
    Evaluate(commands::finetune::Evaluate),
    /// Score predictions against references: classification, seqeval, squad, rouge, bleu.
    Metric(commands::metric::Metric),
    /// Train a tokenizer on a corpus (WordPiece, byte-level BPE, Unigram).
    #[command(subcommand)]
    Tokenizer(commands::tokenizer::TokenizerCommand),
    /// Print the ids and tokens a tokenizer gives some texts.
    Tokenize(commands::tokenizer::Tokenize),
    /// n-gram language models: train (six smoothings, ARPA out), eval (perplexity), generate.
    #[command(subcommand)]
    Ngram(commands::ngram::NgramCommand),
    /// Recurrent language models (`lingo train rnn-lm` trains them): eval (perplexity, as `ngram
    /// eval`), generate.
    #[command(subcommand)]
    RnnLm(commands::rnn_lm::RnnLmCommand),
    /// HMM part-of-speech taggers: train (TnT or first-order) on CoNLL-U, tag, eval, baum-welch.
    #[command(subcommand)]
    Hmm(commands::hmm::HmmCommand),
    /// Word vectors by skip-gram with negative sampling: train (a `.vec` file), similar.
    #[command(subcommand)]
    Word2vec(commands::word2vec::Word2VecCommand),
    /// Quantize a model folder: int8 linear layers (per-channel weights, per-row activations at
    /// run time); every command loads the folder it writes.
    Quantize(commands::quantize::Quantize),
    /// Prune a model: the smallest weights (magnitude), attention heads or feed-forward neurons,
    /// at once or while fine-tuning.
    Prune(commands::prune::Prune),
    /// Distil a fine-tuned teacher into a smaller student (DistilBERT's loss: softened outputs,
    /// labels, hidden-state cosine).
    Distill(commands::distill::Distill),
    /// Serve models over HTTP: OpenAI-compatible completions, chat and embeddings, a route per
    /// task, metrics, and a playground page at /.
    Serve(commands::serve::Serve),
}

fn main() {
    // Before any thread exists, so every worker inherits it (see lingo_kernels::denormals).
    lingo_kernels::flush_denormals();
    // candle's elementwise thread pool spins for a long while after every parallel op; on a machine
    // with as many workers as cores, that spinning takes the cores from the matrix products that run
    // next (measured: ~10% of a seq2seq training step). Park it almost at once unless the user chose.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100");
    }
    keep_freed_memory();
    let cli = Cli::parse();
    commands::share_trained_tokenizers();
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = cli.threads.or_else(threads_per_rank) {
        pool = pool.num_threads(n);
    }
    if let Err(e) = pool.build_global() {
        eprintln!("error: cannot start the worker threads: {e}");
        std::process::exit(2);
    }
    // The server's async runtime must not hold a pool thread for its whole life: the models'
    // threads need every worker for their matrix products.
    if let Command::Serve(s) = cli.command {
        if let Err(e) = s.run() {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    // Run the command on a pool thread: the serial parts of a step then share the cores with the
    // other workers instead of adding a third thread that competes with the spinning ones.
    let result = rayon::scope(|_| match cli.command {
        Command::Quickstart(q) => q.run(),
        Command::Train(t) => t.run(),
        Command::Generate(g) => g.run(),
        Command::Translate(t) => t.run(),
        Command::Attention(a) => a.run(),
        Command::Demo(d) => d.run(),
        Command::Bench(b) => b.run(),
        Command::Forward(f) => f.run(),
        Command::FillMask(c) => c.run(),
        Command::Classify(c) => c.run(),
        Command::Ner(c) => c.run(),
        Command::Qa(c) => c.run(),
        Command::Embed(c) => c.run(),
        Command::Metric(m) => m.run(),
        Command::Ngram(n) => n.run(),
        Command::RnnLm(r) => r.run(),
        Command::Hmm(h) => h.run(),
        Command::Word2vec(w) => w.run(),
        Command::Pretrain(p) => p.run(),
        Command::Finetune(f) => f.run(),
        Command::Evaluate(e) => e.run(),
        Command::Tokenizer(t) => t.run(),
        Command::Tokenize(t) => t.run(),
        Command::Quantize(q) => q.run(),
        Command::Prune(p) => p.run(),
        Command::Distill(d) => d.run(),
        Command::Serve(_) => unreachable!("served above"),
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    commands::leave_world();
}

/// Ranks that `mpirun` started on one machine share its cores: each gets its share of them.
fn threads_per_rank() -> Option<usize> {
    let launch = lingo_dist::Launch::detect()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (launch.local_ranks > 1).then(|| (cores / launch.local_ranks).max(1))
}
