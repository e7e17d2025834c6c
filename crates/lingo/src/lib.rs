//! Lingo from Rust code, in one crate: the names a user needs to load a model folder or a Hub id,
//! tokenize a batch, run it, fine-tune it and save it, re-exported from the crates that hold them
//! (as ripgrep's `grep` crate fronts its parts).
//!
//! ```no_run
//! use lingo::{Ctx, LoadOptions, Pretrained};
//!
//! # fn main() -> lingo::Result<()> {
//! let bert = Pretrained::load("sentence-transformers/all-MiniLM-L6-v2", &LoadOptions::default())?;
//! let batch = bert.tokenizer.batch(&["paris is the capital of france"])?;
//! let out = bert.model.forward(&batch.inputs(), &mut Ctx::eval())?;
//! println!("{:?}", out.last_hidden_state()?.dims()); // [1, 9, 384]
//! # Ok(())
//! # }
//! ```
//!
//! Every fallible call returns [`Error`], which tells the caller's bad input
//! ([`Error::is_bad_input`]) from a failure inside Lingo.

/// Models: the one loader, the forward contract, the families.
pub use lingo_models::auto::{AutoModel, LoadOptions};
pub use lingo_models::bert::Head;
pub use lingo_models::hf::LoadReport;
pub use lingo_models::{ModelInputs, ModelOutput, Seq2SeqBatch, Seq2SeqLoss};

/// A forward pass's mode (training with the run's seeded RNG, or evaluation).
pub use lingo_nn::{Ctx, LingoRng};

/// Text in, batches out; tokenizers trained, corpora read.
pub use lingo_data::{Batch, Corpus, DocumentBreak, Scheme, Tokenizer, TokenizerSpec};

/// Loading whole folders, pipelines, fine-tuning tasks.
pub use lingo_tasks::classification::evaluate_classifier;
pub use lingo_tasks::encoder::{EncoderPipeline, Pooling};
pub use lingo_tasks::seq2seq::PairFile;
pub use lingo_tasks::{
    ClassifyTask, CorpusFiles, FinetuneRecipe, LanguageModel, LmTask, Objective, PretrainRecipe,
    PretrainTask, Pretrained, QaTask, Seq2SeqFinetune, TokenClassifyTask, Translation, Translator,
};

/// Training and decoding settings.
pub use lingo_generate::{BeamConfig, SamplingConfig};
pub use lingo_train::{TrainConfig, TrainReport, Trainer};

/// Flush subnormal floats to zero for this thread and the threads it starts: call it first in
/// `main` (the `lingo` command does); on Intel cores subnormals slow training by up to ~25×.
pub use lingo_kernels::flush_denormals;

/// The metrics, each equal to its reference package.
pub use lingo_eval as metrics;

/// The one error type of the library.
pub use lingo_tasks::TaskError as Error;
pub type Result<T> = std::result::Result<T, Error>;
