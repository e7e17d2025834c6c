//! One way into a model: [`Pretrained::load`] takes a folder or a Hub id, builds the model through
//! [`AutoModel::load`] and opens what runs it — its tokenizer (a Lingo sequence-to-sequence folder
//! has one per side) and its generation settings (`generation_config.json`, else `config.json`,
//! else a Lingo folder's `recipe.json`). Every pipeline, fine-tuning task and command loads through
//! it, and [`Pretrained::save`] writes the whole folder back.

use crate::error::{bad_input, io, Result};
use lingo_data::Tokenizer;
use lingo_generate::BeamConfig;
use lingo_models::auto::{AutoModel, LoadOptions, Loaded};
use lingo_models::hf::{LoadReport, StoredNames};
use lingo_nn::ParamStore;
use std::path::{Path, PathBuf};

/// A model with everything that runs it.
pub struct Pretrained {
    pub model: AutoModel,
    pub store: ParamStore,
    /// `config.json` as the model now is (a new head's architecture and labels, overridden
    /// dropout).
    pub config: serde_json::Value,
    /// What loading left out (a new head, unused checkpoint tensors).
    pub report: LoadReport,
    /// The tokenizer of the inputs (of the source side, for a Lingo sequence-to-sequence model).
    pub tokenizer: Tokenizer,
    /// A Lingo sequence-to-sequence model's target-side tokenizer; others share one.
    target_tokenizer: Option<Tokenizer>,
    /// `generation_config.json`, if the folder has one.
    pub generation: Option<serde_json::Value>,
    /// The folder it came from.
    pub dir: PathBuf,
    names: StoredNames,
}

impl Pretrained {
    /// Loads `model` — a folder, or a Hub id (`org/name[@revision]`) found in, or downloaded to,
    /// the Hugging Face cache; never downloading when `options.offline` or `HF_HUB_OFFLINE=1`.
    pub fn load(model: &str, options: &LoadOptions) -> Result<Self> {
        let dir = lingo_models::hub::resolve_model(model, options.offline)?;
        Self::open(&dir, options)
    }

    /// Loads the model folder `dir`.
    pub fn open(dir: &Path, options: &LoadOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(bad_input!("{}: no such model folder", dir.display()));
        }
        let Loaded {
            model,
            store,
            config,
            report,
            names,
        } = AutoModel::load(dir, options)?;
        let lingo_seq2seq = matches!(model, AutoModel::Transformer(_) | AutoModel::Rnn(_));
        let (tokenizer, target_tokenizer) = if lingo_seq2seq {
            (
                open_tokenizer(dir, "source_tokenizer.json")?,
                Some(open_tokenizer(dir, "target_tokenizer.json")?),
            )
        } else {
            (open_tokenizer(dir, "tokenizer.json")?, None)
        };
        let generation = match std::fs::read_to_string(dir.join("generation_config.json")) {
            Ok(text) => Some(serde_json::from_str(&text).map_err(|e| {
                bad_input!(
                    "{}: not valid JSON ({e})",
                    dir.join("generation_config.json").display()
                )
            })?),
            Err(_) => None,
        };
        let pretrained = Pretrained {
            model,
            store,
            config,
            report,
            tokenizer,
            target_tokenizer,
            generation,
            dir: dir.into(),
            names,
        };
        pretrained.check_vocabulary()?;
        Ok(pretrained)
    }

    /// Each parameter's name in the folder's layout, for saving.
    pub fn names(&self) -> StoredNames {
        self.names.clone()
    }

    /// The target side's tokenizer (the one tokenizer, unless a Lingo model has two).
    pub fn target_tokenizer(&self) -> &Tokenizer {
        self.target_tokenizer.as_ref().unwrap_or(&self.tokenizer)
    }

    /// A generation setting: `generation_config.json`'s, else `config.json`'s.
    pub fn generation_setting(&self, key: &str) -> Option<serde_json::Value> {
        let generation = self.generation.as_ref().and_then(|g| g.get(key));
        generation
            .or_else(|| self.config.get(key))
            .filter(|v| !v.is_null())
            .cloned()
    }

    /// Beam-search settings: a Hugging Face model's generation settings (the `transformers`
    /// defaults where none are given), or the beam section of a Lingo model's `recipe.json`.
    pub fn beam_config(&self) -> Result<BeamConfig> {
        if matches!(self.model, AutoModel::Transformer(_) | AutoModel::Rnn(_)) {
            let recipe = self.dir.join("recipe.json");
            return Ok(match std::fs::read_to_string(&recipe) {
                Ok(text) => {
                    let json: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| bad_input!("{}: not valid JSON ({e})", recipe.display()))?;
                    match json.get("beam") {
                        Some(beam) => serde_json::from_value(beam.clone())
                            .map_err(|e| bad_input!("{}: field `beam`: {e}", recipe.display()))?,
                        None => BeamConfig::default(),
                    }
                }
                Err(_) => BeamConfig::default(),
            });
        }
        BeamConfig::from_generation_config(|key| self.generation_setting(key))
            .map_err(|e| bad_input!("{}: generation settings: {e}", self.dir.display()))
    }

    /// Writes the folder: `config.json` and `model.safetensors` in the model's layout, its
    /// tokenizer file(s) and `generation_config.json` — what Lingo and (for Hugging Face
    /// families) `transformers` load.
    pub fn save(&self, dir: &Path) -> Result<()> {
        lingo_models::hf::save_folder(dir, &self.config, &self.store, &self.names)?;
        match &self.target_tokenizer {
            Some(target) => {
                self.tokenizer.save(&dir.join("source_tokenizer.json"))?;
                target.save(&dir.join("target_tokenizer.json"))?;
            }
            None => self.tokenizer.save(&dir.join("tokenizer.json"))?,
        }
        if let Some(generation) = &self.generation {
            let path = dir.join("generation_config.json");
            let text = serde_json::to_string_pretty(generation)?;
            lingo_nn::io::write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
        }
        copy_tokenizer_files(&self.dir, dir)
    }

    /// The tokenizers must cover the model's vocabulary: an id the model cannot embed is an error
    /// found at load time, not in the middle of a run.
    fn check_vocabulary(&self) -> Result<()> {
        let sides = [
            (
                &self.tokenizer,
                model_vocab(&self.config, "source"),
                "tokenizer",
            ),
            (
                self.target_tokenizer(),
                model_vocab(&self.config, "target"),
                "target tokenizer",
            ),
        ];
        for (tokenizer, vocab, what) in sides {
            if let Some(vocab) = vocab {
                if tokenizer.vocab_size() > vocab {
                    return Err(bad_input!(
                        "{}: the {what} has {} tokens but the model's vocabulary is {vocab}",
                        self.dir.display(),
                        tokenizer.vocab_size()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The vocabulary size a config gives for one side (`vocab_size`, or a Lingo seq2seq model's
/// `src_vocab_size` / `tgt_vocab_size`).
fn model_vocab(config: &serde_json::Value, side: &str) -> Option<usize> {
    let key = match side {
        "source" => "src_vocab_size",
        _ => "tgt_vocab_size",
    };
    (config.get(key).or_else(|| config.get("vocab_size")))
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
}

/// The files beside `tokenizer.json` that `transformers`' `AutoTokenizer` reads (the tokenizer's
/// class and settings, special tokens, the slow tokenizers' vocabularies).
const TOKENIZER_FILES: [&str; 10] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "source.spm",
    "target.spm",
];

/// Copies the tokenizer files `from` has (besides `tokenizer.json`) into `to`, so a folder Lingo
/// writes loads in `transformers` with the tokenizer class and settings it came with.
pub(crate) fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    if from == to {
        return Ok(());
    }
    for file in TOKENIZER_FILES {
        let source = from.join(file);
        if source.is_file() {
            let bytes = std::fs::read(&source).map_err(io(&source))?;
            let target = to.join(file);
            lingo_nn::io::write_atomic(&target, &bytes).map_err(io(&target))?;
        }
    }
    Ok(())
}

fn open_tokenizer(dir: &Path, file: &str) -> Result<Tokenizer> {
    let path = dir.join(file);
    if !path.is_file() {
        return Err(bad_input!(
            "{}: the model folder has no {file}",
            dir.display()
        ));
    }
    Ok(Tokenizer::load(&path)?)
}
