//! `lingo forward`: run any supported Hugging Face model folder on token ids from a JSON file and
//! write its main output as a NumPy array, to check Lingo against another implementation.

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use lingo_models::auto::AutoModel;
use lingo_models::ModelInputs;
use lingo_nn::Ctx;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct Forward {
    /// Model folder (config.json and model.safetensors, or sharded safetensors), or a Hugging Face
    /// Hub id (`org/name[@revision]`) looked up in, or downloaded to, the Hugging Face cache.
    #[arg(long)]
    model: String,
    /// Never download: use the local folder or the cache only (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    quantize: super::QuantizeArg,
    /// JSON with `input_ids` (a batch: list of lists) and optionally `attention_mask`,
    /// `token_type_ids`, `decoder_input_ids`.
    #[arg(long)]
    inputs: PathBuf,
    /// Where to write the output (.npy, little-endian float32): the head's logits (`[batch, seq, 2]`
    /// start/end for extractive QA) or the last hidden state.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputsFile {
    input_ids: Vec<Vec<u32>>,
    attention_mask: Option<Vec<Vec<u32>>>,
    token_type_ids: Option<Vec<Vec<u32>>>,
    decoder_input_ids: Option<Vec<Vec<u32>>>,
}

/// A rectangular `[batch, time]` tensor from rows; `like` gives the shape it must have.
fn batch(
    rows: &[Vec<u32>],
    field: &str,
    file: &Path,
    like: Option<(usize, usize)>,
) -> anyhow::Result<Tensor> {
    let width = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || width == 0 {
        bail!("{}: field `{field}` is empty", file.display());
    }
    if let Some(i) = rows.iter().position(|r| r.len() != width) {
        bail!(
            "{}: field `{field}`: row {i} has {} entries, row 0 has {width} (pad the rows to one length and mark the padding in `attention_mask`)",
            file.display(),
            rows[i].len()
        );
    }
    if let Some(shape) = like {
        if (rows.len(), width) != shape {
            bail!(
                "{}: field `{field}` is {}×{width}, `input_ids` is {}×{}",
                file.display(),
                rows.len(),
                shape.0,
                shape.1
            );
        }
    }
    let flat: Vec<u32> = rows.concat();
    Ok(Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu)?)
}

impl Forward {
    pub fn run(self) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.inputs)
            .with_context(|| format!("reading {}", self.inputs.display()))?;
        let file: InputsFile = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid inputs file", self.inputs.display()))?;
        let ids = batch(&file.input_ids, "input_ids", &self.inputs, None)?;
        let shape = ids.dims2()?;
        let optional = |rows: &Option<Vec<Vec<u32>>>, field: &str, like| {
            rows.as_ref()
                .map(|r| batch(r, field, &self.inputs, like))
                .transpose()
        };
        let inputs = ModelInputs {
            attention_mask: optional(&file.attention_mask, "attention_mask", Some(shape))?,
            token_type_ids: optional(&file.token_type_ids, "token_type_ids", Some(shape))?,
            decoder_input_ids: optional(&file.decoder_input_ids, "decoder_input_ids", None)?,
            input_ids: ids,
            output_attentions: false,
            predict_positions: None,
        };
        let dir = lingo_models::hub::resolve_model(&self.model, self.offline)?;
        let loaded = AutoModel::load(&dir, &self.quantize.options())?;
        let out = (loaded.model.forward(&inputs, &mut Ctx::eval())?.output).to_dtype(DType::F32)?;
        let data = out.flatten_all()?.to_vec1::<f32>()?;
        let bytes = lingo_nn::io::npy_f32(&data, out.dims());
        lingo_nn::io::write_atomic(&self.output, &bytes)
            .with_context(|| format!("writing {}", self.output.display()))?;
        println!("{:?} float32 → {}", out.dims(), self.output.display());
        Ok(())
    }
}
