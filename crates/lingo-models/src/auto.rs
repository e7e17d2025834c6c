//! One way into a model folder: [`AutoModel::load`] reads `config.json` once, picks the family from
//! `model_type` (and the head from `architectures`, or [`LoadOptions::head`]), builds the model with
//! its parameters taken straight from the weights, and returns it with the config as the model now
//! is and a report of what loading left out — for Hugging Face folders (BERT, RoBERTa, ALBERT,
//! DistilBERT, ELECTRA, GPT-2, T5, BART, Marian) and Lingo's own (`lingo-gpt`,
//! `lingo-transformer`, `lingo-rnn-seq2seq`) alike. [`Loaded::save`] writes it back in its layout.

use crate::bart::Bart;
use crate::bert::{BertModel, Head};
use crate::config::ModelConfig;
use crate::contracts::{CausalLm, Seq2SeqTrain};
use crate::hf::{Checkpoint, LoadError, LoadReport, Lookup, StoredNames};
use crate::outputs::{ModelInputs, ModelOutput};
use crate::quantize::Quantization;
use crate::t5::T5;
use crate::transformer::Transformer;
use crate::{Gpt, RnnSeq2Seq};
use candle_core::{bail, DType, Device, Result};
use lingo_nn::{Ctx, ParamStore};
use std::path::Path;

/// A loaded model of one of the supported families.
pub enum AutoModel {
    /// The BERT family with its head.
    Encoder(BertModel),
    /// GPT-2, or a Lingo GPT.
    Gpt(Gpt),
    /// BART or Marian.
    Bart(Bart),
    T5(T5),
    /// Lingo's original Transformer encoder–decoder.
    Transformer(Transformer),
    /// Lingo's recurrent encoder–decoder.
    Rnn(RnnSeq2Seq),
}

/// How to load a model folder.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The head to build on a BERT-family encoder (default: the one `architectures` names); a head
    /// the checkpoint lacks is newly initialised from `seed` with the config's
    /// `initializer_range`, as `transformers` does.
    pub head: Option<Head>,
    /// Label names in id order, replacing the checkpoint's `id2label`; one label means regression.
    pub labels: Option<Vec<String>>,
    /// Seed of new weights' initialisation.
    pub seed: u64,
    /// Replaces every dropout probability of the checkpoint (hidden, attention, activation, the
    /// head's): what fine-tuning recipes call `dropout`.
    pub dropout: Option<f32>,
    /// Where the parameters live. Weights stored as f16 or bf16 are converted to f32, in which Lingo
    /// computes.
    pub device: Device,
    /// The dtype the model is saved back in (f32, f16 or bf16), recorded as `dtype` in its
    /// `config.json`. Default: the one `config.json` declares, else the stored weights' — so a bf16
    /// checkpoint stays bf16 on disk, as `transformers` keeps it. Lingo's own folders are f32.
    pub dtype: Option<DType>,
    /// Never download a Hub model (as `HF_HUB_OFFLINE=1`): only local folders and the cache.
    pub offline: bool,
    /// Parameters that may be missing from the checkpoint beyond a new head's (substrings of
    /// their names): they keep their seeded initialisation and are reported as newly initialised.
    pub allow_missing: Vec<String>,
    /// Ignore the weights: the folder's architecture with every parameter newly initialised
    /// from `seed` — the from-scratch baseline a pre-trained model is measured against.
    pub random_init: bool,
    /// Build every linear layer with int8 or bf16 weights for inference ([`crate::quantize`]). A
    /// folder saved int8 loads int8 whatever this says.
    pub quantize: Option<Quantization>,
}

impl LoadOptions {
    /// Labels `LABEL_0` … `LABEL_{n-1}`, as `transformers`' `num_labels = n` names them.
    pub fn with_num_labels(mut self, n: usize) -> Self {
        self.labels = Some((0..n).map(|i| format!("LABEL_{i}")).collect());
        self
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            head: None,
            labels: None,
            seed: 0,
            dropout: None,
            device: Device::Cpu,
            dtype: None,
            offline: false,
            allow_missing: Vec::new(),
            random_init: false,
            quantize: None,
        }
    }
}

/// A model loaded from a folder, with what it takes to save it back in the same layout.
pub struct Loaded {
    pub model: AutoModel,
    pub store: ParamStore,
    /// `config.json` as the model now is: a new head's architecture, new labels, overridden
    /// dropout, the dtype it is saved in.
    pub config: serde_json::Value,
    /// The weights newly initialised and the checkpoint tensors no parameter read, which
    /// [`LoadReport::warning`] words as `transformers` warns.
    pub report: LoadReport,
    /// Each parameter's name in the saved layout.
    pub names: StoredNames,
}

impl AutoModel {
    /// Opens the model folder `dir` and builds the model its `config.json` describes.
    pub fn load(dir: &Path, options: &LoadOptions) -> std::result::Result<Loaded, LoadError> {
        let mut checkpoint = if options.random_init {
            Checkpoint::fresh(dir, crate::hf::read_config(dir)?, &options.device)
        } else {
            Checkpoint::open(dir, &options.device)?
        };
        if options.quantize.is_some() {
            checkpoint.quantize = options.quantize;
        }
        Self::build(checkpoint, options)
    }

    /// A new model of the architecture `config` (a `config.json`) describes, every parameter
    /// initialised from `options.seed` as the family's `transformers` class initialises it
    /// (`initializer_range`); `dir` names it in messages. Saving it writes a folder both Lingo
    /// and `transformers` load.
    pub fn init(
        dir: &Path,
        config: serde_json::Value,
        options: &LoadOptions,
    ) -> std::result::Result<Loaded, LoadError> {
        let mut checkpoint = Checkpoint::fresh(dir, config, &options.device);
        if options.quantize.is_some() {
            checkpoint.quantize = options.quantize;
        }
        Self::build(checkpoint, options)
    }

    fn build(
        checkpoint: Checkpoint,
        options: &LoadOptions,
    ) -> std::result::Result<Loaded, LoadError> {
        let model_type = checkpoint.model_type()?.to_string();
        if options.head.is_some() && !crate::bert::is_bert_family(&model_type) {
            return Err(checkpoint.invalid_config(format!(
                "a {model_type} model has one head; choosing a head is for BERT-family encoders"
            )));
        }
        let mut loaded = match model_type.as_str() {
            t if crate::bert::is_bert_family(t) => BertModel::load(&checkpoint, options)?,
            "gpt2" => Gpt::load_gpt2(&checkpoint, options)?,
            "t5" => T5::load(&checkpoint, options)?,
            "bart" | "marian" => Bart::load(&checkpoint, options)?,
            t if t.starts_with("lingo-") => load_lingo(&checkpoint, options)?,
            other => {
                return Err(checkpoint.invalid_config(format!(
                    "model_type `{other}` is not supported (supported: bert, roberta, xlm-roberta, electra, albert, distilbert, gpt2, t5, bart, marian, lingo-gpt, lingo-transformer, lingo-rnn-seq2seq)"
                )))
            }
        };
        if model_type.starts_with("lingo-") {
            if let Some(d) = options.dtype.filter(|d| *d != DType::F32) {
                return Err(checkpoint.invalid_config(format!(
                    "a {model_type} folder is stored in f32; dtype {d:?} is for Hugging Face folders"
                )));
            }
        } else {
            let dtype = match options.dtype {
                Some(d) if crate::hf::dtype_name(d).is_none() => {
                    return Err(checkpoint.invalid_config(format!(
                        "weights are saved as float32, float16 or bfloat16, not {d:?}"
                    )))
                }
                Some(d) => d,
                // A model held in bf16 is saved as the bfloat16 folder it is.
                None if checkpoint.quantize == Some(Quantization::Bf16) => DType::BF16,
                None => checkpoint.saved_dtype()?,
            };
            crate::hf::set_saved_dtype(&mut loaded.config, dtype);
        }
        let entry = checkpoint.quantize.and_then(|q| q.config_entry());
        if let (Some(entry), Some(map)) = (entry, loaded.config.as_object_mut()) {
            map.insert("quantization_config".into(), entry);
        }
        Ok(loaded)
    }

    /// The one forward pass: the head's output (or a bare encoder's last hidden state) with every
    /// layer's states, in `ctx`'s mode.
    pub fn forward(&self, inputs: &ModelInputs, ctx: &mut Ctx) -> Result<ModelOutput> {
        match self {
            AutoModel::Encoder(m) => m.forward(inputs, ctx),
            AutoModel::Gpt(m) => m.forward(inputs, ctx),
            AutoModel::Bart(m) => m.forward(inputs, ctx),
            AutoModel::T5(m) => m.forward(inputs, ctx),
            AutoModel::Transformer(m) => m.forward(inputs, ctx),
            AutoModel::Rnn(m) => m.forward(inputs, ctx),
        }
    }

    /// The model as a next-token predictor, if it is a decoder-only model.
    pub fn as_causal_lm(&self) -> Option<&dyn CausalLm> {
        match self {
            AutoModel::Gpt(m) => Some(m),
            _ => None,
        }
    }

    /// The model as a trainable encoder–decoder, if it is one.
    pub fn as_seq2seq(&self) -> Option<&dyn Seq2SeqTrain> {
        match self {
            AutoModel::Bart(m) => Some(m),
            AutoModel::T5(m) => Some(m),
            AutoModel::Transformer(m) => Some(m),
            AutoModel::Rnn(m) => Some(m),
            AutoModel::Encoder(_) | AutoModel::Gpt(_) => None,
        }
    }

    /// The family, for messages (`bert`, `gpt2`, …).
    pub fn family(&self) -> &'static str {
        match self {
            AutoModel::Encoder(_) => "BERT-family encoder",
            AutoModel::Gpt(_) => "GPT",
            AutoModel::Bart(_) => "BART/Marian",
            AutoModel::T5(_) => "T5",
            AutoModel::Transformer(_) => "Lingo Transformer",
            AutoModel::Rnn(_) => "Lingo recurrent seq2seq",
        }
    }
}

impl Loaded {
    /// Writes `config.json` and `model.safetensors` to `dir` (both atomically) so that
    /// `transformers` (or Lingo) loads the same model from it: Hugging Face folders under their
    /// checkpoint names (GPT-2's Conv1D weights transposed back), Lingo's under its own.
    pub fn save(&self, dir: &Path) -> std::result::Result<(), LoadError> {
        crate::hf::save_folder(dir, &self.config, &self.store, &self.names)
    }
}

/// A folder Lingo trained (`lingo-gpt`, `lingo-transformer`, `lingo-rnn-seq2seq`): the config
/// Lingo wrote, the parameters under their own names.
fn load_lingo(
    checkpoint: &Checkpoint,
    options: &LoadOptions,
) -> std::result::Result<Loaded, LoadError> {
    let mut config: ModelConfig = checkpoint.parse_config()?;
    if let Some(p) = options.dropout {
        match &mut config {
            ModelConfig::Gpt(c) => c.dropout = p,
            ModelConfig::Transformer(c) => c.dropout = p,
            ModelConfig::RnnSeq2Seq(c) => c.dropout = p,
        }
    }
    let valid = match &config {
        ModelConfig::Gpt(c) => c.validate(),
        ModelConfig::Transformer(c) => c.validate(),
        ModelConfig::RnnSeq2Seq(c) => c.validate(),
    };
    valid.map_err(|e| checkpoint.invalid_config(e))?;
    let json =
        serde_json::to_value(&config).map_err(|e| checkpoint.invalid_config(e.to_string()))?;
    let lookup = Lookup {
        seed: options.seed,
        allow_missing: &options.allow_missing,
        ..Lookup::default()
    };
    let built = checkpoint.build(&lookup, |p| {
        Ok(match config {
            ModelConfig::Gpt(c) => AutoModel::Gpt(Gpt::new(c, p)?),
            ModelConfig::Transformer(c) => AutoModel::Transformer(Transformer::new(c, p)?),
            ModelConfig::RnnSeq2Seq(c) => AutoModel::Rnn(RnnSeq2Seq::new(c, p)?),
        })
    })?;
    Ok(Loaded {
        model: built.model,
        store: built.store,
        config: json,
        report: built.report,
        names: built.names,
    })
}

/// Refuses a forward input the model does not take.
pub(crate) fn refuse(what: &str, given: bool, model: &str) -> Result<()> {
    if given {
        bail!("`{what}` given, but a {model} takes none");
    }
    Ok(())
}
