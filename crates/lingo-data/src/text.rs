//! A language-modelling dataset from one text file: the first part of the text for training, the rest
//! for validation (split by characters, as nanoGPT does), each tokenised once into a stream of ids.
//! Training draws random fixed-length windows; evaluation walks non-overlapping windows in order.

use crate::tokenizer::Tokenizer;
use crate::{DataError, Result};
use lingo_nn::LingoRng;
use std::path::Path;

/// Reads a UTF-8 text file with errors that say what is wrong with it.
pub fn read_text(path: &Path) -> Result<String> {
    let file_err = |message: String| DataError::File {
        path: path.into(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| file_err(format!("cannot read ({e})")))?;
    if bytes.is_empty() {
        return Err(file_err("the file is empty".into()));
    }
    String::from_utf8(bytes).map_err(|e| {
        file_err(format!(
            "not valid UTF-8 (first bad byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Validation,
}

pub struct TextDataset {
    pub train: Vec<u32>,
    pub validation: Vec<u32>,
}

impl TextDataset {
    /// Tokenises `text`, keeping the last `validation_fraction` of its characters for validation.
    pub fn new(text: &str, tokenizer: &Tokenizer, validation_fraction: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&validation_fraction) {
            return Err(DataError::Invalid(format!(
                "validation fraction must be in [0, 1), got {validation_fraction}"
            )));
        }
        let n_chars = text.chars().count();
        let cut_char = ((1.0 - validation_fraction) * n_chars as f64) as usize;
        let cut = text
            .char_indices()
            .nth(cut_char)
            .map_or(text.len(), |(i, _)| i);
        let (train, validation) = text.split_at(cut);
        Ok(TextDataset {
            train: tokenizer.encode(train)?,
            validation: tokenizer.encode(validation)?,
        })
    }

    pub fn tokens(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
        }
    }

    /// Checks each split holds at least one window of `context + 1` tokens (input plus shifted target).
    pub fn check_context(&self, context: usize) -> Result<()> {
        for (split, name) in [
            (Split::Train, "training"),
            (Split::Validation, "validation"),
        ] {
            let n = self.tokens(split).len();
            if n < context + 1 {
                return Err(DataError::Invalid(format!(
                    "the {name} split has {n} tokens, fewer than the context length {context} + 1: use a longer text or a shorter context"
                )));
            }
        }
        Ok(())
    }

    /// `batch` random windows: inputs and next-token targets, each `batch × context` ids, row-major.
    pub fn random_batch(
        &self,
        split: Split,
        batch: usize,
        context: usize,
        rng: &mut LingoRng,
    ) -> (Vec<u32>, Vec<u32>) {
        let data = self.tokens(split);
        let mut x = Vec::with_capacity(batch * context);
        let mut y = Vec::with_capacity(batch * context);
        for _ in 0..batch {
            let start = rng.below(data.len() - context);
            x.extend_from_slice(&data[start..start + context]);
            y.extend_from_slice(&data[start + 1..start + context + 1]);
        }
        (x, y)
    }

    /// Start offsets of the non-overlapping windows that cover `split`.
    pub fn window_starts(&self, split: Split, context: usize) -> Vec<usize> {
        let n = self.tokens(split).len();
        (0..n.saturating_sub(context)).step_by(context).collect()
    }

    /// The windows starting at `starts`, as inputs and targets.
    pub fn windows(&self, split: Split, starts: &[usize], context: usize) -> (Vec<u32>, Vec<u32>) {
        let data = self.tokens(split);
        let x = starts
            .iter()
            .flat_map(|&s| data[s..s + context].iter().copied())
            .collect();
        let y = starts
            .iter()
            .flat_map(|&s| data[s + 1..s + context + 1].iter().copied())
            .collect();
        (x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::TokenizerKind;

    #[test]
    fn splits_by_characters_and_windows_shift_by_one() -> Result<()> {
        let text = "abcdefghij".repeat(10);
        let tok = Tokenizer::train(TokenizerKind::Char, &text)?;
        let ds = TextDataset::new(&text, &tok, 0.1)?;
        assert_eq!((ds.train.len(), ds.validation.len()), (90, 10));
        let mut rng = LingoRng::new(0);
        let (x, y) = ds.random_batch(Split::Train, 3, 5, &mut rng);
        assert_eq!(x.len(), 15);
        for r in 0..3 {
            assert_eq!(&x[r * 5 + 1..r * 5 + 5], &y[r * 5..r * 5 + 4]);
        }
        assert!(ds.check_context(9).is_ok());
        let err = ds.check_context(10).unwrap_err().to_string();
        assert!(err.contains("validation split has 10 tokens"), "{err}");
        Ok(())
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = read_text(&dir.path().join("nope.txt"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("nope.txt") && missing.contains("cannot read"),
            "{missing}"
        );
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        assert!(read_text(&empty).unwrap_err().to_string().contains("empty"));
        let binary = dir.path().join("bin.txt");
        std::fs::write(&binary, b"ok\xff\xfe").unwrap();
        let err = read_text(&binary).unwrap_err().to_string();
        assert!(
            err.contains("not valid UTF-8") && err.contains("offset 2"),
            "{err}"
        );
    }
}
