//! Training each family's tokenizer on a corpus, with the `tokenizers` crate's trainers, into a
//! folder `transformers`' `AutoTokenizer` loads and encodes identically:
//!
//! - **WordPiece** (BERT): the BERT normaliser (clean-up, CJK spacing, lower-casing and accent
//!   stripping unless cased), the BERT pre-tokeniser (whitespace and punctuation), `##`
//!   continuations; `[PAD] [UNK] [CLS] [SEP] [MASK]` are ids 0–4; inputs become `[CLS] A [SEP]`
//!   and `[CLS] A [SEP] B [SEP]` with segment ids.
//! - **Byte-level BPE** (GPT-2, RoBERTa): every byte is a symbol, so no text is unknown. GPT-2's
//!   style has the one special `<|endoftext|>` and adds nothing to inputs; RoBERTa's has
//!   `<s> <pad> </s> <unk> <mask>` and makes `<s> A </s>` and `<s> A </s></s> B </s>`.
//! - **Unigram** (T5, SentencePiece-style): NFKC, runs of spaces collapsed, `▁` marking word
//!   starts; `<pad> </s> <unk>` are ids 0–2, inputs end with `</s>`, and the span-corruption
//!   sentinels `<extra_id_0>` … `<extra_id_{n-1}>` take the last ids, `<extra_id_0>` the very
//!   last, as in T5's vocabulary.

use crate::tokenizer::Tokenizer;
use crate::{DataError, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::normalizers::replace::{Replace, ReplacePattern};
use tokenizers::normalizers::strip::Strip;
use tokenizers::normalizers::unicode::NFKC;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper,
};

/// A tokenizer scheme and its options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scheme {
    /// BERT's WordPiece; `lowercase` also strips accents, as `bert-base-uncased` does.
    WordPiece { lowercase: bool },
    /// Byte-level BPE in GPT-2's or RoBERTa's style.
    Bpe { style: BpeStyle },
    /// T5's Unigram with `sentinels` span-corruption tokens.
    Unigram { sentinels: usize },
}

/// Which byte-level BPE family's special tokens and input template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BpeStyle {
    Gpt2,
    Roberta,
}

/// What to train: a scheme, the vocabulary size (special tokens and sentinels included) and the
/// fewest occurrences a merge or word needs (WordPiece and BPE).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerSpec {
    pub scheme: Scheme,
    pub vocab_size: usize,
    pub min_frequency: u64,
}

/// The special tokens of a scheme by role, as `special_tokens_map.json` names them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecialTokens {
    pub bos: Option<&'static str>,
    pub eos: Option<&'static str>,
    pub unk: Option<&'static str>,
    pub sep: Option<&'static str>,
    pub pad: Option<&'static str>,
    pub cls: Option<&'static str>,
    pub mask: Option<&'static str>,
}

impl SpecialTokens {
    fn roles(&self) -> [(&'static str, Option<&'static str>); 7] {
        [
            ("bos_token", self.bos),
            ("eos_token", self.eos),
            ("unk_token", self.unk),
            ("sep_token", self.sep),
            ("pad_token", self.pad),
            ("cls_token", self.cls),
            ("mask_token", self.mask),
        ]
    }
}

/// T5's name for span-corruption sentinel `i`.
pub fn sentinel(i: usize) -> String {
    format!("<extra_id_{i}>")
}

impl TokenizerSpec {
    /// The special tokens the trainer puts first, in id order (sentinels come last, apart).
    pub fn specials(&self) -> Vec<&'static str> {
        match &self.scheme {
            Scheme::WordPiece { .. } => vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            Scheme::Bpe {
                style: BpeStyle::Gpt2,
            } => vec!["<|endoftext|>"],
            Scheme::Bpe {
                style: BpeStyle::Roberta,
            } => vec!["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            Scheme::Unigram { .. } => vec!["<pad>", "</s>", "<unk>"],
        }
    }

    /// The special tokens by role.
    pub fn roles(&self) -> SpecialTokens {
        match &self.scheme {
            Scheme::WordPiece { .. } => SpecialTokens {
                unk: Some("[UNK]"),
                sep: Some("[SEP]"),
                pad: Some("[PAD]"),
                cls: Some("[CLS]"),
                mask: Some("[MASK]"),
                ..Default::default()
            },
            Scheme::Bpe {
                style: BpeStyle::Gpt2,
            } => SpecialTokens {
                bos: Some("<|endoftext|>"),
                eos: Some("<|endoftext|>"),
                unk: Some("<|endoftext|>"),
                ..Default::default()
            },
            Scheme::Bpe {
                style: BpeStyle::Roberta,
            } => SpecialTokens {
                bos: Some("<s>"),
                eos: Some("</s>"),
                unk: Some("<unk>"),
                sep: Some("</s>"),
                pad: Some("<pad>"),
                cls: Some("<s>"),
                mask: Some("<mask>"),
            },
            Scheme::Unigram { .. } => SpecialTokens {
                eos: Some("</s>"),
                unk: Some("<unk>"),
                pad: Some("<pad>"),
                ..Default::default()
            },
        }
    }

    /// The smallest vocabulary the scheme can have: its special tokens and sentinels, and for
    /// byte-level BPE the 256 bytes.
    pub fn min_vocab_size(&self) -> usize {
        let specials = self.specials().len();
        match &self.scheme {
            Scheme::WordPiece { .. } => specials + 1,
            Scheme::Bpe { .. } => specials + 256,
            Scheme::Unigram { sentinels } => specials + sentinels + 1,
        }
    }

    /// Trains on `lines` (empty lines are skipped). An error while reading the lines stops
    /// training and is returned.
    pub fn train(&self, lines: impl Iterator<Item = Result<String>> + Send) -> Result<Tokenizer> {
        crate::tokenizer::agreed(|| self.train_here(lines))
    }

    fn train_here(&self, lines: impl Iterator<Item = Result<String>> + Send) -> Result<Tokenizer> {
        let min = self.min_vocab_size();
        if self.vocab_size < min {
            return Err(DataError::Invalid(format!(
                "vocab_size {} is too small: the {} tokenizer needs room for {} (special tokens {}{})",
                self.vocab_size,
                self.kind_name(),
                min,
                self.specials().join(" "),
                match &self.scheme {
                    Scheme::Bpe { .. } => ", and the 256 bytes".to_string(),
                    Scheme::Unigram { sentinels } => format!(", {sentinels} sentinels, and a piece"),
                    Scheme::WordPiece { .. } => ", and a piece".to_string(),
                }
            )));
        }
        let first_error = std::sync::Mutex::new(None);
        let mut text = lines
            .map_while(|l| match l {
                Ok(l) => Some(l),
                Err(e) => {
                    *first_error.lock().expect("not poisoned") = Some(e);
                    None
                }
            })
            .filter(|l| !l.trim().is_empty())
            .peekable();
        // The trainers are not all safe on no input (the Unigram one panics): look first.
        if text.peek().is_none() {
            if let Some(e) = first_error.into_inner().expect("not poisoned") {
                return Err(e);
            }
            return Err(DataError::Invalid(
                "the corpus holds no text to train a tokenizer on".into(),
            ));
        }
        let specials = self.added_specials();
        let mut inner = self.untrained()?;
        let mut trainer = match &self.scheme {
            Scheme::WordPiece { .. } => TrainerWrapper::WordPieceTrainer(
                WordPieceTrainer::builder()
                    .vocab_size(self.vocab_size)
                    .min_frequency(self.min_frequency)
                    .special_tokens(specials)
                    .show_progress(false)
                    .build(),
            ),
            Scheme::Bpe { .. } => TrainerWrapper::BpeTrainer(
                BpeTrainer::builder()
                    .vocab_size(self.vocab_size)
                    .min_frequency(self.min_frequency)
                    .special_tokens(specials)
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .show_progress(false)
                    .build(),
            ),
            Scheme::Unigram { sentinels } => TrainerWrapper::UnigramTrainer(
                UnigramTrainer::builder()
                    .vocab_size((self.vocab_size - sentinels) as u32)
                    .special_tokens(specials)
                    .unk_token(Some("<unk>".into()))
                    .show_progress(false)
                    .build()
                    .map_err(|e| DataError::Tokenizer(e.to_string()))?,
            ),
        };
        let trained = inner.train(&mut trainer, text);
        if let Some(e) = first_error.into_inner().expect("not poisoned") {
            return Err(e);
        }
        trained.map_err(|e| DataError::Tokenizer(format!("training failed: {e}")))?;
        let mut added = self.added_specials();
        if let Scheme::Unigram { sentinels } = self.scheme {
            // Highest sentinel first, so `<extra_id_0>` gets the last id.
            added.extend(
                (0..sentinels)
                    .rev()
                    .map(|i| AddedToken::from(sentinel(i), true)),
            );
        }
        inner
            .add_special_tokens(added)
            .map_err(|e| DataError::Tokenizer(e.to_string()))?;
        self.attach_post_processor(&mut inner)?;
        Ok(Tokenizer::from_inner(inner))
    }

    /// The special tokens as the trainer and the tokenizer take them. RoBERTa's mask takes the
    /// space before it, so `a <mask>` masks the word ` b`.
    fn added_specials(&self) -> Vec<AddedToken> {
        self.specials()
            .iter()
            .map(|s| AddedToken::from(s.to_string(), true).lstrip(*s == "<mask>"))
            .collect()
    }

    fn kind_name(&self) -> &'static str {
        match &self.scheme {
            Scheme::WordPiece { .. } => "WordPiece",
            Scheme::Bpe { .. } => "byte-level BPE",
            Scheme::Unigram { .. } => "Unigram",
        }
    }

    /// The pipeline around the model, before training.
    fn untrained(&self) -> Result<tokenizers::Tokenizer> {
        let err = |e: tokenizers::Error| DataError::Tokenizer(e.to_string());
        Ok(match &self.scheme {
            Scheme::WordPiece { lowercase } => {
                let model = WordPiece::builder()
                    .unk_token("[UNK]".into())
                    .build()
                    .map_err(err)?;
                let mut t = tokenizers::Tokenizer::new(ModelWrapper::WordPiece(model));
                t.with_normalizer(Some(NormalizerWrapper::BertNormalizer(
                    BertNormalizer::new(true, true, None, *lowercase),
                )))
                .map_err(err)?;
                t.with_pre_tokenizer(Some(PreTokenizerWrapper::BertPreTokenizer(
                    BertPreTokenizer,
                )));
                t.with_decoder(Some(DecoderWrapper::WordPiece(WordPieceDecoder::default())));
                t
            }
            Scheme::Bpe { .. } => {
                let mut t = tokenizers::Tokenizer::new(ModelWrapper::BPE(BPE::default()));
                t.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
                    false, true, true,
                ))));
                t.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
                t
            }
            Scheme::Unigram { .. } => {
                let mut t = tokenizers::Tokenizer::new(ModelWrapper::Unigram(Unigram::default()));
                let spaces =
                    Replace::new(ReplacePattern::Regex(" {2,}".into()), " ").map_err(err)?;
                t.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(
                    vec![
                        NormalizerWrapper::NFKC(NFKC),
                        NormalizerWrapper::Replace(spaces),
                        NormalizerWrapper::StripNormalizer(Strip::new(true, true)),
                    ],
                ))))
                .map_err(err)?;
                let metaspace = Metaspace::new('▁', PrependScheme::Always, true);
                t.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(metaspace.clone())));
                t.with_decoder(Some(DecoderWrapper::Metaspace(metaspace)));
                t
            }
        })
    }

    /// What encoding a model input adds around the text, once the special tokens have ids.
    fn attach_post_processor(&self, t: &mut tokenizers::Tokenizer) -> Result<()> {
        let id = |s: &str| -> Result<u32> {
            t.token_to_id(s)
                .ok_or_else(|| DataError::Tokenizer(format!("the trained vocabulary lacks {s}")))
        };
        let template = |single: &str, pair: &str, specials: Vec<(&str, u32)>| {
            TemplateProcessing::builder()
                .try_single(single)
                .and_then(|b| b.try_pair(pair))
                .map_err(|e| DataError::Tokenizer(e.to_string()))?
                .special_tokens(specials)
                .build()
                .map_err(|e| DataError::Tokenizer(e.to_string()))
        };
        let processor = match &self.scheme {
            Scheme::WordPiece { .. } => PostProcessorWrapper::Template(template(
                "[CLS] $A [SEP]",
                "[CLS] $A [SEP] $B:1 [SEP]:1",
                vec![("[CLS]", id("[CLS]")?), ("[SEP]", id("[SEP]")?)],
            )?),
            Scheme::Bpe {
                style: BpeStyle::Gpt2,
            } => PostProcessorWrapper::ByteLevel(ByteLevel::new(false, true, true)),
            Scheme::Bpe {
                style: BpeStyle::Roberta,
            } => PostProcessorWrapper::Roberta(
                RobertaProcessing::new(("</s>".into(), id("</s>")?), ("<s>".into(), id("<s>")?))
                    .trim_offsets(true)
                    .add_prefix_space(false),
            ),
            Scheme::Unigram { .. } => PostProcessorWrapper::Template(template(
                "$A </s>",
                "$A </s> $B </s>",
                vec![("</s>", id("</s>")?)],
            )?),
        };
        t.with_post_processor(Some(processor));
        Ok(())
    }

    /// The `transformers` tokenizer class of the scheme.
    fn tokenizer_class(&self) -> &'static str {
        match &self.scheme {
            Scheme::WordPiece { .. } => "BertTokenizer",
            Scheme::Bpe {
                style: BpeStyle::Gpt2,
            } => "GPT2Tokenizer",
            Scheme::Bpe {
                style: BpeStyle::Roberta,
            } => "RobertaTokenizer",
            Scheme::Unigram { .. } => "T5Tokenizer",
        }
    }

    /// Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into `dir`
    /// (atomically each), for inputs of at most `model_max_length` tokens.
    pub fn save(&self, tokenizer: &Tokenizer, dir: &Path, model_max_length: usize) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::File {
            path: dir.into(),
            message: e.to_string(),
        })?;
        tokenizer.save(&dir.join("tokenizer.json"))?;
        let mut map = serde_json::Map::new();
        let mut config = serde_json::Map::new();
        for (role, token) in self.roles().roles() {
            if let Some(token) = token {
                map.insert(role.into(), token.into());
                config.insert(role.into(), token.into());
            }
        }
        if let Scheme::Unigram { sentinels } = self.scheme {
            let extra: Vec<String> = (0..sentinels).map(sentinel).collect();
            map.insert("additional_special_tokens".into(), json!(extra));
            config.insert("extra_ids".into(), sentinels.into());
            config.insert("additional_special_tokens".into(), json!(extra));
        }
        config.insert("tokenizer_class".into(), self.tokenizer_class().into());
        config.insert("model_max_length".into(), model_max_length.into());
        if let Scheme::WordPiece { lowercase } = self.scheme {
            config.insert("do_lower_case".into(), lowercase.into());
        }
        if let Scheme::Bpe { .. } = self.scheme {
            config.insert("add_prefix_space".into(), false.into());
        }
        config.insert("clean_up_tokenization_spaces".into(), false.into());
        for (name, value) in [
            ("tokenizer_config.json", config),
            ("special_tokens_map.json", map),
        ] {
            let path = dir.join(name);
            let text = serde_json::to_string_pretty(&value).expect("plain JSON");
            lingo_nn::io::write_atomic(&path, text.as_bytes()).map_err(|e| DataError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<Result<String>> {
        let text = "The quick brown fox jumps over the lazy dog.\n\
                    Pre-training teaches a model the statistics of language.\n\
                    Tokenizers split unbelievable words into pieces, naïvely or not.\n";
        text.repeat(30).lines().map(|l| Ok(l.to_string())).collect()
    }

    fn spec(scheme: Scheme, vocab_size: usize) -> TokenizerSpec {
        TokenizerSpec {
            scheme,
            vocab_size,
            min_frequency: 1,
        }
    }

    #[test]
    fn wordpiece_has_berts_specials_template_and_continuations() -> Result<()> {
        let s = spec(Scheme::WordPiece { lowercase: true }, 200);
        let tok = s.train(corpus().into_iter())?;
        for (i, t) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .enumerate()
        {
            assert_eq!(tok.token_to_id(t), Some(i as u32));
        }
        let enc = tok
            .inner()
            .encode(("Quick FOX", "lazy dogs"), true)
            .unwrap();
        let tokens = enc.get_tokens();
        assert_eq!(tokens[0], "[CLS]");
        assert_eq!(tokens.iter().filter(|t| *t == "[SEP]").count(), 2);
        assert_eq!(tokens[1], "quick", "lower-cased");
        assert!(
            enc.get_type_ids().contains(&1),
            "the second segment is type 1"
        );
        let pieces = tok.inner().encode("unbelievably", false).unwrap();
        assert!(
            pieces
                .get_tokens()
                .iter()
                .skip(1)
                .all(|t| t.starts_with("##")),
            "{:?}",
            pieces.get_tokens()
        );
        Ok(())
    }

    #[test]
    fn bpe_styles_and_unigram_sentinels() -> Result<()> {
        let gpt2 = spec(
            Scheme::Bpe {
                style: BpeStyle::Gpt2,
            },
            300,
        )
        .train(corpus().into_iter())?;
        assert_eq!(gpt2.token_to_id("<|endoftext|>"), Some(0));
        let text = "naïve 東京 pieces!";
        assert_eq!(gpt2.decode(&gpt2.encode(text)?)?, text, "bytes round-trip");
        let roberta = spec(
            Scheme::Bpe {
                style: BpeStyle::Roberta,
            },
            300,
        )
        .train(corpus().into_iter())?;
        let ids = roberta.encode_input("the fox")?.ids;
        assert_eq!((ids[0], *ids.last().unwrap()), (0, 2), "<s> … </s>");
        let t5 = spec(Scheme::Unigram { sentinels: 10 }, 120).train(corpus().into_iter())?;
        // This corpus holds fewer pieces than asked for; the sentinels still take the last ids.
        let n = t5.vocab_size() as u32;
        assert!(n <= 120, "{n}");
        assert_eq!(t5.token_to_id("<extra_id_0>"), Some(n - 1));
        assert_eq!(t5.token_to_id("<extra_id_9>"), Some(n - 10));
        let ids = t5.encode_input("the  lazy dog")?.ids;
        assert_eq!(*ids.last().unwrap(), 1, "ends with </s>");
        assert_eq!(t5.decode_text(&ids)?, "the lazy dog");
        Ok(())
    }

    #[test]
    fn bad_vocabularies_and_corpora_are_clear_errors() {
        let err = spec(Scheme::WordPiece { lowercase: true }, 4)
            .train(corpus().into_iter())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vocab_size 4") && err.contains("[MASK]"),
            "{err}"
        );
        let err = spec(
            Scheme::Bpe {
                style: BpeStyle::Gpt2,
            },
            100,
        )
        .train(corpus().into_iter())
        .unwrap_err()
        .to_string();
        assert!(err.contains("256 bytes"), "{err}");
        let empty = vec![Ok(String::new()), Ok("  ".to_string())];
        let err = spec(Scheme::WordPiece { lowercase: true }, 100)
            .train(empty.into_iter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no text"), "{err}");
        let broken = vec![
            Ok("fine".to_string()),
            Err(DataError::Invalid("corpus.txt: line 2: not UTF-8".into())),
        ];
        let err = spec(Scheme::WordPiece { lowercase: true }, 100)
            .train(broken.into_iter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
