//! Character-level and byte-level BPE tokenizers, trained on a corpus and saved as a standard
//! `tokenizer.json`.
//!
//! The character tokenizer is a BPE model whose vocabulary is the corpus's characters and which has no
//! merges, with a `Fuse` decoder; it therefore round-trips through any `tokenizers` implementation.
//! The byte-level BPE is GPT-2's recipe: byte-level pre-tokenizer, BPE merges learned by the trainer,
//! byte-level decoder.

use crate::{DataError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, DecoderWrapper, ModelWrapper, PreTokenizerWrapper};

/// Which tokenizer to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TokenizerKind {
    /// One token per character of the corpus (plus `<unk>`).
    Char,
    /// Byte-level BPE with this many tokens.
    ByteBpe { vocab_size: usize },
    /// Whole words and punctuation marks (split on whitespace and punctuation), the `vocab_size` most
    /// frequent ones; the rest become `<unk>`.
    Word { vocab_size: usize },
}

/// The unknown-character token of the character tokenizer; always the last id.
pub const UNK: &str = "<unk>";
/// The end-of-text token of the byte-level BPE tokenizer.
pub const END_OF_TEXT: &str = "<|endoftext|>";

#[derive(Clone)]
pub struct Tokenizer {
    /// The tokenizer without the padding and truncation its file may configure: as with
    /// `transformers`, encoding a text never pads or cuts it unless a caller asks.
    inner: tokenizers::Tokenizer,
    /// The file's own padding and truncation, written back when the tokenizer is saved.
    padding: Option<tokenizers::PaddingParams>,
    truncation: Option<tokenizers::TruncationParams>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({} tokens)", self.vocab_size())
    }
}

fn tok_err(e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer(e.to_string())
}

/// A way for the processes of a run to agree on a tokenizer that one of them trains: called with
/// the training, it returns the tokenizer every process uses (see [`train_tokenizers_through`]).
pub type TrainingAgreement =
    dyn Fn(&mut dyn FnMut() -> Result<Tokenizer>) -> Result<Tokenizer> + Send + Sync;

static AGREEMENT: std::sync::OnceLock<Box<TrainingAgreement>> = std::sync::OnceLock::new();

/// Makes every tokenizer this process trains from now on go through `agree`. The `lingo` command
/// sets it under `mpirun`, so that rank 0 trains each tokenizer and sends it to the other ranks:
/// the `tokenizers` crate's trainers break ties in hash-map order, so two processes training on
/// the same text can end with different vocabularies. Set once; later calls are ignored.
pub fn train_tokenizers_through(agree: Box<TrainingAgreement>) {
    let _ = AGREEMENT.set(agree);
}

/// `train()`, or what the processes agreed on (see [`train_tokenizers_through`]).
pub(crate) fn agreed(train: impl FnOnce() -> Result<Tokenizer>) -> Result<Tokenizer> {
    match AGREEMENT.get() {
        None => train(),
        Some(agree) => {
            let mut once = Some(train);
            agree(&mut || match once.take() {
                Some(train) => train(),
                None => Err(DataError::Invalid("a tokenizer trained twice".into())),
            })
        }
    }
}

impl Tokenizer {
    /// Trains a tokenizer of `kind` on `text`.
    pub fn train(kind: TokenizerKind, text: &str) -> Result<Self> {
        Self::train_with_specials(kind, text, &[])
    }

    /// Trains a tokenizer whose first ids are the given special tokens, in order (e.g. `<pad>`, `<s>`,
    /// `</s>`, `<unk>` for sequence-to-sequence models). Special tokens in the input are matched whole.
    pub fn train_with_specials(kind: TokenizerKind, text: &str, specials: &[&str]) -> Result<Self> {
        agreed(|| Self::train_here(kind, text, specials))
    }

    fn train_here(kind: TokenizerKind, text: &str, specials: &[&str]) -> Result<Self> {
        if text.is_empty() {
            return Err(DataError::Invalid(
                "cannot train a tokenizer on empty text".into(),
            ));
        }
        let mut tok = match kind {
            TokenizerKind::Char => Self::train_char(text, specials)?,
            TokenizerKind::ByteBpe { vocab_size } => {
                Self::train_byte_bpe(text, vocab_size, specials)?
            }
            TokenizerKind::Word { vocab_size } => Self::train_word(text, vocab_size, specials)?,
        };
        let added: Vec<AddedToken> = specials
            .iter()
            .map(|s| AddedToken::from(s.to_string(), true))
            .collect();
        tok.inner.add_special_tokens(added).map_err(tok_err)?;
        Ok(tok)
    }

    fn train_char(text: &str, specials: &[&str]) -> Result<Self> {
        let chars: BTreeSet<char> = text.chars().collect();
        let mut vocab: ahash::AHashMap<String, u32> = ahash::AHashMap::new();
        for token in specials
            .iter()
            .map(|s| s.to_string())
            .chain(chars.iter().map(|c| c.to_string()))
        {
            let next = vocab.len() as u32;
            vocab.entry(token).or_insert(next);
        }
        let next = vocab.len() as u32;
        vocab.entry(UNK.to_string()).or_insert(next);
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .unk_token(UNK.to_string())
            // A whole corpus is one "word" to this model: caching it would only waste memory.
            .cache_capacity(0)
            .build()
            .map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(ModelWrapper::BPE(bpe));
        inner.with_decoder(Some(DecoderWrapper::Fuse(Fuse::new())));
        Ok(Tokenizer::from_inner(inner))
    }

    fn train_byte_bpe(text: &str, vocab_size: usize, specials: &[&str]) -> Result<Self> {
        if vocab_size < 257 {
            return Err(DataError::Invalid(format!(
                "byte-level BPE needs a vocab_size of at least 257, got {vocab_size}"
            )));
        }
        let mut inner = tokenizers::Tokenizer::new(ModelWrapper::BPE(BPE::default()));
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, true, true,
        ))));
        inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
        let trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(if specials.is_empty() {
                vec![AddedToken::from(END_OF_TEXT, true)]
            } else {
                specials
                    .iter()
                    .map(|s| AddedToken::from(s.to_string(), true))
                    .collect()
            })
            .build();
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        // Train on lines so the trainer sees the corpus in pieces of a sensible size.
        inner
            .train(&mut trainer, text.lines().map(|l| l.to_string()))
            .map_err(tok_err)?;
        Ok(Tokenizer::from_inner(inner))
    }

    fn train_word(text: &str, vocab_size: usize, specials: &[&str]) -> Result<Self> {
        let mut specials: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
        if !specials.iter().any(|s| s == UNK) {
            specials.push(UNK.to_string());
        }
        let model = WordLevel::builder()
            .unk_token(UNK.to_string())
            .build()
            .map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(ModelWrapper::WordLevel(model));
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Whitespace(Whitespace {})));
        let trainer = WordLevelTrainer::builder()
            .vocab_size(vocab_size)
            .show_progress(false)
            .special_tokens(
                specials
                    .iter()
                    .map(|s| AddedToken::from(s.clone(), true))
                    .collect(),
            )
            .build()
            .map_err(tok_err)?;
        let mut trainer = TrainerWrapper::WordLevelTrainer(trainer);
        inner
            .train(&mut trainer, text.lines().map(|l| l.to_string()))
            .map_err(tok_err)?;
        Ok(Tokenizer::from_inner(inner))
    }

    /// Wraps a `tokenizers` tokenizer.
    pub fn from_inner(mut inner: tokenizers::Tokenizer) -> Self {
        let padding = inner.get_padding().cloned();
        let truncation = inner.get_truncation().cloned();
        inner.with_padding(None);
        // Turning truncation off cannot fail.
        let _ = inner.with_truncation(None);
        Tokenizer {
            inner,
            padding,
            truncation,
        }
    }

    /// A tokenizer from `tokenizer.json` text, as [`Tokenizer::to_json`] writes it.
    pub fn from_json(text: &str) -> Result<Self> {
        let parsed = std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>());
        match parsed {
            Ok(Ok(inner)) => Ok(Tokenizer::from_inner(inner)),
            Ok(Err(e)) => Err(tok_err(e)),
            Err(_) => Err(tok_err("the tokenizers crate panicked reading it")),
        }
    }

    /// Loads a `tokenizer.json` (Lingo's own or any Hugging Face one).
    pub fn load(path: &Path) -> Result<Self> {
        let invalid = |why: String| DataError::File {
            path: path.into(),
            message: format!("not a valid tokenizer.json ({why})"),
        };
        // `tokenizers` panics on some malformed files (found by fuzzing: a decoder whose keys
        // are not strings) instead of returning its error; either way the answer is an error
        // that names the file.
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_file(path));
        let inner = match parsed {
            Ok(result) => result.map_err(|e| invalid(e.to_string()))?,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the tokenizers crate panicked reading it".into());
                return Err(invalid(why));
            }
        };
        Ok(Tokenizer::from_inner(inner))
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        let mut file = self.inner.clone();
        file.with_padding(self.padding.clone());
        file.with_truncation(self.truncation.clone())
            .map_err(tok_err)?;
        file.to_string(true).map_err(tok_err)
    }

    /// Writes `tokenizer.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        lingo_nn::io::write_atomic(path, self.to_json()?.as_bytes()).map_err(|e| DataError::File {
            path: path.into(),
            message: e.to_string(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Each of `texts` encoded without special tokens, in parallel.
    pub fn encode_many(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(tok_err)?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Decodes, leaving out special tokens (padding, sentence markers).
    pub fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tok_err)
    }

    /// Each token's text, for labelling attention maps.
    pub fn tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| self.inner.id_to_token(i).unwrap_or_else(|| format!("#{i}")))
            .collect()
    }

    /// The ids of the special tokens (`[CLS]`, `<pad>`, sentinels, …), in id order.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = (self.inner.get_added_tokens_decoder().into_iter())
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The padding id: the tokenizer's padding setting, else its `[PAD]` or `<pad>` token, else 0.
    pub fn pad_id(&self) -> u32 {
        (self.padding.as_ref().map(|p| p.pad_id))
            .or_else(|| ["[PAD]", "<pad>"].iter().find_map(|t| self.token_to_id(t)))
            .unwrap_or(0)
    }

    /// The mask token (BERT's `[MASK]` or RoBERTa's `<mask>`) and its id, if the vocabulary has one.
    pub fn mask_token(&self) -> Option<(&'static str, u32)> {
        ["[MASK]", "<mask>"]
            .into_iter()
            .find_map(|t| Some((t, self.token_to_id(t)?)))
    }

    /// `text` encoded as a model takes it: with the special tokens the tokenizer's post-processor
    /// adds (`[CLS] … [SEP]`, `… </s>`), offsets and word ids.
    pub fn encode_input(&self, text: &str) -> Result<crate::Encoded> {
        let enc = self.inner.encode(text, true).map_err(tok_err)?;
        Ok(crate::Encoded::from(&enc))
    }

    /// `texts` encoded as model inputs and padded to the longest (ids, attention mask, token
    /// types), on the CPU.
    pub fn batch(&self, texts: &[&str]) -> Result<crate::Batch> {
        if texts.is_empty() {
            return Err(DataError::Invalid(
                "an empty batch: give at least one text".into(),
            ));
        }
        let encoded = texts
            .iter()
            .map(|t| self.encode_input(t))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&crate::Encoded> = encoded.iter().collect();
        crate::collate(&refs, self.pad_id(), &candle_core::Device::Cpu)
            .map_err(|e| DataError::Invalid(e.to_string()))
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n";

    #[test]
    fn char_tokenizer_round_trips_through_tokenizer_json() -> Result<()> {
        let tok = Tokenizer::train(TokenizerKind::Char, TEXT)?;
        let ids = tok.encode(TEXT)?;
        assert_eq!(ids.len(), TEXT.chars().count());
        assert_eq!(tok.decode(&ids)?, TEXT);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path)?;
        let again = Tokenizer::load(&path)?;
        assert_eq!(again.encode(TEXT)?, ids);
        assert_eq!(again.vocab_size(), tok.vocab_size());
        // Unseen characters map to <unk> rather than vanishing.
        assert_eq!(
            tok.encode("Fé")?,
            vec![tok.token_to_id("F").unwrap(), tok.token_to_id(UNK).unwrap()]
        );
        Ok(())
    }

    #[test]
    fn special_tokens_come_first_and_are_skipped_when_decoding() -> Result<()> {
        let specials = ["<pad>", "<s>", "</s>", "<unk>"];
        let tok = Tokenizer::train_with_specials(TokenizerKind::Char, "2021-03-03", &specials)?;
        for (i, s) in specials.iter().enumerate() {
            assert_eq!(tok.token_to_id(s), Some(i as u32));
        }
        let ids = tok.encode("<s>2021</s>")?;
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&2));
        assert_eq!(tok.decode_text(&ids)?, "2021");
        assert_eq!(tok.encode("x")?, vec![3], "unknown characters map to <unk>");
        Ok(())
    }

    #[test]
    fn word_tokenizer_keeps_frequent_words_and_splits_punctuation() -> Result<()> {
        let text = "a man rides a horse .\na woman rides a bike, fast.\n".repeat(3);
        let tok = Tokenizer::train_with_specials(
            TokenizerKind::Word { vocab_size: 50 },
            &text,
            &["<pad>", "<s>", "</s>", "<unk>"],
        )?;
        assert_eq!(tok.token_to_id("<unk>"), Some(3));
        let ids = tok.encode("a man rides a zebra.")?;
        assert_eq!(tok.decode(&ids)?, "a man rides a <unk> .");
        Ok(())
    }

    #[test]
    fn byte_bpe_round_trips_any_text() -> Result<()> {
        let corpus = TEXT.repeat(20);
        let tok = Tokenizer::train(TokenizerKind::ByteBpe { vocab_size: 300 }, &corpus)?;
        assert!(
            tok.vocab_size() > 257 && tok.vocab_size() <= 300,
            "{}",
            tok.vocab_size()
        );
        let text = "Speak, citizen — naïve 東京!\n";
        let ids = tok.encode(text)?;
        assert_eq!(tok.decode(&ids)?, text);
        assert!(
            tok.encode("speak, speak")?.len() < "speak, speak".len(),
            "merges were learned"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path)?;
        assert_eq!(Tokenizer::load(&path)?.encode(text)?, ids);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        assert!(Tokenizer::train(TokenizerKind::Char, "")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = Tokenizer::load(&path).err().unwrap().to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("not a valid"),
            "{err}"
        );
    }
}
