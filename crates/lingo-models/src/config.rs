//! Reading model configs: serde structs with defaults that reject unknown keys, and errors that name
//! the file and the field.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Parses a JSON config file into `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.into(),
        source,
    })?;
    parse_json(&text).map_err(|message| ConfigError::Invalid {
        path: path.into(),
        message,
    })
}

/// Checks that every named size is non-zero; the error names the first that is not.
pub fn check_positive(fields: &[(&str, usize)]) -> Result<(), String> {
    match fields.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(format!("field `{name}` must be positive")),
        None => Ok(()),
    }
}

/// More layers than any real model has by orders of magnitude: a config asking for more is
/// corrupt, and is refused before anything is sized by it (ALBERT would otherwise schedule 2^40
/// applications of its shared layer — found by fuzzing).
pub const MAX_LAYERS: usize = 10_000;

/// Checks a layer count against [`MAX_LAYERS`].
pub fn check_layers(name: &str, layers: usize) -> Result<(), String> {
    if layers > MAX_LAYERS {
        return Err(format!(
            "field `{name}` is {layers}: more than {MAX_LAYERS} layers is not a real model"
        ));
    }
    Ok(())
}

/// The most positions a config may ask for (a million: beyond the longest real context windows).
/// A position table is allocated from this number before any weight is read (Marian's sinusoids
/// are computed, not stored; a new model draws its learned table), so a corrupt `config.json`
/// could otherwise ask for hundreds of gigabytes (found by fuzzing).
pub const MAX_POSITIONS: usize = 1 << 20;

/// Checks a position count against [`MAX_POSITIONS`].
pub fn check_positions(name: &str, positions: usize) -> Result<(), String> {
    if positions > MAX_POSITIONS {
        return Err(format!(
            "field `{name}` is {positions}: more than {MAX_POSITIONS} positions is not a real model"
        ));
    }
    Ok(())
}

/// Checks that `d_model` splits into `n_heads` equal heads.
pub fn check_heads(d_model: usize, n_heads: usize) -> Result<(), String> {
    if !d_model.is_multiple_of(n_heads) {
        return Err(format!(
            "field `d_model` ({d_model}) must be divisible by `n_heads` ({n_heads})"
        ));
    }
    Ok(())
}

/// Checks that a dropout probability is in [0, 1).
pub fn check_dropout(p: f32) -> Result<(), String> {
    if !(0.0..1.0).contains(&p) {
        return Err(format!("field `dropout` must be in [0, 1), got {p}"));
    }
    Ok(())
}

/// Parses JSON text into `T`; the error says which field and where.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("{e}"))
}

/// The `config.json` of a Lingo model folder: the architecture named by `model_type`, then its fields.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "model_type")]
pub enum ModelConfig {
    #[serde(rename = "lingo-gpt")]
    Gpt(crate::GptConfig),
    #[serde(rename = "lingo-rnn-seq2seq")]
    RnnSeq2Seq(crate::RnnSeq2SeqConfig),
    #[serde(rename = "lingo-transformer")]
    Transformer(crate::transformer::TransformerConfig),
}
