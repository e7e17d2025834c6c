//! Hidden Markov models for tagging: a discrete HMM in log space ([`Hmm`]: forward, backward,
//! Viterbi and posterior decoding, supervised estimation, Baum–Welch), and taggers built on it —
//! [`Tnt`], Brants' (2000) trigram tagger, and a first-order [`BigramTagger`].

mod hmm;
mod tagger;
mod tnt;

pub use hmm::{log_sum_exp, Hmm};
pub use tagger::{Accuracy, BigramTagger, Tagger};
pub use tnt::Tnt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;
