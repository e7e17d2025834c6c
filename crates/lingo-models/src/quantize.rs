//! Quantized model folders.
//!
//! A model loaded with [`crate::auto::LoadOptions::quantize`] (or from a folder saved that way) holds
//! every linear layer's weight as int8 ([`lingo_kernels::Int8Matrix`]: symmetric, per output
//! channel) and quantizes activations per row at run time — dynamic quantization, as PyTorch's
//! `quantize_dynamic` and ONNX Runtime's `quantize_dynamic` do it. Embeddings, norms and biases stay
//! f32; an output projection tied to an embedding is an int8 copy of the table, derived at load.
//!
//! Saved, the folder is the family's usual layout with each int8 weight stored as `I8` under its
//! own name plus `<name>_scale` (f32, shaped to broadcast against it: `[out, 1]`, or `[1, out]` for
//! GPT-2's `[in, out]` Conv1D weights), and `config.json` says so under `quantization_config`
//! (`quant_method: "lingo-int8"`). `transformers` does not read it; Lingo loads it as it was.

use candle_core::Tensor;
use lingo_nn::params::Int8Tensor;
use lingo_nn::ParamStore;
use std::collections::HashMap;

/// The `quant_method` of `config.json`'s `quantization_config` for Lingo's int8 folders.
pub const QUANT_METHOD: &str = "lingo-int8";

/// How a model's weights are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantization {
    /// Int8 linear weights (per output channel), int8 activations per row at run time, int32
    /// accumulation.
    Int8Dynamic,
    /// bf16 linear weights, products of bf16-rounded activations with f32 accumulation (AVX-512
    /// BF16; a portable loop elsewhere). Saved, the folder is an ordinary bfloat16 one.
    Bf16,
}

impl Quantization {
    pub fn name(self) -> &'static str {
        match self {
            Quantization::Int8Dynamic => "int8-dynamic",
            Quantization::Bf16 => "bf16",
        }
    }

    /// How the store holds the linear weights.
    pub fn linear_precision(self) -> lingo_nn::LinearPrecision {
        match self {
            Quantization::Int8Dynamic => lingo_nn::LinearPrecision::Int8,
            Quantization::Bf16 => lingo_nn::LinearPrecision::Bf16,
        }
    }

    /// The `quantization_config` entry of a folder saved this way; none for bf16, which is
    /// saved as a plain bfloat16 folder (`transformers` loads it).
    pub fn config_entry(self) -> Option<serde_json::Value> {
        if self == Quantization::Bf16 {
            return None;
        }
        Some(serde_json::json!({
            "quant_method": QUANT_METHOD,
            "scheme": self.name(),
            "weights": "int8, symmetric per output channel; <name>_scale holds the scales",
            "activations": "int8, symmetric per row, quantized at run time",
            "modules": "every linear layer; an output projection tied to an embedding is derived from it at load",
        }))
    }
}

impl std::str::FromStr for Quantization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "int8-dynamic" | "int8" => Ok(Quantization::Int8Dynamic),
            "bf16" | "bfloat16" => Ok(Quantization::Bf16),
            other => Err(format!(
                "unknown quantization scheme `{other}` (supported: int8-dynamic, bf16)"
            )),
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The quantization `config.json` declares under `quantization_config`, if any; another tool's
/// (bitsandbytes, GPTQ, …) is an error naming it.
pub fn declared(config: &serde_json::Value) -> Result<Option<Quantization>, String> {
    let Some(entry) = config.get("quantization_config") else {
        return Ok(None);
    };
    let method = entry["quant_method"].as_str().unwrap_or("");
    if method != QUANT_METHOD {
        return Err(format!(
            "quantization_config.quant_method `{method}` is not supported: Lingo reads its own \
             `{QUANT_METHOD}` folders (made by `lingo quantize`), or an unquantized folder"
        ));
    }
    let scheme = entry["scheme"].as_str().unwrap_or("int8-dynamic");
    scheme
        .parse()
        .map(Some)
        .map_err(|e| format!("quantization_config.scheme: {e}"))
}

/// Replaces each stored int8 weight and its `<name>_scale` by the f32 weight they stand for
/// (`q · scale`), so the family's loader reads an ordinary checkpoint; a model that quantizes
/// gets back exactly the int8 values it saved.
pub fn dequantize_stored(tensors: &mut HashMap<String, Tensor>) -> Result<(), String> {
    let scales: Vec<String> = tensors
        .keys()
        .filter(|k| k.ends_with("_scale"))
        .cloned()
        .collect();
    for scale_name in scales {
        let weight_name = scale_name.trim_end_matches("_scale").to_string();
        let Some(weight) = tensors.get(&weight_name) else {
            continue;
        };
        let scale = &tensors[&scale_name];
        let value = weight.broadcast_mul(scale).map_err(|e| {
            format!(
                "int8 weight `{weight_name}` {:?} and its scales {:?} do not match ({e})",
                weight.dims(),
                scale.dims()
            )
        })?;
        tensors.insert(weight_name, value);
        tensors.remove(&scale_name);
    }
    Ok(())
}

/// Int8 weights as saved: the values under each weight's stored name, the scales beside them.
pub struct StoredInt8 {
    pub weights: Vec<(String, Int8Tensor)>,
    pub scales: Vec<(String, Tensor)>,
}

/// The store's int8 weights as tensors to save: each under its stored name (`names`) as int8, in
/// the layout `convert` gives it (a transpose for GPT-2's Conv1D weights), and `<name>_scale`.
pub fn stored_int8(
    store: &ParamStore,
    stored_name: impl Fn(&str) -> String,
    convert: impl Fn(&str, Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<StoredInt8> {
    let mut weights = Vec::new();
    let mut scales = Vec::new();
    for (name, matrix) in store.quantized() {
        let (out, inp) = matrix.dims();
        let (q, s) = matrix.to_quantized();
        let device = candle_core::Device::Cpu;
        // The values are small integers, exact in f32, so the family's layout conversion (a
        // candle op) can move them.
        let values = Tensor::from_vec(q.iter().map(|&v| v as f32).collect(), (out, inp), &device)?;
        let values = convert(&name, values)?;
        let scale = convert(&name, Tensor::from_vec(s, (out, 1), &device)?)?;
        let data = values
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| v as i8)
            .collect();
        let stored = stored_name(&name);
        weights.push((
            stored.clone(),
            Int8Tensor {
                shape: values.dims().to_vec(),
                data,
            },
        ));
        scales.push((format!("{stored}_scale"), scale));
    }
    Ok(StoredInt8 { weights, scales })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_schemes() {
        let none = serde_json::json!({"model_type": "bert"});
        assert_eq!(declared(&none), Ok(None));
        let ours =
            serde_json::json!({"quantization_config": Quantization::Int8Dynamic.config_entry()});
        assert_eq!(declared(&ours), Ok(Some(Quantization::Int8Dynamic)));
        let other = serde_json::json!({"quantization_config": {"quant_method": "gptq"}});
        assert!(declared(&other)
            .unwrap_err()
            .contains("`gptq` is not supported"));
        assert!("int4".parse::<Quantization>().is_err());
    }
}
