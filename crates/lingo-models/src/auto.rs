//! Any supported Hugging Face model folder, picked by its `config.json` (`model_type`, then
//! `architectures` for the head), behind one forward pass.

use crate::bart::Bart;
use crate::bert::BertModel;
use crate::hf::{Checkpoint, LoadError};
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

impl AutoModel {
    /// Opens `dir` and builds the model its `config.json` describes.
    pub fn load(
        dir: &Path,
        device: &Device,
    ) -> std::result::Result<(AutoModel, ParamStore), LoadError> {
        let checkpoint = Checkpoint::open(dir, device)?;
        let model_type = checkpoint.model_type()?.to_string();
        match model_type.as_str() {
            "bert" | "roberta" | "xlm-roberta" | "electra" | "albert" | "distilbert" => {
                let (m, store) = BertModel::load(&checkpoint, device)?;
                Ok((AutoModel::Encoder(m), store))
            }
            "gpt2" => {
                let (m, store) = Gpt::load_gpt2(&checkpoint, device)?;
                Ok((AutoModel::Gpt2(m), store))
            }
            "t5" => {
                let (m, store) = T5::load(&checkpoint, device)?;
                Ok((AutoModel::T5(m), store))
            }
            "bart" | "marian" => {
                let (m, store) = Bart::load(&checkpoint, device)?;
                Ok((AutoModel::EncoderDecoder(m), store))
            }
            other => Err(LoadError::Invalid {
                path: dir.join("config.json"),
                message: format!(
                    "model_type `{other}` is not supported (supported: bert, roberta, xlm-roberta, electra, albert, distilbert, gpt2, t5, bart, marian)"
                ),
            }),
        }
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
            AutoModel::Gpt2(m) => Ok(m.forward_with_hidden_states(ids, mask)?.0),
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
