//! Any supported Hugging Face model folder, picked by its `config.json` (`model_type`, then
//! `architectures` for the head), behind one forward pass.

use crate::bart::Bart;
use crate::bert::BertModel;
use crate::hf::{Checkpoint, LoadError, StoredNames};
use crate::t5::T5;
use crate::Gpt;
use candle_core::{bail, Device, Result, Tensor};
use lingo_nn::ParamStore;
use std::path::Path;

/// A loaded model of one of the supported families.
pub enum AutoModel {
    Encoder(BertModel),
    Gpt2(Gpt),
    EncoderDecoder(Bart),
    T5(T5),
}

/// The inputs of one forward pass, as `transformers` names them (`[batch, time]` u32 each).
pub struct ModelInputs {
    pub input_ids: Tensor,
    pub attention_mask: Option<Tensor>,
    pub token_type_ids: Option<Tensor>,
    pub decoder_input_ids: Option<Tensor>,
}

/// A model loaded from a folder, with what it takes to save it back in the same layout.
pub struct Pretrained {
    pub model: AutoModel,
    pub store: ParamStore,
    pub config: serde_json::Value,
    names: StoredNames,
}

impl Pretrained {
    /// Writes `config.json` and `model.safetensors` to `dir` so that `transformers` (or Lingo)
    /// loads the same model from it.
    pub fn save(&self, dir: &Path) -> std::result::Result<(), LoadError> {
        std::fs::create_dir_all(dir).map_err(|e| LoadError::Io(dir.into(), e))?;
        let convert = |name: &str, t: Tensor| match self.model {
            AutoModel::Gpt2(_) => crate::gpt::gpt2_layout(name, t),
            _ => Ok(t),
        };
        crate::hf::save_pretrained(dir, &self.config, &self.store, &self.names, convert)
    }
}

impl AutoModel {
    /// Opens `dir` and builds the model its `config.json` describes.
    pub fn load(dir: &Path, device: &Device) -> std::result::Result<Pretrained, LoadError> {
        let checkpoint = Checkpoint::open(dir, device)?;
        let model_type = checkpoint.model_type()?.to_string();
        let (model, store, names) = match model_type.as_str() {
            "bert" | "roberta" | "xlm-roberta" | "electra" | "albert" | "distilbert" => {
                let (m, store, names) = BertModel::load(&checkpoint, device)?;
                (AutoModel::Encoder(m), store, names)
            }
            "gpt2" => {
                let (m, store, names) = Gpt::load_gpt2(&checkpoint, device)?;
                (AutoModel::Gpt2(m), store, names)
            }
            "t5" => {
                let (m, store, names) = T5::load(&checkpoint, device)?;
                (AutoModel::T5(m), store, names)
            }
            "bart" | "marian" => {
                let (m, store, names) = Bart::load(&checkpoint, device)?;
                (AutoModel::EncoderDecoder(m), store, names)
            }
            other => {
                return Err(LoadError::Invalid {
                    path: dir.join("config.json"),
                    message: format!(
                        "model_type `{other}` is not supported (supported: bert, roberta, xlm-roberta, electra, albert, distilbert, gpt2, t5, bart, marian)"
                    ),
                })
            }
        };
        Ok(Pretrained {
            model,
            store,
            config: checkpoint.config.clone(),
            names,
        })
    }

    /// The model's main output: the head's logits (start/end stacked as `[batch, time, 2]` for
    /// extractive QA), or the last hidden state of a bare encoder.
    pub fn forward(&self, inputs: &ModelInputs) -> Result<Tensor> {
        let takes_types = matches!(self, AutoModel::Encoder(_));
        if inputs.token_type_ids.is_some() && !takes_types {
            bail!("`token_type_ids` given, but this model takes none");
        }
        let has_decoder = matches!(self, AutoModel::EncoderDecoder(_) | AutoModel::T5(_));
        if inputs.decoder_input_ids.is_some() && !has_decoder {
            bail!("`decoder_input_ids` given, but this model has no decoder");
        }
        let (ids, mask) = (&inputs.input_ids, inputs.attention_mask.as_ref());
        match self {
            AutoModel::Encoder(m) => {
                Ok(m.forward(ids, mask, inputs.token_type_ids.as_ref())?.output)
            }
            AutoModel::Gpt2(m) => Ok(m.forward_with_hidden_states(ids, mask, false)?.0),
            AutoModel::EncoderDecoder(m) => {
                let Some(decoder_ids) = &inputs.decoder_input_ids else {
                    bail!("an encoder-decoder model needs `decoder_input_ids`");
                };
                Ok(m.forward(ids, mask, decoder_ids)?.logits)
            }
            AutoModel::T5(m) => {
                let Some(decoder_ids) = &inputs.decoder_input_ids else {
                    bail!("an encoder-decoder model needs `decoder_input_ids`");
                };
                Ok(m.forward(ids, mask, decoder_ids)?.logits)
            }
        }
    }
}
