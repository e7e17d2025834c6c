//! Metrics, each matching the reference implementation users compare against.
//!
//! - [`bleu`]: corpus BLEU exactly as sacreBLEU computes it by default (13a tokenisation, exp smoothing).

pub mod bleu;

pub use bleu::{corpus_bleu, Bleu};
