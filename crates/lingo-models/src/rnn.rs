//! Recurrent networks over one sequence: the many-to-one classifier (a sentence → a label) and
//! the synchronous many-to-many tagger (a label for every word).
//!
//! Embeddings → (bidirectional, multi-layer) RNN/LSTM/GRU over the padded batch → one vector per
//! sentence by pooling → dropout → a linear layer to the labels. Pooling:
//! - *last*: the last layer's final state of each direction (the forward one after the last real
//!   token, the backward one after the first), side by side;
//! - *mean* / *max*: over the real positions of the last layer's outputs;
//! - *attention*: `α = softmax(vᵀ tanh(W hₜ))` over the real positions, then `Σ αₜ hₜ` (Yang et
//!   al. 2016's word attention).
//!
//! The tagger (Lample et al. 2016): each word is its embedding beside, optionally, the final
//! states of a bidirectional LSTM over its characters (spelling, capitals, suffixes — what an
//! unknown word still has) → dropout → a (bi)RNN over the sentence → dropout → a linear layer to
//! one score per tag and position. Trained with cross-entropy at each position, or through a
//! linear-chain CRF over the scores ([`lingo_nn::Crf`]: the sentence's tag sequence as a whole,
//! with learnt transitions, decoded by Viterbi).

use candle_core::{bail, DType, Device, Result, Tensor, D};
use lingo_nn::{
    CellKind, Crf, Ctx, Dropout, Embedding, Init, Linear, ParamPath, Recurrent, RecurrentConfig,
};
use serde::{Deserialize, Serialize};

/// How a sentence's states become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    #[default]
    Last,
    Mean,
    Max,
    Attention,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RnnClassifierConfig {
    pub vocab_size: usize,
    pub embed_dim: usize,
    pub cell: CellKind,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub pooling: Pooling,
    /// Width of the attention pooling's hidden layer (0: `hidden_size`).
    pub attention_dim: usize,
    /// Dropout on the embeddings, between layers and before the output layer.
    pub dropout: f32,
    pub num_labels: usize,
    pub pad_id: u32,
}

impl Default for RnnClassifierConfig {
    fn default() -> Self {
        RnnClassifierConfig {
            vocab_size: 0,
            embed_dim: 100,
            cell: CellKind::Lstm,
            hidden_size: 150,
            num_layers: 1,
            bidirectional: true,
            pooling: Pooling::Max,
            attention_dim: 0,
            dropout: 0.5,
            num_labels: 2,
            pad_id: 0,
        }
    }
}

impl RnnClassifierConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        crate::config::check_positive(&[
            ("vocab_size", self.vocab_size),
            ("embed_dim", self.embed_dim),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_labels", self.num_labels),
        ])?;
        if self.pad_id as usize >= self.vocab_size {
            return Err(format!(
                "field `pad_id` ({}) is outside the vocabulary ({})",
                self.pad_id, self.vocab_size
            ));
        }
        crate::config::check_dropout(self.dropout)
    }

    fn state_size(&self) -> usize {
        self.hidden_size * (1 + usize::from(self.bidirectional))
    }
}

struct AttentionPool {
    project: Linear,
    score: Linear,
}

pub struct RnnClassifier {
    pub config: RnnClassifierConfig,
    embed: Embedding,
    rnn: Recurrent,
    attention: Option<AttentionPool>,
    out: Linear,
    drop: Dropout,
}

impl RnnClassifier {
    pub fn new(config: RnnClassifierConfig, p: &ParamPath) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let c = &config;
        let embed = Embedding::new(
            &p.sub("word_embed"),
            c.vocab_size,
            c.embed_dim,
            Init::Normal(0.1),
        )?
        .with_padding_idx(c.pad_id as usize);
        let rnn = Recurrent::new(
            &p.sub("rnn"),
            RecurrentConfig {
                cell: c.cell,
                input_size: c.embed_dim,
                hidden_size: c.hidden_size,
                num_layers: c.num_layers,
                bidirectional: c.bidirectional,
                dropout: c.dropout,
                bias: true,
            },
        )?;
        let width = c.state_size();
        let attention = match c.pooling {
            Pooling::Attention => {
                let a = if c.attention_dim == 0 {
                    c.hidden_size
                } else {
                    c.attention_dim
                };
                Some(AttentionPool {
                    project: Linear::new(
                        &p.sub("pool.project"),
                        width,
                        a,
                        true,
                        Init::Uniform(0.1),
                    )?,
                    score: Linear::new(&p.sub("pool.score"), a, 1, false, Init::Uniform(0.1))?,
                })
            }
            _ => None,
        };
        let out = Linear::new(&p.sub("out"), width, c.num_labels, true, Init::Uniform(0.1))?;
        Ok(RnnClassifier {
            drop: Dropout::new(c.dropout),
            config,
            embed,
            rnn,
            attention,
            out,
        })
    }

    /// Pads token-id sentences into `[batch, longest]` with their lengths.
    pub fn batch(&self, sentences: &[&[u32]], device: &Device) -> Result<(Tensor, Vec<usize>)> {
        let lengths: Vec<usize> = sentences.iter().map(|s| s.len()).collect();
        if lengths.contains(&0) {
            bail!("a sentence has no tokens");
        }
        let width = lengths.iter().copied().max().unwrap_or(0);
        let pad = self.config.pad_id;
        let ids: Vec<u32> = sentences
            .iter()
            .flat_map(|s| {
                s.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, width - s.len()))
            })
            .collect();
        Ok((
            Tensor::from_vec(ids, (sentences.len(), width), device)?,
            lengths,
        ))
    }

    /// `[batch, num_labels]` logits for `ids: [batch, time]` padded, `lengths` the real lengths.
    pub fn forward(&self, ids: &Tensor, lengths: &[usize], ctx: &mut Ctx) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > t) {
            bail!("lengths {lengths:?} do not fit a batch of {b} sentences of at most {t} tokens");
        }
        let x = self.drop.forward(&self.embed.forward(ids)?, ctx)?;
        let run = self.rnn.forward(&x, Some(lengths), None, ctx)?;
        let c = &self.config;
        let keep = crate::length_mask(lengths, t, DType::U8, ids.device())?;
        let pooled = match c.pooling {
            Pooling::Last => {
                let dirs = 1 + usize::from(c.bidirectional);
                run.h_n
                    .narrow(0, (c.num_layers - 1) * dirs, dirs)?
                    .transpose(0, 1)?
                    .reshape((b, ()))?
            }
            Pooling::Mean => {
                let n: Vec<f32> = lengths.iter().map(|&l| l as f32).collect();
                let n = Tensor::from_vec(n, (b, 1), ids.device())?;
                run.output.sum(1)?.broadcast_div(&n)?
            }
            Pooling::Max => {
                let keep = keep.unsqueeze(2)?.broadcast_as(run.output.shape())?;
                let low = Tensor::full(f32::NEG_INFINITY, run.output.shape(), ids.device())?;
                keep.where_cond(&run.output, &low)?.max(1)?
            }
            Pooling::Attention => {
                let a = self
                    .attention
                    .as_ref()
                    .expect("built with attention pooling");
                let scores = a
                    .score
                    .forward(&a.project.forward(&run.output)?.tanh()?)?
                    .squeeze(2)?;
                let alpha = lingo_kernels::softmax_masked(&scores, &keep)?;
                run.output.broadcast_mul(&alpha.unsqueeze(2)?)?.sum(1)?
            }
        };
        self.out.forward(&self.drop.forward(&pooled, ctx)?)
    }

    /// Mean cross-entropy of the logits of a padded batch against `labels`.
    pub fn loss(
        &self,
        ids: &Tensor,
        lengths: &[usize],
        labels: &[u32],
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let logits = self.forward(ids, lengths, ctx)?;
        let targets = Tensor::new(labels, ids.device())?;
        lingo_kernels::cross_entropy(&logits, &targets, lingo_kernels::CrossEntropy::default())
    }

    /// The most probable label of each sentence, and the logits.
    pub fn predict(&self, sentences: &[&[u32]]) -> Result<(Vec<u32>, Tensor)> {
        let (ids, lengths) = self.batch(sentences, &Device::Cpu)?;
        let logits = self.forward(&ids, &lengths, &mut Ctx::eval())?;
        let best = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        Ok((best, logits))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RnnTaggerConfig {
    pub vocab_size: usize,
    pub embed_dim: usize,
    /// Characters known to the character encoder (0: no character features).
    pub char_vocab_size: usize,
    pub char_embed_dim: usize,
    /// Width of each direction of the character BiLSTM.
    pub char_hidden_size: usize,
    pub cell: CellKind,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    /// Dropout on the word representations, between layers and before the output layer.
    pub dropout: f32,
    pub num_tags: usize,
    /// Score whole tag sequences with a linear-chain CRF (else each position on its own).
    pub crf: bool,
    pub pad_id: u32,
}

impl Default for RnnTaggerConfig {
    fn default() -> Self {
        RnnTaggerConfig {
            vocab_size: 0,
            embed_dim: 100,
            char_vocab_size: 0,
            char_embed_dim: 25,
            char_hidden_size: 25,
            cell: CellKind::Lstm,
            hidden_size: 100,
            num_layers: 1,
            bidirectional: true,
            dropout: 0.5,
            num_tags: 0,
            crf: false,
            pad_id: 0,
        }
    }
}

impl RnnTaggerConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        crate::config::check_positive(&[
            ("vocab_size", self.vocab_size),
            ("embed_dim", self.embed_dim),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_tags", self.num_tags),
        ])?;
        if self.char_vocab_size > 0 {
            crate::config::check_positive(&[
                ("char_embed_dim", self.char_embed_dim),
                ("char_hidden_size", self.char_hidden_size),
            ])?;
        }
        crate::config::check_dropout(self.dropout)
    }

    fn word_size(&self) -> usize {
        self.embed_dim
            + if self.char_vocab_size > 0 {
                2 * self.char_hidden_size
            } else {
                0
            }
    }
}

/// A padded batch for the tagger: word ids `[batch, time]`, lengths, and (with character
/// features) the characters of every real word, padded, in sentence order.
pub struct TaggerBatch {
    pub words: Tensor,
    pub lengths: Vec<usize>,
    pub chars: Option<(Tensor, Vec<usize>)>,
}

struct CharEncoder {
    embed: Embedding,
    rnn: Recurrent,
}

pub struct RnnTagger {
    pub config: RnnTaggerConfig,
    embed: Embedding,
    chars: Option<CharEncoder>,
    rnn: Recurrent,
    out: Linear,
    crf: Option<Crf>,
    drop: Dropout,
}

impl RnnTagger {
    pub fn new(config: RnnTaggerConfig, p: &ParamPath) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let c = &config;
        let embed = Embedding::new(
            &p.sub("word_embed"),
            c.vocab_size,
            c.embed_dim,
            Init::Normal(0.1),
        )?
        .with_padding_idx(c.pad_id as usize);
        let chars = if c.char_vocab_size > 0 {
            Some(CharEncoder {
                embed: Embedding::new(
                    &p.sub("chars.embed"),
                    c.char_vocab_size,
                    c.char_embed_dim,
                    Init::Normal(0.1),
                )?
                .with_padding_idx(0),
                rnn: Recurrent::new(
                    &p.sub("chars.rnn"),
                    RecurrentConfig {
                        cell: CellKind::Lstm,
                        input_size: c.char_embed_dim,
                        hidden_size: c.char_hidden_size,
                        bidirectional: true,
                        ..RecurrentConfig::default()
                    },
                )?,
            })
        } else {
            None
        };
        let rnn = Recurrent::new(
            &p.sub("rnn"),
            RecurrentConfig {
                cell: c.cell,
                input_size: c.word_size(),
                hidden_size: c.hidden_size,
                num_layers: c.num_layers,
                bidirectional: c.bidirectional,
                dropout: c.dropout,
                bias: true,
            },
        )?;
        let width = c.hidden_size * (1 + usize::from(c.bidirectional));
        let out = Linear::new(&p.sub("out"), width, c.num_tags, true, Init::Uniform(0.1))?;
        let crf = if c.crf {
            Some(Crf::new(&p.sub("crf"), c.num_tags)?)
        } else {
            None
        };
        Ok(RnnTagger {
            drop: Dropout::new(c.dropout),
            config,
            embed,
            chars,
            rnn,
            out,
            crf,
        })
    }

    /// Pads sentences of word ids (and, with character features, each word's character ids,
    /// which must not use id 0, the padding) into a batch.
    pub fn batch(
        &self,
        words: &[&[u32]],
        chars: Option<&[Vec<Vec<u32>>]>,
        device: &Device,
    ) -> Result<TaggerBatch> {
        let lengths: Vec<usize> = words.iter().map(|s| s.len()).collect();
        if lengths.contains(&0) {
            bail!("a sentence has no words");
        }
        let t = lengths.iter().copied().max().unwrap_or(0);
        let pad = self.config.pad_id;
        let ids: Vec<u32> = (words.iter())
            .flat_map(|s| {
                s.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, t - s.len()))
            })
            .collect();
        let chars = match (&self.chars, chars) {
            (Some(_), Some(chars)) => {
                let all: Vec<&Vec<u32>> = chars.iter().flatten().collect();
                if all.len() != lengths.iter().sum::<usize>() || all.iter().any(|w| w.is_empty()) {
                    bail!("every word needs its characters");
                }
                let longest = all.iter().map(|w| w.len()).max().unwrap_or(1);
                let flat: Vec<u32> = (all.iter())
                    .flat_map(|w| {
                        w.iter()
                            .copied()
                            .chain(std::iter::repeat_n(0, longest - w.len()))
                    })
                    .collect();
                let n = all.len();
                Some((
                    Tensor::from_vec(flat, (n, longest), device)?,
                    all.iter().map(|w| w.len()).collect(),
                ))
            }
            (Some(_), None) => bail!("this tagger reads characters: give each word's"),
            (None, _) => None,
        };
        Ok(TaggerBatch {
            words: Tensor::from_vec(ids, (words.len(), t), device)?,
            lengths,
            chars,
        })
    }

    /// Tag scores `[batch, time, num_tags]` (zero rows' scores at padding are never used).
    pub fn emissions(&self, batch: &TaggerBatch, ctx: &mut Ctx) -> Result<Tensor> {
        let (b, t) = batch.words.dims2()?;
        let mut x = self.embed.forward(&batch.words)?;
        if let (Some(enc), Some((chars, char_lengths))) = (&self.chars, &batch.chars) {
            let e = enc.embed.forward(chars)?;
            let run = enc.rnn.forward(&e, Some(char_lengths), None, ctx)?;
            // [words, 2·char_hidden]: the forward state after the last character beside the
            // backward state after the first.
            let per_word = run.h_n.transpose(0, 1)?.reshape((char_lengths.len(), ()))?;
            // Place each real word's vector at its position; padding takes a zero row.
            let width = per_word.dim(1)?;
            let table = Tensor::cat(
                &[Tensor::zeros((1, width), DType::F32, x.device())?, per_word],
                0,
            )?;
            let mut at = Vec::with_capacity(b * t);
            let mut next = 1u32;
            for &len in &batch.lengths {
                for s in 0..t {
                    at.push(if s < len {
                        next += 1;
                        next - 1
                    } else {
                        0
                    });
                }
            }
            let grid = table
                .index_select(&Tensor::from_vec(at, b * t, x.device())?, 0)?
                .reshape((b, t, width))?;
            x = Tensor::cat(&[x, grid], 2)?;
        }
        let x = self.drop.forward(&x, ctx)?;
        let run = self.rnn.forward(&x, Some(&batch.lengths), None, ctx)?;
        self.out.forward(&self.drop.forward(&run.output, ctx)?)
    }

    /// The mean loss of a batch against `tags` (one per word): the CRF's negative
    /// log-likelihood per sentence, or cross-entropy per word.
    pub fn loss(&self, batch: &TaggerBatch, tags: &[Vec<u32>], ctx: &mut Ctx) -> Result<Tensor> {
        let e = self.emissions(batch, ctx)?;
        if let Some(crf) = &self.crf {
            return crf.loss(&e, tags, &batch.lengths);
        }
        let t = e.dim(1)?;
        const IGNORE: u32 = u32::MAX;
        let mut targets = Vec::with_capacity(tags.len() * t);
        for (seq, &len) in tags.iter().zip(&batch.lengths) {
            if seq.len() != len {
                bail!("{} tags for a sentence of {len} words", seq.len());
            }
            targets.extend(
                seq.iter()
                    .copied()
                    .chain(std::iter::repeat_n(IGNORE, t - len)),
            );
        }
        let n = targets.len();
        let targets = Tensor::from_vec(targets, n, e.device())?.to_dtype(DType::I64)?;
        lingo_kernels::cross_entropy(
            &e,
            &targets,
            lingo_kernels::CrossEntropy {
                ignore_index: Some(IGNORE as i64),
                ..Default::default()
            },
        )
    }

    /// The best tags of each sentence: Viterbi through the CRF, or each position's best score.
    pub fn decode(&self, batch: &TaggerBatch) -> Result<Vec<Vec<u32>>> {
        let e = self.emissions(batch, &mut Ctx::eval())?;
        if let Some(crf) = &self.crf {
            return crf.viterbi(&e, &batch.lengths);
        }
        let best = e.argmax(D::Minus1)?.to_vec2::<u32>()?;
        Ok(best
            .into_iter()
            .zip(&batch.lengths)
            .map(|(mut r, &l)| {
                r.truncate(l);
                r
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lingo_nn::ParamStore;

    fn config(cell: CellKind, pooling: Pooling, bidirectional: bool) -> RnnClassifierConfig {
        RnnClassifierConfig {
            vocab_size: 12,
            embed_dim: 6,
            cell,
            hidden_size: 5,
            num_layers: 2,
            bidirectional,
            pooling,
            attention_dim: 4,
            dropout: 0.0,
            num_labels: 3,
            pad_id: 0,
        }
    }

    const SENTENCES: [&[u32]; 3] = [&[3, 4, 5, 6, 7], &[8, 9], &[10, 11, 2, 1]];

    #[test]
    fn every_parameter_receives_a_gradient_for_every_pooling() -> Result<()> {
        for pooling in [
            Pooling::Last,
            Pooling::Mean,
            Pooling::Max,
            Pooling::Attention,
        ] {
            for (cell, bidirectional) in [
                (CellKind::Lstm, true),
                (CellKind::Gru, false),
                (CellKind::Rnn, true),
            ] {
                let store = ParamStore::new(0, &Device::Cpu);
                let model =
                    RnnClassifier::new(config(cell, pooling, bidirectional), &store.root())?;
                let (ids, lengths) = model.batch(&SENTENCES, &Device::Cpu)?;
                let loss = model.loss(&ids, &lengths, &[0, 2, 1], &mut Ctx::eval())?;
                let grads = loss.backward()?;
                let missing = store.without_gradient(&grads)?;
                // The padding row of the embedding table is the one parameter row kept at zero.
                assert!(
                    missing.is_empty(),
                    "{pooling:?} {cell:?}: no gradient for {missing:?}"
                );
            }
        }
        Ok(())
    }

    /// Padding never changes a sentence's logits: each sentence scores alone as it does in a batch.
    #[test]
    fn padding_changes_nothing() -> Result<()> {
        for pooling in [
            Pooling::Last,
            Pooling::Mean,
            Pooling::Max,
            Pooling::Attention,
        ] {
            let store = ParamStore::new(1, &Device::Cpu);
            let model = RnnClassifier::new(config(CellKind::Lstm, pooling, true), &store.root())?;
            let (_, together) = model.predict(&SENTENCES)?;
            for (i, s) in SENTENCES.iter().enumerate() {
                let (_, alone) = model.predict(&[s])?;
                let d = (together.get(i)? - alone.get(0)?)?
                    .abs()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                assert!(d < 1e-5, "{pooling:?}, sentence {i}: {d}");
            }
        }
        Ok(())
    }

    /// Each parameter's gradient agrees with finite differences of the loss along a random
    /// direction.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        use lingo_kernels::gradcheck::check_directions;
        let poolings = [
            Pooling::Last,
            Pooling::Mean,
            Pooling::Max,
            Pooling::Attention,
        ];
        for (k, pooling) in poolings.into_iter().enumerate() {
            let store = ParamStore::new(k as u64, &Device::Cpu);
            let model = RnnClassifier::new(config(CellKind::Lstm, pooling, true), &store.root())?;
            let (ids, lengths) = model.batch(&SENTENCES, &Device::Cpu)?;
            let loss = || -> Result<f64> {
                Ok(loss_tensor(&model, &ids, &lengths)?.to_scalar::<f32>()? as f64)
            };
            let grads = loss_tensor(&model, &ids, &lengths)?.backward()?;
            if let Err(e) = check_directions(&store.named(), &grads, &loss, 1e-2, (1e-4, 1e-2), 100)
            {
                panic!("{pooling:?} {e}");
            }
        }
        Ok(())
    }

    fn loss_tensor(model: &RnnClassifier, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        model.loss(ids, lengths, &[0, 2, 1], &mut Ctx::eval())
    }

    fn tagger_config(crf: bool, chars: bool) -> RnnTaggerConfig {
        RnnTaggerConfig {
            vocab_size: 12,
            embed_dim: 6,
            char_vocab_size: if chars { 9 } else { 0 },
            char_embed_dim: 4,
            char_hidden_size: 3,
            cell: CellKind::Lstm,
            hidden_size: 5,
            num_layers: 1,
            bidirectional: true,
            dropout: 0.0,
            num_tags: 4,
            crf,
            pad_id: 0,
        }
    }

    fn chars_of(sentences: &[&[u32]]) -> Vec<Vec<Vec<u32>>> {
        (sentences.iter())
            .map(|s| {
                s.iter()
                    .map(|&w| (0..1 + w % 4).map(|c| 1 + (w + c) % 8).collect())
                    .collect()
            })
            .collect()
    }

    const TAGS: [&[u32]; 3] = [&[0, 1, 2, 3, 0], &[3, 3], &[1, 0, 2, 2]];

    #[test]
    fn every_tagger_parameter_receives_a_gradient() -> Result<()> {
        for (crf, chars) in [(false, false), (true, false), (false, true), (true, true)] {
            let store = ParamStore::new(2, &Device::Cpu);
            let model = RnnTagger::new(tagger_config(crf, chars), &store.root())?;
            let c = chars_of(&SENTENCES);
            let batch = model.batch(&SENTENCES, chars.then_some(c.as_slice()), &Device::Cpu)?;
            let tags: Vec<Vec<u32>> = TAGS.iter().map(|t| t.to_vec()).collect();
            let loss = model.loss(&batch, &tags, &mut Ctx::eval())?;
            let missing = store.without_gradient(&loss.backward()?)?;
            assert!(
                missing.is_empty(),
                "crf {crf}, chars {chars}: no gradient for {missing:?}"
            );
            let decoded = model.decode(&batch)?;
            assert_eq!(
                decoded.iter().map(|d| d.len()).collect::<Vec<_>>(),
                [5, 2, 4]
            );
        }
        Ok(())
    }

    /// Padding never changes a sentence's tag scores, nor (through the CRF) its loss.
    #[test]
    fn tagger_padding_changes_nothing() -> Result<()> {
        let store = ParamStore::new(3, &Device::Cpu);
        let model = RnnTagger::new(tagger_config(true, true), &store.root())?;
        let c = chars_of(&SENTENCES);
        let batch = model.batch(&SENTENCES, Some(&c), &Device::Cpu)?;
        let together = model.emissions(&batch, &mut Ctx::eval())?;
        let tags: Vec<Vec<u32>> = TAGS.iter().map(|t| t.to_vec()).collect();
        let mut sum = 0.0;
        for (i, s) in SENTENCES.iter().enumerate() {
            let alone = model.batch(&[s], Some(&c[i..i + 1]), &Device::Cpu)?;
            let e = model.emissions(&alone, &mut Ctx::eval())?;
            let d = (together.get(i)?.narrow(0, 0, s.len())? - e.get(0)?)?
                .abs()?
                .max_all()?;
            assert!(d.to_scalar::<f32>()? < 1e-5, "sentence {i}");
            sum += model
                .loss(&alone, &tags[i..i + 1], &mut Ctx::eval())?
                .to_scalar::<f32>()?;
        }
        let mean = model
            .loss(&batch, &tags, &mut Ctx::eval())?
            .to_scalar::<f32>()?;
        assert!((mean - sum / 3.0).abs() < 1e-4, "{mean} vs {}", sum / 3.0);
        Ok(())
    }
}
