//! `lingo bench`: a benchmark model trained and run by Lingo and by PyTorch on this machine, in the
//! same run, one after the other (never concurrently), with the same thread count. With no
//! argument every one of the following runs, and a summary table (and `--json`) gathers them:
//!
//! - `gpt`: the decoder-only Transformer of tools/bench_gpt.py;
//! - `char`: the nanoGPT character recipe's model, its step as the recipe trains it (two shards);
//! - `seq2seq`: the attention LSTM encoder–decoder of tools/bench_seq2seq.py (Multi30k sizes);
//! - `transformer`: the Multi30k Transformer's training step and beam search against
//!   `transformers`' MarianMTModel of the same shape (tools/bench_transformer.py);
//! - `bert`: BERT-base and MiniLM forward at batch 1 and 32 against `transformers` and ONNX
//!   Runtime (tools/bench_hf.py);
//! - `gpt2`: GPT-2 small generation against `transformers` (tools/bench_hf.py);
//! - `finetune`: a fine-tuning step of a MiniLM-shaped BERT classifier against `transformers`;
//! - `pretrain`: a masked-LM pre-training step of `bert-mini` against `transformers`'
//!   `BertForMaskedLM` (which scores every position; Lingo runs the vocabulary projection on the
//!   masked 15% only, as BERT's own pre-training code does).

use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use lingo_generate::{beam_search, BeamConfig, SamplingConfig};
use lingo_models::bert::{BertConfig, BertModel, Family, Head};
use lingo_models::gpt::Gpt2Config;
use lingo_models::transformer::{Transformer, TransformerConfig};
use lingo_models::{Gpt, GptConfig, RnnSeq2Seq, RnnSeq2SeqConfig, Seq2SeqAttention};
use lingo_models::{ModelInputs, Seq2SeqBatch, Seq2SeqLoss, Seq2SeqTrain};
use lingo_nn::{CellKind, Ctx, LinearPrecision, LingoRng, ParamStore};
use lingo_train::grads::{clip_scale, Gradients};
use lingo_train::{AdamWConfig, DecayPolicy, Optimizer, OptimizerConfig};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const GPT_SCRIPT: &str = include_str!("../../../../tools/bench_gpt.py");
const SEQ2SEQ_SCRIPT: &str = include_str!("../../../../tools/bench_seq2seq.py");
const HF_SCRIPT: &str = include_str!("../../../../tools/bench_hf.py");
const TRANSFORMER_SCRIPT: &str = include_str!("../../../../tools/bench_transformer.py");
const RECIPE_SCRIPT: &str = include_str!("../../../../tools/train_shakespeare_reference.py");
const CHAR_RECIPE: &str = include_str!("../../../../configs/shakespeare-char.json");

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Model {
    /// Every row below that runs beside PyTorch (gpt, char, seq2seq, transformer, bert, gpt2,
    /// finetune, pretrain), then one summary table.
    All,
    /// GPT: vocab 8192, context 128, batch 8, d_model 256, 4 heads, 4 layers, d_ff 1024.
    Gpt,
    /// The nanoGPT character recipe's model (configs/shakespeare-char.json): vocab 65, context
    /// 64, batch 12, d_model 128, 4 heads, 4 layers, tied embeddings; its training step as the
    /// recipe runs it (two shards on two threads).
    Char,
    /// The whole nanoGPT character recipe (configs/shakespeare-char.json, 2,000 steps with every
    /// evaluation) on tiny Shakespeare (`--data`), `lingo train lm` beside
    /// tools/train_shakespeare_reference.py: wall time, and the final validation loss of each.
    Recipe,
    /// Tokens/s of the benchmark GPT's training step and forward as d_model grows from 64 to 768
    /// (4 layers, heads of 64, d_ff 4·d_model, batch 8 × 128), beside PyTorch at every width;
    /// draws `--scaling-plot`.
    Scaling,
    /// Attention LSTM seq2seq: vocab 8000/8000, embed 256, hidden 256, bidirectional encoder,
    /// Bahdanau attention, dropout 0.3, batch 64 of 8–24-token sentences.
    Seq2seq,
    /// The Multi30k recipe's Transformer (3 + 3 layers of 256, 8 heads, shared vocabulary of
    /// 8,000) beside transformers' MarianMTModel of that shape: training step on 128 sentence
    /// pairs, its forward, and beam search (5 beams) of 64 sentences to 24 tokens each.
    #[value(alias = "multi30k")]
    Transformer,
    /// BERT-base (random weights, default config) and MiniLM (all-MiniLM-L6-v2's shape): forward
    /// of 1 and 32 × 128 tokens, also beside ONNX Runtime f32 when it is installed.
    Bert,
    /// GPT-2 small (124M, random weights): greedy generation of 128 tokens after 32, KV-cached.
    Gpt2,
    /// Fine-tuning step of a MiniLM-shaped BERT classifier (6 layers, 384 wide): batch 32 × 64
    /// tokens, dropout 0.1, AdamW.
    Finetune,
    /// Masked-LM pre-training step of bert-mini (4 layers, 256 wide, vocabulary 16,000): batch
    /// 32 × 128 tokens, 15% masked, dropout 0.1, AdamW.
    Pretrain,
    /// Reduced-precision inference: BERT-base forward and GPT-2 decoding in f32, int8 and bf16
    /// beside PyTorch (quantize_dynamic, bf16 weights) and ONNX Runtime's int8, and the int8 and
    /// bf16 products per layer shape beside candle's Q8_0.
    #[value(alias = "bf16")]
    Int8,
    /// Causal self-attention at 512 to 16,384 tokens: Lingo's dense and sliding-window kernels
    /// beside PyTorch's SDPA (dense and band-masked): time, peak memory, a log–log plot.
    Attention,
    /// Peak memory and time of loading BERT-base and GPT-2 folders (random weights written here)
    /// beside transformers' `from_pretrained`, each in a fresh process.
    Load,
    /// `lingo serve` under load (GPT-2-small-shaped generation, MiniLM embeddings) beside
    /// transformers behind FastAPI/uvicorn: requests/s, TTFT, time per token, p50/p99, memory.
    Serve,
    /// Data parallelism on this machine (needs mpirun and a build with `--features mpi`):
    /// all-reduce time beside MPI_Allreduce, 2 ranks × 1 thread beside 1 process × 2 threads,
    /// and the scaling model's predictions.
    #[value(alias = "ranks")]
    Distributed,
}

#[derive(Args)]
pub struct Bench {
    /// Which benchmark to run (default: all of them, and a summary).
    #[arg(value_enum, default_value = "all")]
    model: Model,
    /// Python interpreter with torch installed, for the reference side.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Timed iterations per measurement (after warm-up).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Measure Lingo only.
    #[arg(long)]
    no_python: bool,
    /// `bf16`: mixed precision on both sides (Lingo's bf16 products; PyTorch's `autocast`), for
    /// the transformers benchmarks (bert, gpt2, finetune, pretrain).
    #[arg(long, default_value = "f32")]
    precision: lingo_train::Precision,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// `recipe`: the tiny Shakespeare text (default: ../shared/data/tinyshakespeare/input.txt
    /// when it exists; without it `lingo bench` skips the row).
    #[arg(long)]
    data: Option<PathBuf>,
    /// `scaling`: where to draw tokens/s against d_model, both libraries.
    #[arg(long, default_value = "gpt-scaling.png")]
    scaling_plot: PathBuf,
    /// (Internal) load this model folder and print the peak memory: the child side of `load`.
    #[arg(long, hide = true)]
    load_probe: Option<PathBuf>,
    /// (Internal) time all-reduces under mpirun: the child side of `distributed`.
    #[arg(long, hide = true)]
    allreduce_probe: bool,
    /// (Internal) under mpirun: a GPT and a BERT in pipeline stages and split by tensor
    /// parallelism, against the whole models.
    #[arg(long, hide = true)]
    pipeline_probe: bool,
    #[command(flatten)]
    serve: super::bench_serve::ServeLoad,
    #[command(flatten)]
    attention: super::bench_attention::AttentionBench,
}

/// The reference side's output: its versions and per-iteration milliseconds under named keys.
#[derive(Deserialize)]
pub(super) struct PyResult {
    pub torch: String,
    pub threads: usize,
    #[serde(flatten)]
    pub timings: std::collections::HashMap<String, serde_json::Value>,
}

impl PyResult {
    pub fn ms(&self, key: &str) -> Option<Vec<f64>> {
        serde_json::from_value(self.timings.get(key)?.clone()).ok()
    }
}

/// Per-iteration milliseconds of a training step and of a forward pass.
struct Timings {
    train_ms: Vec<f64>,
    forward_ms: Vec<f64>,
}

pub(super) fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub(super) fn time_ms(
    iters: usize,
    warmup: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

/// A step's batch as shards computed at once, as the trainer's `data_parallel` runs them.
type MakeShards<'s, 'a> = &'s dyn Fn() -> candle_core::Result<Vec<lingo_train::Shard<'a>>>;

/// Times `loss` as a training step (forward in training mode with a fresh seed each step,
/// backward, clipping at 1.0, AdamW) — the step's batch in `shards` when given — and as a forward
/// pass in evaluation mode.
fn time_training(
    iters: usize,
    store: &ParamStore,
    adamw: AdamWConfig,
    mut loss: impl FnMut(&mut Ctx) -> candle_core::Result<Tensor>,
    shards: Option<MakeShards>,
) -> anyhow::Result<Timings> {
    let lr = adamw.lr;
    let mut opt = Optimizer::new(
        OptimizerConfig::AdamW(adamw),
        store,
        DecayPolicy::Matrices,
        &[],
    );
    let named = store.named();
    let mut steps = 0;
    let train_ms = time_ms(iters, 3, || {
        steps += 1;
        let mut ctx = Ctx::train(LingoRng::new(steps));
        let grads = match shards {
            Some(shards) => {
                let parts = shards()?;
                let all = 0..parts.len();
                let (_, _, grads) = lingo_train::trainer::sharded_micro_batch(
                    parts, all, steps, &ctx, store, &named, None,
                )?;
                anyhow::Context::context(grads, "a benchmark batch without shards")?
            }
            None => {
                let loss = loss(&mut ctx)?;
                loss.to_scalar::<f32>()?;
                Gradients::from_store(&named, &loss.backward()?)
            }
        };
        let scale = clip_scale(grads.global_norm()?, Some(1.0));
        opt.step(0, &grads, lr, scale)?;
        Ok(())
    })?;
    let forward_ms = time_ms(iters, 3, || {
        loss(&mut Ctx::eval())?.to_scalar::<f32>()?;
        Ok(())
    })?;
    Ok(Timings {
        train_ms,
        forward_ms,
    })
}

/// The benchmark GPT: pre-norm, GELU, untied head, f32, batch 8.
const GPT_BATCH: usize = 8;

fn gpt_config() -> GptConfig {
    GptConfig {
        vocab_size: 8192,
        context_length: 128,
        d_model: 256,
        n_heads: 4,
        n_layers: 4,
        d_ff: 1024,
        ..Default::default()
    }
}

/// A GPT of shape `cfg` on a fixed random batch of `batch` windows, its training step computed
/// in `shards` shards (1: in one piece). Neither benchmark GPT has dropout, so training mode
/// computes what evaluation does.
fn bench_gpt(
    cfg: &GptConfig,
    batch: usize,
    shards: usize,
    iters: usize,
) -> anyhow::Result<Timings> {
    let store = ParamStore::new(0, &Device::Cpu);
    let model = Gpt::new(cfg.clone(), &store.root())?;
    let mut rng = LingoRng::new(0);
    let shape = (batch, cfg.context_length);
    let mut ids = || -> candle_core::Result<Tensor> {
        let v = (0..batch * cfg.context_length)
            .map(|_| rng.below(cfg.vocab_size) as u32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    };
    let (x, y) = (ids()?, ids()?);
    let adamw = AdamWConfig {
        lr: 1e-3,
        beta2: 0.99,
        weight_decay: 0.1,
        ..Default::default()
    };
    let make_shards = || lingo_tasks::language_model::shards(&model, &x, &y, shards);
    let sharded = (shards > 1).then_some(&make_shards as MakeShards);
    time_training(iters, &store, adamw, |ctx| model.loss(&x, &y, ctx), sharded)
}

/// tools/bench_gpt.py's arguments for a GPT of shape `c` on `batch` windows.
fn gpt_args(c: &GptConfig, batch: usize) -> Vec<String> {
    let mut args = vec![
        "--vocab".to_string(),
        c.vocab_size.to_string(),
        "--context".into(),
        c.context_length.to_string(),
        "--batch".into(),
        batch.to_string(),
        "--d-model".into(),
        c.d_model.to_string(),
        "--heads".into(),
        c.n_heads.to_string(),
        "--layers".into(),
        c.n_layers.to_string(),
        "--d-ff".into(),
        c.d_ff().to_string(),
    ];
    if c.tied_embeddings {
        args.push("--tied".into());
    }
    args
}

/// The widths of the `scaling` benchmark, and the benchmark GPT at each (heads of 64).
const SCALING_WIDTHS: [usize; 6] = [64, 128, 256, 384, 512, 768];
/// What is timed at each width: its label, and its key in tools/bench_gpt.py's output (`*_ms`).
const SCALING_MEASURES: [(&str, &str); 2] = [("train step", "train"), ("forward", "forward")];

fn scaling_config(d_model: usize) -> GptConfig {
    GptConfig {
        d_model,
        n_heads: (d_model / 64).max(1),
        d_ff: 4 * d_model,
        ..gpt_config()
    }
}

/// The nanoGPT character recipe (configs/shakespeare-char.json): batch 12, two shards.
const CHAR_BATCH: usize = 12;
const CHAR_SHARDS: usize = 2;

fn char_config() -> GptConfig {
    GptConfig {
        vocab_size: 65,
        context_length: 64,
        d_model: 128,
        n_heads: 4,
        n_layers: 4,
        tied_embeddings: true,
        ..Default::default()
    }
}

/// The Multi30k recipe's model (configs/multi30k-lstm.json) on a fixed batch of 64 pairs.
const SEQ2SEQ_BATCH: usize = 64;

fn seq2seq_config() -> RnnSeq2SeqConfig {
    RnnSeq2SeqConfig {
        src_vocab_size: 8000,
        tgt_vocab_size: 8000,
        embed_dim: 256,
        hidden_size: 256,
        cell: CellKind::Lstm,
        bidirectional_encoder: true,
        attention: Seq2SeqAttention::Bahdanau,
        dropout: 0.3,
        ..Default::default()
    }
}

/// The sentence pairs of tools/bench_seq2seq.py and tools/bench_transformer.py: `n` pairs of
/// lengths `8 + (7i mod 17)` (source) and `8 + (11i mod 17)` (target, then the end token), words
/// drawn from 3 up.
fn sentence_pairs(n: usize, vocab: (usize, usize), eos: u32) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut rng = LingoRng::new(0);
    let mut word = |vocab: usize| 3 + rng.below(vocab - 3) as u32;
    (0..n)
        .map(|i| {
            let src = (0..8 + (7 * i) % 17).map(|_| word(vocab.0)).collect();
            let mut labels: Vec<u32> = (0..8 + (11 * i) % 17).map(|_| word(vocab.1)).collect();
            labels.push(eos);
            (src, labels)
        })
        .collect()
}

fn pair_batch(
    pairs: &[(Vec<u32>, Vec<u32>)],
    pad: u32,
    bos: u32,
) -> candle_core::Result<Seq2SeqBatch> {
    let refs: Vec<(&[u32], &[u32])> = pairs.iter().map(|(s, t)| (&s[..], &t[..])).collect();
    Seq2SeqBatch::new(&refs, pad, bos, &Device::Cpu)
}

fn seq2seq_batch(cfg: &RnnSeq2SeqConfig) -> candle_core::Result<Seq2SeqBatch> {
    let vocab = (cfg.src_vocab_size, cfg.tgt_vocab_size);
    let pairs = sentence_pairs(SEQ2SEQ_BATCH, vocab, cfg.eos_id);
    pair_batch(&pairs, cfg.pad_id, cfg.bos_id)
}

fn bench_seq2seq(iters: usize) -> anyhow::Result<Timings> {
    let cfg = seq2seq_config();
    let store = ParamStore::new(0, &Device::Cpu);
    let model = RnnSeq2Seq::new(cfg.clone(), &store.root())?;
    let batch = seq2seq_batch(&cfg)?;
    let adamw = AdamWConfig {
        lr: 1e-3,
        weight_decay: 0.0,
        ..Default::default()
    };
    time_training(
        iters,
        &store,
        adamw,
        |ctx| model.loss(&batch, &Seq2SeqLoss::default(), ctx),
        None,
    )
}

/// The Multi30k recipe's Transformer (configs/multi30k-transformer.json) with one shared
/// vocabulary, as tools/bench_transformer.py builds it in transformers (`MarianMTModel`).
const TRANSFORMER_BATCH: usize = 128;
const BEAM_SENTENCES: usize = 64;
const BEAM_TOKENS: usize = 24;

fn transformer_config() -> TransformerConfig {
    TransformerConfig {
        src_vocab_size: 8000,
        tgt_vocab_size: 8000,
        d_model: 256,
        n_heads: 8,
        encoder_layers: 3,
        decoder_layers: 3,
        d_ff: 1024,
        dropout: 0.1,
        max_len: 128,
        share_embeddings: true,
        ..Default::default()
    }
}

/// A training step on 128 pairs (label smoothing 0.1, AdamW with β₂ 0.98 as the recipe), the
/// same batch's forward, and beam search (5 beams) of 64 sources to exactly 24 tokens each.
fn bench_transformer(iters: usize) -> anyhow::Result<(Timings, Vec<f64>)> {
    let cfg = transformer_config();
    let store = ParamStore::new(0, &Device::Cpu);
    let model = Transformer::new(cfg.clone(), &store.root())?;
    let vocab = (cfg.src_vocab_size, cfg.tgt_vocab_size);
    let batch = pair_batch(
        &sentence_pairs(TRANSFORMER_BATCH, vocab, cfg.eos_id),
        cfg.pad_id,
        cfg.bos_id,
    )?;
    let adamw = AdamWConfig {
        lr: 7e-4,
        beta2: 0.98,
        weight_decay: 0.0,
        ..Default::default()
    };
    let smoothed = Seq2SeqLoss {
        label_smoothing: 0.1,
        ..Default::default()
    };
    let timings = time_training(
        iters,
        &store,
        adamw,
        |ctx| model.loss(&batch, &smoothed, ctx),
        None,
    )?;
    // The padded sources of the pairs tools/bench_transformer.py decodes.
    let sources = pair_batch(
        &sentence_pairs(BEAM_SENTENCES, vocab, cfg.eos_id),
        cfg.pad_id,
        cfg.bos_id,
    )?;
    let beam = BeamConfig {
        beam_size: 5,
        max_length: BEAM_TOKENS,
        min_length: BEAM_TOKENS,
        ..Default::default()
    };
    let beam_ms = time_ms(iters, 2, || {
        let out = beam_search(&model, &sources.source, &sources.source_lengths, &beam)?;
        anyhow::ensure!(
            out.iter().all(|h| h[0].tokens.len() == BEAM_TOKENS),
            "beam search stopped early"
        );
        Ok(())
    })?;
    Ok((timings, beam_ms))
}

fn training_rows(t: Timings, tokens: usize) -> Vec<Row> {
    vec![
        Row {
            label: "train step (fwd+bwd+clip+AdamW)".into(),
            lingo_ms: t.train_ms,
            key: "train_ms".into(),
            per_iter: tokens,
        },
        Row {
            label: "forward (logits + loss)".into(),
            lingo_ms: t.forward_ms,
            key: "forward_ms".into(),
            per_iter: tokens,
        },
    ]
}

const BERT_TOKENS: usize = 128;
/// The batch sizes of the `bert` rows: one request, and a batch as offline inference runs it.
const BERT_BATCHES: [usize; 2] = [1, 32];

/// `BertConfig()`'s defaults (BERT-base), as tools/bench_hf.py builds them.
fn bert_base_config() -> anyhow::Result<BertConfig> {
    Ok(serde_json::from_value(serde_json::json!({
        "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
        "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
        "type_vocab_size": 2, "pad_token_id": 0,
    }))?)
}

/// all-MiniLM-L6-v2's shape: 6 layers, 384 wide, 12 heads, feed-forward 1536.
fn minilm_config() -> anyhow::Result<BertConfig> {
    Ok(serde_json::from_value(serde_json::json!({
        "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
        "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
        "type_vocab_size": 2, "pad_token_id": 0,
    }))?)
}

/// Forward passes of a random-weight BERT encoder over `batch` × 128 token ids (linear weights
/// held as `precision` says), and the bytes its weights hold.
fn time_bert_forward(
    iters: usize,
    precision: LinearPrecision,
    config: BertConfig,
    batch: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let store = ParamStore::new(0, &Device::Cpu);
    store.hold_linears_as(precision);
    let model = BertModel::new(Family::Bert, Head::Base, config, true, &store.root())?;
    let mut rng = LingoRng::new(0);
    let ids: Vec<u32> = (0..batch * BERT_TOKENS)
        .map(|_| 1000 + rng.below(29000) as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (batch, BERT_TOKENS), &Device::Cpu)?;
    let times = time_ms(iters, 2, || {
        model
            .forward(&ModelInputs::new(ids.clone()), &mut Ctx::eval())?
            .output
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(())
    })?;
    Ok((times, store.weight_bytes()))
}

/// BERT-base forward passes of one 128-token sequence (linear weights held as `precision` says),
/// and the bytes its weights hold.
pub(super) fn bench_bert(
    iters: usize,
    precision: LinearPrecision,
) -> anyhow::Result<(Vec<f64>, usize)> {
    time_bert_forward(iters, precision, bert_base_config()?, 1)
}

/// The `bert` rows: BERT-base and MiniLM at batch 1 and 32, f32.
fn bert_rows(iters: usize) -> anyhow::Result<Vec<Row>> {
    const LABELS: [[&str; 2]; 2] = [
        ["BERT-base 1 × 128", "BERT-base 32 × 128"],
        ["MiniLM 1 × 128", "MiniLM 32 × 128"],
    ];
    const KEYS: [[&str; 2]; 2] = [["base_1_ms", "base_32_ms"], ["minilm_1_ms", "minilm_32_ms"]];
    let mut rows = Vec::new();
    for (m, config) in [bert_base_config()?, minilm_config()?]
        .into_iter()
        .enumerate()
    {
        for (b, &batch) in BERT_BATCHES.iter().enumerate() {
            rows.push(Row {
                label: LABELS[m][b].into(),
                lingo_ms: time_bert_forward(iters, LinearPrecision::F32, config.clone(), batch)?.0,
                key: KEYS[m][b].into(),
                per_iter: batch * BERT_TOKENS,
            });
        }
    }
    Ok(rows)
}

const FINETUNE_BATCH: (usize, usize) = (32, 64);

/// A MiniLM-shaped BertForSequenceClassification: training steps (dropout on) and forward passes.
fn bench_finetune(iters: usize) -> anyhow::Result<Timings> {
    let store = ParamStore::new(0, &Device::Cpu);
    let model = BertModel::new(
        Family::Bert,
        Head::SequenceClassification,
        minilm_config()?,
        true,
        &store.root(),
    )?;
    let (b, t) = FINETUNE_BATCH;
    let mut rng = LingoRng::new(0);
    let ids: Vec<u32> = (0..b * t).map(|_| 1000 + rng.below(29000) as u32).collect();
    let labels: Vec<u32> = (0..b).map(|_| rng.below(2) as u32).collect();
    let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu)?;
    let labels = Tensor::from_vec(labels, b, &Device::Cpu)?;
    let adamw = AdamWConfig {
        lr: 5e-5,
        weight_decay: 0.01,
        ..Default::default()
    };
    time_training(
        iters,
        &store,
        adamw,
        |ctx| {
            let logits = model.forward(&ModelInputs::new(ids.clone()), ctx)?.output;
            lingo_kernels::cross_entropy(&logits, &labels, Default::default())
        },
        None,
    )
}

const PRETRAIN_BATCH: (usize, usize) = (32, 128);

fn bench_pretrain(iters: usize) -> anyhow::Result<Timings> {
    let config: BertConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 16000, "hidden_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "intermediate_size": 1024, "max_position_embeddings": 128,
        "type_vocab_size": 2, "pad_token_id": 0,
    }))?;
    let store = ParamStore::new(0, &Device::Cpu);
    let model = BertModel::new(Family::Bert, Head::MaskedLm, config, false, &store.root())?;
    let (b, t) = PRETRAIN_BATCH;
    let mut rng = LingoRng::new(0);
    let ids: Vec<u32> = (0..b * t).map(|_| 5 + rng.below(15995) as u32).collect();
    let positions: Vec<u32> = (0..(b * t) as u32)
        .filter(|_| rng.uniform() < 0.15)
        .collect();
    let targets: Vec<u32> = positions.iter().map(|&p| ids[p as usize]).collect();
    let inputs = ModelInputs::new(Tensor::from_vec(ids, (b, t), &Device::Cpu)?)
        .with_predict_positions(Tensor::new(positions.as_slice(), &Device::Cpu)?);
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu)?;
    let adamw = AdamWConfig {
        lr: 5e-4,
        weight_decay: 0.01,
        ..Default::default()
    };
    time_training(
        iters,
        &store,
        adamw,
        |ctx| {
            let logits = model.forward(&inputs, ctx)?.output;
            lingo_kernels::cross_entropy(&logits, &targets, Default::default())
        },
        None,
    )
}

const GPT2_PROMPT: usize = 32;
const GPT2_NEW: usize = 128;

/// GPT-2 small: greedy generation of 128 tokens after a 32-token prompt, with the KV cache (linear
/// weights held as `precision` says). Also the bytes of linear weights one decoding step reads,
/// and the bytes all its weights hold.
pub(super) fn bench_gpt2(
    iters: usize,
    precision: LinearPrecision,
) -> anyhow::Result<(Vec<f64>, usize, usize)> {
    let hf = Gpt2Config {
        vocab_size: 50257,
        n_positions: 1024,
        n_embd: 768,
        n_layer: 12,
        n_head: 12,
        n_inner: None,
        activation_function: "gelu_new".into(),
        layer_norm_epsilon: 1e-5,
        tie_word_embeddings: true,
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        reorder_and_upcast_attn: false,
        resid_pdrop: 0.1,
        embd_pdrop: 0.1,
        attn_pdrop: 0.1,
    };
    let store = ParamStore::new(0, &Device::Cpu);
    store.hold_linears_as(precision);
    let model = Gpt::new(hf.to_gpt().map_err(anyhow::Error::msg)?, &store.root())?;
    // Each step reads every linear weight once: 12·d² per block (attention 4·d², MLP 8·d²) and
    // the tied head, vocabulary × d; 4 bytes each in f32, 2 in bf16, 1 in int8.
    let (d, vocab) = (hf.n_embd, hf.vocab_size);
    let bytes = match precision {
        LinearPrecision::F32 => 4,
        LinearPrecision::Bf16 => 2,
        LinearPrecision::Int8 => 1,
    };
    let linear_bytes = (hf.n_layer * 12 * d * d + vocab * d) * bytes;
    let mut rng = LingoRng::new(0);
    let prompt: Vec<u32> = (0..GPT2_PROMPT)
        .map(|_| 1000 + rng.below(49000) as u32)
        .collect();
    let cfg = SamplingConfig::greedy(GPT2_NEW);
    let times = time_ms(iters, 2, || {
        let out = lingo_generate::generate(&model, &prompt, &cfg, &mut rng, |_| {})?;
        anyhow::ensure!(out.len() == GPT2_NEW, "generation stopped early");
        Ok(())
    })?;
    Ok((times, linear_bytes, store.weight_bytes()))
}

pub(super) fn bench_pytorch(
    python: &str,
    script: &str,
    args: &[&str],
    iters: usize,
    threads: usize,
) -> anyhow::Result<PyResult> {
    let dir = std::env::temp_dir().join(format!("lingo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench.py");
    std::fs::write(&path, script)?;
    // The reference scripts import from bench_gpt: its timing loop, and the recipe its model.
    std::fs::write(dir.join("bench_gpt.py"), GPT_SCRIPT)?;
    let mut command = Command::new(python);
    command.arg(&path).args(args).args([
        "--threads",
        &threads.to_string(),
        "--iters",
        &iters.to_string(),
    ]);
    let out = json_output(&mut command, &format!("the PyTorch benchmark ({python})"));
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Runs a benchmark's child process (`who` names it in errors) and parses the last line it
/// prints as JSON; a failure reports the last line of its standard error.
pub(super) fn json_output<T: serde::de::DeserializeOwned>(
    command: &mut Command,
    who: &str,
) -> anyhow::Result<T> {
    let out = command
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {who}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!("{who}: {}", err.lines().last().unwrap_or("failed"));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| anyhow::anyhow!("unexpected output from {who} ({e}): {line}"))
}

/// One line of the report: what was timed, Lingo's milliseconds, the reference script's key for the
/// same measurement, and the units of work per iteration for a rate column.
struct Row {
    label: String,
    lingo_ms: Vec<f64>,
    key: String,
    per_iter: usize,
}

impl Bench {
    /// Switches Lingo to bf16 when asked (and the PyTorch side will autocast): whether it did.
    fn mixed_precision(&self) -> anyhow::Result<bool> {
        use lingo_kernels::mixed_precision::{set_precision, Precision};
        match self.precision {
            lingo_train::Precision::F32 => Ok(false),
            lingo_train::Precision::F16 => {
                anyhow::bail!("f16 is a GPU precision; on the CPU compare --precision bf16")
            }
            lingo_train::Precision::Bf16 => {
                anyhow::ensure!(
                    !matches!(
                        self.model,
                        Model::All
                            | Model::Gpt
                            | Model::Char
                            | Model::Seq2seq
                            | Model::Transformer
                            | Model::Recipe
                            | Model::Scaling
                    ),
                    "--precision bf16 is for the transformers benchmarks: bert, gpt2, finetune, pretrain"
                );
                anyhow::ensure!(
                    set_precision(Precision::Bf16) == Precision::Bf16,
                    "this CPU has no AVX-512 BF16 (or LINGO_NO_BF16 is set): nothing to compare"
                );
                Ok(true)
            }
        }
    }

    pub fn run(self) -> anyhow::Result<()> {
        let python = (!self.no_python).then_some(self.python.as_str());
        match self.model {
            Model::Attention => {
                return self.attention.run(self.iters, python, self.json.as_deref())
            }
            Model::Int8 => return super::bench_int8::run(self.iters, python, self.json.as_deref()),
            Model::Load => {
                return match &self.load_probe {
                    Some(dir) => super::bench_load::probe(dir),
                    None => super::bench_load::run(python, self.json.as_deref()),
                }
            }
            Model::Distributed => {
                if self.pipeline_probe {
                    return super::bench_dist::pipeline_probe();
                }
                return match self.allreduce_probe {
                    true => super::bench_dist::probe(self.iters),
                    false => super::bench_dist::run(
                        self.iters,
                        self.data.as_deref(),
                        self.json.as_deref(),
                    ),
                };
            }
            Model::Serve => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                return runtime.block_on(self.serve.run(python, self.json.as_deref()));
            }
            _ => {}
        }
        let bf16 = self.mixed_precision()?;
        let models = match self.model {
            Model::All => vec![
                Model::Gpt,
                Model::Char,
                Model::Recipe,
                Model::Seq2seq,
                Model::Transformer,
                Model::Bert,
                Model::Gpt2,
                Model::Finetune,
                Model::Pretrain,
                Model::Scaling,
            ],
            one => vec![one],
        };
        let mut measured = Vec::new();
        for model in models {
            if let Some(m) = self.measure(model, bf16)? {
                m.print();
                measured.push(m);
            }
        }
        if measured.len() > 1 {
            print_summary(&measured);
        }
        if let Some(path) = &self.json {
            let value = serde_json::json!({
                "threads": rayon::current_num_threads(),
                "benchmarks": measured.iter().map(Measured::to_json).collect::<Vec<_>>(),
            });
            lingo_nn::io::write_atomic(path, serde_json::to_string_pretty(&value)?.as_bytes())?;
        }
        Ok(())
    }

    /// The text the `recipe` row trains on: `--data`, else the shared corpus when it is there.
    /// Without either, asking for `recipe` is an error and `all` skips the row.
    fn recipe_data(&self, model: Model) -> anyhow::Result<Option<PathBuf>> {
        let default = PathBuf::from("../shared/data/tinyshakespeare/input.txt");
        match &self.data {
            Some(path) if path.is_file() => Ok(Some(path.clone())),
            Some(path) => anyhow::bail!("--data {}: no such file", path.display()),
            None if default.is_file() => Ok(Some(default)),
            None if self.model == model => anyhow::bail!(
                "the recipe row trains on tiny Shakespeare: pass --data PATH/input.txt"
            ),
            None => {
                println!(
                    "(skipping the recipe row: no --data and no {})",
                    default.display()
                );
                Ok(None)
            }
        }
    }

    /// The `scaling` rows: the benchmark GPT at each width of [`SCALING_WIDTHS`], Lingo then
    /// PyTorch at each, and the plot.
    fn measure_scaling(&self) -> anyhow::Result<Measured> {
        let threads = rayon::current_num_threads();
        println!("Scaling: the benchmark GPT (4 layers, heads of 64, d_ff 4·d_model, batch {GPT_BATCH} × 128, vocab 8192) at d_model {SCALING_WIDTHS:?}, {threads} threads");
        let mut rows = Vec::new();
        let mut torch: Option<PyResult> = None;
        for d in SCALING_WIDTHS {
            let c = scaling_config(d);
            println!("d_model {d}: timing Lingo ...");
            let t = bench_gpt(&c, GPT_BATCH, 1, self.iters)?;
            let tokens = GPT_BATCH * c.context_length;
            for ((what, key), ms) in SCALING_MEASURES.into_iter().zip([t.train_ms, t.forward_ms]) {
                rows.push(Row {
                    label: format!("{what}, d_model {d}"),
                    lingo_ms: ms,
                    key: format!("d{d}_{key}_ms"),
                    per_iter: tokens,
                });
            }
            if self.no_python {
                continue;
            }
            println!("d_model {d}: timing PyTorch ...");
            let args = gpt_args(&c, GPT_BATCH);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match bench_pytorch(&self.python, GPT_SCRIPT, &args, self.iters, threads) {
                Ok(r) => {
                    let all = torch.get_or_insert(PyResult {
                        torch: r.torch.clone(),
                        threads: r.threads,
                        timings: Default::default(),
                    });
                    for (_, key) in SCALING_MEASURES {
                        if let Some(v) = r.timings.get(&format!("{key}_ms")) {
                            all.timings.insert(format!("d{d}_{key}_ms"), v.clone());
                        }
                    }
                }
                Err(e) => println!("PyTorch side unavailable ({e})"),
            }
        }
        let measured = Measured {
            name: "scaling",
            unit: "tokens/s",
            rows,
            torch,
        };
        // The rows come in pairs per width, in SCALING_MEASURES' order.
        let mut series = Vec::new();
        for (i, (what, _)) in SCALING_MEASURES.into_iter().enumerate() {
            let at_widths = || {
                (SCALING_WIDTHS.iter())
                    .zip(measured.rows.chunks_exact(SCALING_MEASURES.len()))
                    .map(move |(&d, pair)| (d as f64, &pair[i]))
            };
            let rate = |r: &Row, ms: f64| r.per_iter as f64 / ms * 1e3;
            let lingo: Vec<(f64, f64)> = at_widths()
                .map(|(d, r)| (d, rate(r, measured.medians(r).0)))
                .collect();
            let pytorch: Vec<(f64, f64)> = at_widths()
                .filter_map(|(d, r)| Some((d, rate(r, measured.medians(r).1?))))
                .collect();
            series.push((format!("Lingo, {what}"), lingo));
            if !pytorch.is_empty() {
                series.push((format!("PyTorch, {what}"), pytorch));
            }
        }
        let panel = lingo_viz::Panel {
            caption: "tokens per second".into(),
            y_label: "tokens/s".into(),
            series,
        };
        lingo_viz::scaling_plot(
            &[panel],
            "d_model",
            &self.scaling_plot,
            "Benchmark GPT, 4 layers",
        )?;
        println!("plot: {}", self.scaling_plot.display());
        Ok(measured)
    }

    /// Times one benchmark in Lingo, then (unless `--no-python`) in PyTorch; `None` when the
    /// benchmark's data is missing.
    fn measure(&self, model: Model, bf16: bool) -> anyhow::Result<Option<Measured>> {
        if model == Model::Scaling {
            return self.measure_scaling().map(Some);
        }
        let threads = rayon::current_num_threads();
        let iters = self.iters;
        let dtype = if bf16 { "bf16 mixed precision" } else { "f32" };
        let timing = || println!("timing Lingo ({iters} iterations after warm-up) ...");
        let (name, rows, script, args, unit): (&str, Vec<Row>, &str, Vec<String>, &str) =
            match model {
                Model::Gpt => {
                    let c = gpt_config();
                    println!(
                        "GPT benchmark: vocab {}, context {}, batch {GPT_BATCH}, d_model {}, {} heads, {} layers, d_ff {}, pre-norm, GELU, untied head, {dtype}, {threads} threads",
                        c.vocab_size, c.context_length, c.d_model, c.n_heads, c.n_layers, c.d_ff()
                    );
                    timing();
                    let t = bench_gpt(&c, GPT_BATCH, 1, iters)?;
                    let tokens = GPT_BATCH * c.context_length;
                    (
                        "gpt",
                        training_rows(t, tokens),
                        GPT_SCRIPT,
                        gpt_args(&c, GPT_BATCH),
                        "tokens/s",
                    )
                }
                Model::Char => {
                    let c = char_config();
                    println!(
                        "nanoGPT character recipe: vocab {}, context {}, batch {CHAR_BATCH} in {CHAR_SHARDS} shards, d_model {}, {} heads, {} layers, tied embeddings, {threads} threads",
                        c.vocab_size, c.context_length, c.d_model, c.n_heads, c.n_layers
                    );
                    timing();
                    let t = bench_gpt(&c, CHAR_BATCH, CHAR_SHARDS, iters)?;
                    let tokens = CHAR_BATCH * c.context_length;
                    (
                        "char",
                        training_rows(t, tokens),
                        GPT_SCRIPT,
                        gpt_args(&c, CHAR_BATCH),
                        "tokens/s",
                    )
                }
                Model::Recipe => {
                    let Some(data) = self.recipe_data(model)? else {
                        return Ok(None);
                    };
                    println!("nanoGPT character recipe, whole run: configs/shakespeare-char.json (2,000 steps, evaluation every 250) on {}, {threads} threads", data.display());
                    println!("training with Lingo ...");
                    let (wall_ms, val_loss) = run_char_recipe(&data)?;
                    println!(
                        "Lingo: {:.1} s, validation loss {val_loss:.4}",
                        wall_ms / 1e3
                    );
                    let row = Row {
                        label: "whole recipe, 2,000 steps + evals".into(),
                        lingo_ms: vec![wall_ms],
                        key: "wall_ms".into(),
                        per_iter: 2000,
                    };
                    (
                        "recipe",
                        vec![row],
                        RECIPE_SCRIPT,
                        vec![data.display().to_string(), "--json".into()],
                        "steps/s",
                    )
                }
                Model::Seq2seq => {
                    let c = seq2seq_config();
                    let tokens = seq2seq_batch(&c)?.target_tokens;
                    println!(
                        "Seq2seq benchmark: LSTM, vocab {}/{}, embed {}, hidden {}, bidirectional encoder, Bahdanau attention, dropout {}, batch {SEQ2SEQ_BATCH} ({tokens} target tokens), {dtype}, {threads} threads",
                        c.src_vocab_size, c.tgt_vocab_size, c.embed_dim, c.hidden_size, c.dropout
                    );
                    timing();
                    let t = bench_seq2seq(iters)?;
                    (
                        "seq2seq",
                        training_rows(t, tokens),
                        SEQ2SEQ_SCRIPT,
                        vec![],
                        "target tokens/s",
                    )
                }
                Model::Transformer => {
                    let c = transformer_config();
                    println!(
                        "Multi30k Transformer: {} + {} post-norm layers of {}, {} heads, d_ff {}, shared vocabulary {}, dropout {}, batch {TRANSFORMER_BATCH} pairs; beam 5 over {BEAM_SENTENCES} sources to {BEAM_TOKENS} tokens, {threads} threads",
                        c.encoder_layers, c.decoder_layers, c.d_model, c.n_heads, c.d_ff, c.src_vocab_size, c.dropout
                    );
                    timing();
                    let (t, beam_ms) = bench_transformer(iters)?;
                    let vocab = (c.src_vocab_size, c.tgt_vocab_size);
                    let pairs = sentence_pairs(TRANSFORMER_BATCH, vocab, c.eos_id);
                    let tokens = pairs.iter().map(|(_, t)| t.len()).sum();
                    let mut rows = training_rows(t, tokens);
                    rows.push(Row {
                        label: "beam 5, 64 sentences × 24 tokens".into(),
                        lingo_ms: beam_ms,
                        key: "beam_ms".into(),
                        per_iter: BEAM_SENTENCES,
                    });
                    (
                        "transformer",
                        rows,
                        TRANSFORMER_SCRIPT,
                        vec![],
                        "target tokens/s; sentences/s",
                    )
                }
                Model::Bert => {
                    println!("BERT-base and MiniLM (all-MiniLM-L6-v2's shape) forward: random weights, batch 1 and 32 × {BERT_TOKENS} tokens, f32, {threads} threads; also ONNX Runtime when installed");
                    timing();
                    (
                        "bert",
                        bert_rows(iters)?,
                        HF_SCRIPT,
                        vec!["bert".into()],
                        "tokens/s",
                    )
                }
                Model::Finetune => {
                    let (b, t) = FINETUNE_BATCH;
                    println!("Fine-tuning step: MiniLM-shaped BERT classifier (6 layers, 384 wide, 12 heads), random weights, batch {b} × {t} tokens, dropout 0.1, AdamW, f32, {threads} threads");
                    timing();
                    let timings = bench_finetune(iters)?;
                    let rows = training_rows(timings, b * t);
                    (
                        "finetune",
                        rows,
                        HF_SCRIPT,
                        vec!["finetune".into()],
                        "tokens/s",
                    )
                }
                Model::Pretrain => {
                    let (b, t) = PRETRAIN_BATCH;
                    println!("Pre-training step: bert-mini masked LM (4 layers, 256 wide, 4 heads, vocabulary 16,000), random weights, batch {b} × {t} tokens, 15% masked, dropout 0.1, AdamW, {dtype}, {threads} threads");
                    timing();
                    let timings = bench_pretrain(iters)?;
                    let rows = training_rows(timings, b * t);
                    (
                        "pretrain",
                        rows,
                        HF_SCRIPT,
                        vec!["pretrain".into()],
                        "tokens/s",
                    )
                }
                Model::Gpt2 => {
                    println!("GPT-2 small greedy generation: random weights, {GPT2_NEW} new tokens after {GPT2_PROMPT}, KV cache, {dtype}, {threads} threads");
                    timing();
                    let row = Row {
                        label: "generate 128 tokens".into(),
                        lingo_ms: bench_gpt2(iters, LinearPrecision::F32)?.0,
                        key: "ms".into(),
                        per_iter: GPT2_NEW,
                    };
                    (
                        "gpt2",
                        vec![row],
                        HF_SCRIPT,
                        vec!["gpt2".into()],
                        "new tokens/s",
                    )
                }
                Model::All
                | Model::Serve
                | Model::Int8
                | Model::Attention
                | Model::Load
                | Model::Distributed
                | Model::Scaling => {
                    unreachable!("run above")
                }
            };
        let torch = if self.no_python {
            None
        } else {
            println!("timing PyTorch with {} ...", self.python);
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            if bf16 {
                args.push("--bf16");
            }
            match bench_pytorch(&self.python, script, &args, iters, threads) {
                Ok(r) => Some(r),
                Err(e) => {
                    println!("PyTorch side unavailable ({e}); showing Lingo's figures only");
                    None
                }
            }
        };
        if let (Some(t), Model::Recipe) = (&torch, model) {
            if let Some(loss) = t.timings.get("val_loss").and_then(|v| v.as_f64()) {
                println!("PyTorch: validation loss {loss:.4}");
            }
        }
        Ok(Some(Measured {
            name,
            unit,
            rows,
            torch,
        }))
    }
}

/// Runs `lingo train lm` with the character recipe on `data` in a fresh process: the run's wall
/// time in ms (training and every evaluation, as its metrics record it) and the last validation
/// loss.
fn run_char_recipe(data: &std::path::Path) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("shakespeare-char.json");
    std::fs::write(&config, CHAR_RECIPE)?;
    let out = dir.path().join("run");
    let status = Command::new(std::env::current_exe()?)
        .args(["train", "lm", "--quiet", "--data"])
        .arg(data)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()?;
    if !status.status.success() {
        let err = String::from_utf8_lossy(&status.stderr);
        anyhow::bail!(
            "lingo train lm failed: {}",
            err.lines().last().unwrap_or_default()
        );
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl"))?;
    let last = metrics
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("val_loss").is_some())
        .ok_or_else(|| anyhow::anyhow!("the recipe run recorded no validation loss"))?;
    let number = |key: &str| {
        last[key]
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("metrics.jsonl: `{key}` is not a number"))
    };
    Ok((number("elapsed_s")? * 1e3, number("val_loss")?))
}

/// One benchmark's rows, both sides.
struct Measured {
    name: &'static str,
    unit: &'static str,
    rows: Vec<Row>,
    torch: Option<PyResult>,
}

impl Measured {
    /// PyTorch's per-iteration milliseconds for `row`, if it ran.
    fn torch_ms(&self, row: &Row) -> Option<Vec<f64>> {
        self.torch.as_ref().and_then(|t| t.ms(&row.key))
    }

    /// ONNX Runtime's per-iteration milliseconds for `row`, if the script ran it too.
    fn ort_ms(&self, row: &Row) -> Option<Vec<f64>> {
        self.torch
            .as_ref()
            .and_then(|t| t.ms(&format!("ort_{}", row.key)))
    }

    /// The median milliseconds of `row`: Lingo's, PyTorch's and ONNX Runtime's if they ran.
    fn medians(&self, row: &Row) -> (f64, Option<f64>, Option<f64>) {
        (
            median(&row.lingo_ms),
            self.torch_ms(row).map(|t| median(&t)),
            self.ort_ms(row).map(|t| median(&t)),
        )
    }

    fn has_ort(&self) -> bool {
        self.rows.iter().any(|r| self.ort_ms(r).is_some())
    }

    fn print(&self) {
        println!();
        let torch_name = self.torch.as_ref().map(|t| format!("PyTorch {}", t.torch));
        let ort = self.has_ort();
        print!(
            "{:<34} {:>16} {:>20} {:>14}",
            format!("median ms ({})", self.unit),
            "Lingo",
            torch_name.as_deref().unwrap_or(""),
            if self.torch.is_some() {
                "PyTorch/Lingo"
            } else {
                ""
            }
        );
        if ort {
            let version = self
                .torch
                .as_ref()
                .and_then(|t| t.timings.get("onnxruntime"));
            let name = format!(
                "ONNX Runtime {}",
                version.and_then(|v| v.as_str()).unwrap_or("")
            );
            print!(" {:>20} {:>10}", name.trim_end(), "ORT/Lingo");
        }
        println!();
        for row in &self.rows {
            let (ours, theirs, ort_ms) = self.medians(row);
            let rate = |ms: f64| row.per_iter as f64 / ms * 1e3;
            let cell = |ms: f64| format!("{ms:.1} ({:.0})", rate(ms));
            print!("{:<34} {:>16}", row.label, cell(ours));
            if let Some(t) = theirs {
                print!(" {:>20} {:>13.2}×", cell(t), t / ours);
            }
            if let Some(o) = ort_ms {
                print!(" {:>20} {:>9.2}×", cell(o), o / ours);
            }
            println!();
        }
        if let Some(t) = &self.torch {
            println!(
                "(ratio > 1 means Lingo is faster; PyTorch ran with {} threads)",
                t.threads
            );
        }
        println!();
    }

    fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let (ours, theirs, ort) = self.medians(r);
                serde_json::json!({
                    "measure": r.key,
                    "label": r.label,
                    "lingo_ms": r.lingo_ms,
                    "lingo_median_ms": ours,
                    "pytorch_ms": self.torch_ms(r),
                    "pytorch_median_ms": theirs,
                    "ratio": theirs.map(|t| t / ours),
                    "onnxruntime_ms": self.ort_ms(r),
                    "onnxruntime_median_ms": ort,
                    "ratio_onnxruntime": ort.map(|o| o / ours),
                })
            })
            .collect();
        serde_json::json!({
            "benchmark": self.name,
            "pytorch": self.torch.as_ref().map(|t| t.torch.clone()),
            "rows": rows,
        })
    }
}

/// Every row of every benchmark in one table.
fn print_summary(measured: &[Measured]) {
    println!("summary (median ms; ratio > 1 means Lingo is faster)");
    println!(
        "{:<11} {:<34} {:>10} {:>10} {:>8} {:>10} {:>8}",
        "benchmark", "measure", "Lingo", "PyTorch", "ratio", "ONNX RT", "ratio"
    );
    let ms = |x: Option<f64>| x.map_or("-".into(), |t| format!("{t:.1}"));
    for m in measured {
        for row in &m.rows {
            let (ours, theirs, ort) = m.medians(row);
            let ratio = |x: Option<f64>| x.map_or("-".into(), |t| format!("{:.2}×", t / ours));
            println!(
                "{:<11} {:<34} {:>10.1} {:>10} {:>8} {:>10} {:>8}",
                m.name,
                row.label,
                ours,
                ms(theirs),
                ratio(theirs),
                ms(ort),
                ratio(ort),
            );
        }
    }
}
