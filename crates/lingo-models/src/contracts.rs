//! The small traits decoding and training are written against, so that `lingo-generate`'s
//! strategies and `lingo-tasks`' fine-tuning work for every family without knowing one:
//! [`CausalLm`] (decoder-only models), [`Seq2SeqLm`] (encoder–decoders, one token at a time) and
//! [`Seq2SeqTrain`] (an encoder–decoder's training loss on a [`Seq2SeqBatch`]).

use candle_core::{Device, Result, Tensor};
use lingo_nn::{Ctx, KvCache};

/// Tensors that travel together through decoding, each with the batch as its first dimension, so a
/// beam search can reorder or replicate them without knowing what they mean.
#[derive(Clone, Debug)]
pub struct Batched(pub Vec<Tensor>);

impl Batched {
    /// The rows `rows` (u32 indices, repeats allowed) of every tensor.
    pub fn select(&self, rows: &Tensor) -> Result<Batched> {
        Ok(Batched(
            self.0
                .iter()
                .map(|t| t.index_select(rows, 0))
                .collect::<Result<_>>()?,
        ))
    }

    /// The same tensors cut from the autodiff graph. Decoding calls this on what it keeps between
    /// steps: with trainable weights every op is recorded, and a kept tensor would otherwise hold
    /// the activations of every earlier step (and the encoder's) alive.
    pub fn detach(&self) -> Batched {
        Batched(self.0.iter().map(Tensor::detach).collect())
    }
}

/// An encoder–decoder that produces one target token at a time, for greedy and beam search.
pub trait Seq2SeqLm {
    /// The token the decoder starts from (`decoder_start_token_id`).
    fn bos_id(&self) -> u32;
    fn eos_id(&self) -> u32;
    fn target_vocab_size(&self) -> usize;
    /// Encodes a padded source batch `[batch, src]` with its real lengths.
    fn encode(&self, src: &Tensor, lengths: &[usize]) -> Result<Batched>;
    /// The decoder state before the first target token.
    fn initial_state(&self, memory: &Batched) -> Result<Batched>;
    /// Log-probabilities of the next token `[rows, vocab]` after `last` (`[rows]`), the new state, and
    /// the attention weights over the source `[rows, src]` if the model attends.
    fn decode_step(
        &self,
        memory: &Batched,
        state: &Batched,
        last: &Tensor,
    ) -> Result<(Tensor, Batched, Option<Tensor>)>;
}

/// A model that predicts the next token, for the decoding strategies in `lingo-generate`.
pub trait CausalLm {
    fn vocab_size(&self) -> usize;
    /// Longest sequence (prompt plus generated tokens) the model can attend over.
    fn context_length(&self) -> usize;
    /// A fresh, empty cache for every layer.
    fn new_cache(&self) -> Vec<KvCache>;
    /// Logits `[batch, new, vocab]` for `ids: [batch, new]`, the positions after those in `cache`,
    /// which is extended with them.
    fn forward_cached(&self, ids: &Tensor, cache: &mut [KvCache]) -> Result<Tensor>;

    /// Logits `[rows, vocab]` after one new token for each of several sequences, row `i`
    /// continuing the sequence cached in `caches[i]` (which is extended): the step of continuous
    /// batching. By default each row runs alone; a model may batch the rows' shared work.
    fn forward_rows(&self, tokens: &[u32], caches: &mut [&mut [KvCache]]) -> Result<Tensor> {
        check_rows(tokens.len(), caches.len())?;
        let mut rows = Vec::with_capacity(tokens.len());
        for (&token, cache) in tokens.iter().zip(caches.iter_mut()) {
            let input = Tensor::new(&[[token]], &candle_core::Device::Cpu)?;
            rows.push(self.forward_cached(&input, cache)?.flatten_to(1)?);
        }
        Tensor::cat(&rows, 0)
    }
}

/// [`CausalLm::forward_rows`] takes one token per cache, and at least one.
pub(crate) fn check_rows(tokens: usize, caches: usize) -> Result<()> {
    if tokens != caches || tokens == 0 {
        candle_core::bail!("forward_rows: {tokens} tokens for {caches} caches");
    }
    Ok(())
}

/// The label of a position that takes no part in the loss (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// The flat positions of `labels` (any shape, i64) that are not [`IGNORE`]d, and their labels:
/// where a masked-LM head needs computing (`ModelInputs::predict_positions`), and its targets.
pub fn labelled_positions(labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let flat: Vec<i64> = labels.flatten_all()?.to_vec1()?;
    let (positions, targets): (Vec<u32>, Vec<i64>) = (flat.iter().enumerate())
        .filter(|(_, &l)| l != IGNORE)
        .map(|(i, &l)| (i as u32, l))
        .unzip();
    let n = targets.len();
    Ok((
        Tensor::from_vec(positions, n, labels.device())?,
        Tensor::from_vec(targets, n, labels.device())?,
    ))
}

/// A padded training batch of an encoder–decoder, laid out as `transformers` trains one: the
/// labels are the target with its end token, the decoder input the same shifted right behind the
/// start token (`shift_tokens_right`), padded labels [`IGNORE`]d.
#[derive(Clone, Debug)]
pub struct Seq2SeqBatch {
    /// `[batch, src]` u32, padded with the model's padding id.
    pub source: Tensor,
    pub source_lengths: Vec<usize>,
    /// `[batch, tgt]` u32: the start token, then each label but the last.
    pub decoder_input: Tensor,
    /// `[batch, tgt]` i64.
    pub labels: Tensor,
    /// Real (not padded) label positions: what a loss averages over.
    pub target_tokens: usize,
}

impl Seq2SeqBatch {
    /// Pads `pairs` of (source ids, label ids — the target ending in the end token) into a batch;
    /// `pad` fills the source and decoder input, `start` begins every decoder input.
    pub fn new(pairs: &[(&[u32], &[u32])], pad: u32, start: u32, device: &Device) -> Result<Self> {
        let b = pairs.len();
        let s = pairs.iter().map(|p| p.0.len()).max().unwrap_or(0).max(1);
        let t = pairs.iter().map(|p| p.1.len()).max().unwrap_or(0).max(1);
        let (mut src, mut input, mut labels) =
            (vec![pad; b * s], vec![pad; b * t], vec![IGNORE; b * t]);
        for (r, (x, y)) in pairs.iter().enumerate() {
            if y.is_empty() {
                candle_core::bail!(
                    "example {r} of the batch has no target tokens (not even the end token)"
                );
            }
            src[r * s..r * s + x.len()].copy_from_slice(x);
            input[r * t] = start;
            input[r * t + 1..r * t + y.len()].copy_from_slice(&y[..y.len() - 1]);
            for (j, &id) in y.iter().enumerate() {
                labels[r * t + j] = id as i64;
            }
        }
        Ok(Seq2SeqBatch {
            source: Tensor::from_vec(src, (b, s), device)?,
            source_lengths: pairs.iter().map(|p| p.0.len()).collect(),
            decoder_input: Tensor::from_vec(input, (b, t), device)?,
            labels: Tensor::from_vec(labels, (b, t), device)?,
            target_tokens: pairs.iter().map(|p| p.1.len()).sum(),
        })
    }
}

impl Seq2SeqBatch {
    /// The batch as a Transformer encoder–decoder's forward inputs: the sources with their
    /// padding mask, and the decoder input.
    pub fn inputs(&self) -> Result<crate::ModelInputs> {
        let (src, lengths) = (&self.source, &self.source_lengths);
        let mask = crate::length_mask(lengths, src.dim(1)?, candle_core::DType::U32, src.device())?;
        Ok(crate::ModelInputs::new(src.clone())
            .with_attention_mask(mask)
            .with_decoder_input_ids(self.decoder_input.clone()))
    }
}

/// How an encoder–decoder's training loss is computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seq2SeqLoss {
    /// Label smoothing of the cross-entropy (the Transformer paper uses 0.1).
    pub label_smoothing: f32,
    /// Recurrent decoders: the probability of feeding the reference token rather than the model's
    /// own prediction at each step (below 1: scheduled sampling). Transformers always see the
    /// reference.
    pub teacher_forcing: f32,
}

impl Default for Seq2SeqLoss {
    fn default() -> Self {
        Seq2SeqLoss {
            label_smoothing: 0.0,
            teacher_forcing: 1.0,
        }
    }
}

/// An encoder–decoder that trains: the mean cross-entropy of a batch's labels.
pub trait Seq2SeqTrain: Seq2SeqLm {
    /// The padding id of the source side.
    fn pad_id(&self) -> u32;
    /// The mean loss over the batch's real label positions, in `ctx`'s mode.
    fn loss(&self, batch: &Seq2SeqBatch, options: &Seq2SeqLoss, ctx: &mut Ctx) -> Result<Tensor>;
}

/// The cross-entropy of `logits: [batch, tgt, vocab]` against a batch's labels.
pub fn seq2seq_cross_entropy(
    logits: &Tensor,
    batch: &Seq2SeqBatch,
    options: &Seq2SeqLoss,
) -> Result<Tensor> {
    lingo_kernels::cross_entropy(
        logits,
        &batch.labels,
        lingo_kernels::CrossEntropy {
            ignore_index: Some(IGNORE),
            label_smoothing: options.label_smoothing,
            ..Default::default()
        },
    )
}
