//! Text in, token batches out: tokenizers built on the `tokenizers` crate (so `tokenizer.json` files
//! interoperate with Hugging Face) and datasets that cut token streams into training windows.

pub mod collate;
pub mod conll;
pub mod corpus;
pub mod labelled;
pub mod parallel;
pub mod pretraining;
pub mod squad;
pub mod synthetic;
pub mod text;
pub mod tokenizer;
pub mod tokenizer_training;
pub mod word_vectors;

pub use collate::{collate, Batch, Encoded, TaskTokenizer};
pub use conll::{read_conllu, read_tagged, read_tagged_column, TaggedSentence, UdColumn};
pub use corpus::{Corpus, DocumentBreak, TokenCache};
pub use labelled::{read_labelled, LabelledText};
pub use parallel::{is_json, read_file, read_json_pairs, read_lines, read_pairs};
pub use squad::{read_squad, SquadAnswer, SquadQuestion};
pub use synthetic::{Date, DateTask, Grammar, Pair};
pub use text::{read_text, Split, TextDataset};
pub use tokenizer::{Tokenizer, TokenizerKind};
pub use tokenizer_training::{BpeStyle, Scheme, TokenizerSpec};
pub use word_vectors::{read_word_vectors, write_word_vectors, WordVectors};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, DataError>;
