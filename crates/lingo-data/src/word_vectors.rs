//! Pretrained word vectors in the text formats users have: GloVe's (`word v1 … vd` a line) and
//! word2vec's and fastText's `.vec` (the same after a first line `count dim`). `.gz` allowed. The
//! file is streamed and only the words asked for are kept, so a 5 GB GloVe file costs the memory
//! of the vocabulary it initialises. Errors name the file and line.

use crate::parallel::file_err;
use crate::Result;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

/// The vectors read for the words asked for.
#[derive(Clone, Debug, Default)]
pub struct WordVectors {
    pub dim: usize,
    pub vectors: HashMap<String, Vec<f32>>,
    /// Words in the file.
    pub words_in_file: usize,
}

fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let file =
        std::fs::File::open(path).map_err(|e| file_err(path, format!("cannot read ({e})")))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

/// Reads the vectors of the words `wanted` accepts.
pub fn read_word_vectors(path: &Path, wanted: impl Fn(&str) -> bool) -> Result<WordVectors> {
    let mut out = WordVectors::default();
    let mut declared: Option<usize> = None;
    let mut line = String::new();
    let mut reader = open(path)?;
    let mut no = 0usize;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| file_err(path, format!("line {}: cannot read ({e})", no + 1)))?;
        if n == 0 {
            break;
        }
        no += 1;
        let at = |m: String| file_err(path, format!("line {no}: {m}"));
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        // `word v1 … vd`; the word itself may hold spaces in some files (GloVe 840B), so the
        // numbers are counted from the right once the width is known.
        let fields: Vec<&str> = text.split(' ').filter(|f| !f.is_empty()).collect();
        if no == 1 && fields.len() == 2 && fields.iter().all(|f| f.parse::<usize>().is_ok()) {
            let dim: usize = fields[1].parse().map_err(|_| at("a bad header".into()))?;
            if dim == 0 {
                return Err(at("the header declares vectors of width 0".into()));
            }
            declared = Some(dim);
            out.dim = dim;
            continue;
        }
        if out.dim == 0 {
            if fields.len() < 2 {
                return Err(at("expected a word and its vector".into()));
            }
            out.dim = fields.len() - 1;
        }
        if fields.len() < out.dim + 1 {
            return Err(at(format!(
                "{} numbers, expected {}",
                fields.len().saturating_sub(1),
                out.dim
            )));
        }
        let split = fields.len() - out.dim;
        let word = fields[..split].join(" ");
        out.words_in_file += 1;
        if !wanted(&word) || out.vectors.contains_key(&word) {
            continue;
        }
        let v = fields[split..]
            .iter()
            .map(|x| {
                x.parse::<f32>()
                    .map_err(|_| at(format!("`{x}` is not a number")))
            })
            .collect::<Result<Vec<f32>>>()?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(at(format!("the vector of `{word}` is not finite")));
        }
        out.vectors.insert(word, v);
    }
    if out.words_in_file == 0 {
        return Err(file_err(
            path,
            match declared {
                Some(_) => "a header but no vectors".into(),
                None => "no word vectors".into(),
            },
        ));
    }
    Ok(out)
}

/// Writes vectors in the `.vec` format (a `count dim` header, then `word v1 … vd`), atomically.
pub fn write_word_vectors(
    path: &Path,
    words: &[String],
    vectors: &[f32],
    dim: usize,
) -> Result<()> {
    if vectors.len() != words.len() * dim {
        return Err(crate::DataError::Invalid(format!(
            "{} words but {} numbers for width {dim}",
            words.len(),
            vectors.len()
        )));
    }
    let mut text = Vec::with_capacity(vectors.len() * 10);
    let io = |e: std::io::Error| file_err(path, format!("cannot write ({e})"));
    writeln!(text, "{} {dim}", words.len()).map_err(io)?;
    for (w, v) in words.iter().zip(vectors.chunks(dim)) {
        write!(text, "{w}").map_err(io)?;
        for x in v {
            write!(text, " {x:.6}").map_err(io)?;
        }
        writeln!(text).map_err(io)?;
    }
    lingo_nn::io::write_atomic(path, &text).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_glove_and_vec_files_keeping_only_wanted_words() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let glove = dir.path().join("g.txt");
        std::fs::write(&glove, "the 0.1 0.2 0.3\ncat -1 2.5 0\nNew York 1 1 1\n").expect("write");
        let v = read_word_vectors(&glove, |w| w != "the")?;
        assert_eq!((v.dim, v.words_in_file, v.vectors.len()), (3, 3, 2));
        assert_eq!(v.vectors["cat"], [-1.0, 2.5, 0.0]);
        assert_eq!(v.vectors["New York"], [1.0, 1.0, 1.0]);
        let vec = dir.path().join("f.vec");
        write_word_vectors(&vec, &["a".into(), "b".into()], &[1.0, 2.0, 3.0, 4.0], 2)?;
        let v = read_word_vectors(&vec, |_| true)?;
        assert_eq!((v.dim, v.vectors["b"].clone()), (2, vec![3.0, 4.0]));
        Ok(())
    }

    #[test]
    fn bad_files_name_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.vec");
        for (text, want) in [
            ("2 3\na 1 2 3\nb 1 x 3\n", "line 3: `x` is not a number"),
            ("a 1 2 3\nb 1 2\n", "line 2: 2 numbers, expected 3"),
            ("2 3\n", "a header but no vectors"),
            ("a 1 NaN\n", "not finite"),
        ] {
            std::fs::write(&p, text).expect("write");
            let e = read_word_vectors(&p, |_| true).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("bad.vec"), "{e}");
        }
    }
}
