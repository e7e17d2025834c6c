//! Task pipelines: each ties a dataset, a model, the trainer and decoding into something a user runs.
//!
//! - [`pretrained`]: the one way into a model folder or Hub id — model, tokenizer(s), generation
//!   settings.
//! - [`encoder`]: fill-mask, classification, NER, extractive QA and embeddings with a pretrained
//!   BERT-family model.
//! - [`finetune`]: fine-tuning such a model for [`classification`], [`token_classification`] and
//!   [`question_answering`]; [`seq2seq`] fine-tunes any encoder–decoder; [`language_model`] trains
//!   or fine-tunes a GPT.
//! - [`rnn_lm`]: a recurrent word-level language model trained from scratch (and sentences
//!   generated from a label).
//! - [`translation`]: train an encoder–decoder from scratch on sentence pairs; [`translator`]
//!   decodes with any encoder–decoder.
//! - [`distillation`]: a small student fine-tuned from a teacher's softened outputs.
//! - [`pruning`]: magnitude, head and neuron pruning, one-shot or while fine-tuning.
//! - [`error`]: the one error type, telling bad input from internal failure.

pub mod classification;
pub mod distillation;
pub mod encoder;
pub mod error;
pub mod finetune;
pub mod language_model;
pub mod pretrain;
pub mod pretrained;
pub mod pruning;
pub mod question_answering;
pub mod recurrent;
pub mod rnn_lm;
pub mod seq2seq;
pub mod token_classification;
pub mod translation;
pub mod translator;

pub use classification::ClassifyTask;
pub use error::{Result, TaskError};
pub use finetune::FinetuneRecipe;
pub use language_model::{LanguageModel, LmRecipe, LmTask};
pub use pretrain::{CorpusFiles, Objective, PretrainRecipe, PretrainTask};
pub use pretrained::Pretrained;
pub use question_answering::QaTask;
pub use recurrent::{
    RnnClassifierPipeline, RnnClassifyRecipe, RnnClassifyTask, RnnTagRecipe, RnnTagTask,
    RnnTaggerPipeline,
};
pub use rnn_lm::{RnnLmPipeline, RnnLmRecipe, RnnLmTask};
pub use seq2seq::Seq2SeqFinetune;
pub use token_classification::TokenClassifyTask;
pub use translation::{exact_match, Seq2SeqRecipe, Seq2SeqTask};
pub use translator::{Translation, Translator};
