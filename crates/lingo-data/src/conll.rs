//! Tagged sentences for token classification: CoNLL column files (one token a line, the word in the
//! first column and its tag in the last, a blank line between sentences, `-DOCSTART-` lines
//! skipped; CoNLL-2003's `word POS chunk NER` reads as it is), or JSON lines with `tokens` and
//! `tags` lists. `.gz` allowed. Errors name the file and line.

use crate::parallel::{file_err, read_lines};
use crate::Result;
use std::path::Path;

/// One sentence: its words and their tags, and the line it starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct TaggedSentence {
    pub words: Vec<String>,
    pub tags: Vec<String>,
    pub line: usize,
}

/// Reads every sentence of `path` (`.jsonl` for JSON lines, anything else as CoNLL columns).
pub fn read_tagged(path: &Path) -> Result<Vec<TaggedSentence>> {
    let name = path
        .to_string_lossy()
        .trim_end_matches(".gz")
        .to_lowercase();
    let lines = read_lines(path)?;
    let sentences = if name.ends_with(".jsonl") || name.ends_with(".json") {
        read_jsonl(path, &lines)?
    } else {
        read_columns(path, &lines)?
    };
    if sentences.is_empty() {
        return Err(file_err(path, "no tagged sentences".into()));
    }
    Ok(sentences)
}

fn read_columns(path: &Path, lines: &[String]) -> Result<Vec<TaggedSentence>> {
    let mut out = Vec::new();
    let mut current = TaggedSentence {
        words: Vec::new(),
        tags: Vec::new(),
        line: 1,
    };
    let mut columns = None;
    let mut flush = |s: &mut TaggedSentence, next_line: usize| {
        if !s.words.is_empty() {
            out.push(std::mem::replace(
                s,
                TaggedSentence {
                    words: Vec::new(),
                    tags: Vec::new(),
                    line: next_line,
                },
            ));
        } else {
            s.line = next_line;
        }
    };
    for (i, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0] == "-DOCSTART-" {
            flush(&mut current, i + 2);
            continue;
        }
        let n = *columns.get_or_insert(fields.len());
        if fields.len() != n || n < 2 {
            return Err(file_err(
                path,
                format!(
                    "line {}: {} columns, expected {} (the word first, the tag last)",
                    i + 1,
                    fields.len(),
                    n.max(2)
                ),
            ));
        }
        current.words.push(fields[0].to_string());
        current.tags.push(fields[n - 1].to_string());
    }
    flush(&mut current, lines.len() + 1);
    Ok(out)
}

fn read_jsonl(path: &Path, lines: &[String]) -> Result<Vec<TaggedSentence>> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |m: String| file_err(path, format!("line {}: {m}", i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not valid JSON ({e})")))?;
        let list = |key: &str| -> Result<Vec<String>> {
            v.get(key)
                .and_then(|x| x.as_array())
                .ok_or_else(|| at(format!("no `{key}` list")))?
                .iter()
                .map(|x| match x {
                    serde_json::Value::String(s) => Ok(s.clone()),
                    serde_json::Value::Number(n) => Ok(n.to_string()),
                    other => Err(at(format!("`{key}` holds {other}, not a string"))),
                })
                .collect()
        };
        let (words, tags) = (list("tokens")?, list("tags")?);
        if words.len() != tags.len() {
            return Err(at(format!(
                "{} tokens but {} tags",
                words.len(),
                tags.len()
            )));
        }
        if !words.is_empty() {
            out.push(TaggedSentence {
                words,
                tags,
                line: i + 1,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_conll_columns_and_jsonl() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let conll = dir.path().join("a.txt");
        std::fs::write(
            &conll,
            "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n",
        )
        .expect("write");
        let got = read_tagged(&conll)?;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].words, ["EU", "rejects"]);
        assert_eq!(got[0].tags, ["B-ORG", "O"]);
        assert_eq!((got[1].line, got[1].tags[0].as_str()), (6, "B-PER"));
        let jsonl = dir.path().join("b.jsonl");
        std::fs::write(
            &jsonl,
            "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\", \"B-X\"]}\n",
        )
        .expect("write");
        assert_eq!(read_tagged(&jsonl)?[0].tags, ["O", "B-X"]);
        Ok(())
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text, want) in [
            (
                "a.txt",
                "EU NNP B-ORG\nrejects O\n",
                "line 2: 2 columns, expected 3",
            ),
            (
                "b.jsonl",
                "{\"tokens\": [\"a\"], \"tags\": []}\n",
                "line 1: 1 tokens but 0 tags",
            ),
            ("c.txt", "-DOCSTART- -X- O\n\n", "no tagged sentences"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            let e = read_tagged(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(name), "{name}: {e}");
        }
    }
}
