//! Task pipelines: each ties a dataset, a model, the trainer and decoding into something a user runs.
//!
//! - [`encoder`]: fill-mask, classification, NER, extractive QA and embeddings with a pretrained
//!   BERT-family model.
//! - [`finetune`]: fine-tuning such a model for [`classification`], [`token_classification`] and
//!   [`question_answering`].
//! - [`language_model`]: train a GPT on a text file, then load it and generate.
//! - [`translation`]: train a recurrent encoder–decoder on sentence pairs, then translate.

pub mod classification;
pub mod encoder;
pub mod finetune;
pub mod language_model;
pub mod question_answering;
pub mod token_classification;
pub mod translation;

pub use classification::ClassifyTask;
pub use finetune::FinetuneRecipe;
pub use language_model::{LanguageModel, LmRecipe, LmTask};
pub use question_answering::QaTask;
pub use token_classification::TokenClassifyTask;
pub use translation::{exact_match, Seq2SeqRecipe, Seq2SeqTask, Translation, Translator};
