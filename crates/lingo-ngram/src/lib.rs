//! n-gram language models: counting n-grams of any order into sorted arrays of word ids,
//! smoothing (add-k, Witten–Bell, absolute discounting, Kneser–Ney, interpolated modified
//! Kneser–Ney as SRILM's `-kndiscount -interpolate` and KenLM's `lmplz`, Stupid Backoff), ARPA
//! files, and perplexity.
//!
//! Sentences are wrapped in `<s>` … `</s>`; every n-gram of every order ending at each position
//! after `<s>` is counted. For Kneser–Ney, lower orders are estimated from continuation counts
//! (how many distinct words precede an n-gram), except n-grams that start with `<s>`, which
//! nothing can precede and which keep their raw counts. The model is stored as ARPA has it: for every seen n-gram its
//! interpolated log10 probability, for every context its log10 backoff weight — for an
//! interpolated model the backoff weight is the interpolation weight γ(h), so backing off
//! reproduces the interpolated probability exactly.

mod arpa;
mod counts;
mod model;
mod perplexity;

pub use counts::{Counts, Vocab, BOS, EOS, UNK};
pub use model::{estimate, NgramModel, Smoothing};
pub use perplexity::{perplexity, Evaluation, WordLm};

#[derive(Debug, thiserror::Error)]
pub enum NgramError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: line {line}: {msg}")]
    Arpa {
        path: String,
        line: usize,
        msg: String,
    },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

pub type Result<T> = std::result::Result<T, NgramError>;
