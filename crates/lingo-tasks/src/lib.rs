//! Task pipelines: each ties a dataset, a model, the trainer and decoding into something a user runs.
//!
//! - [`language_model`]: train a GPT on a text file, then load it and generate.

pub mod language_model;

pub use language_model::{LanguageModel, LmRecipe, LmTask};
