//! Tagged sentences for token classification: CoNLL column files (one token a line, the word in the
//! first column and its tag in the last, a blank line between sentences, `-DOCSTART-` lines
//! skipped; CoNLL-2003's `word POS chunk NER` reads as it is), Universal Dependencies CoNLL-U
//! files (UPOS or XPOS), or JSON lines with `tokens` and `tags` lists. `.gz` allowed. Errors name
//! the file and line.

use crate::parallel::{file_err, read_lines};
use crate::Result;
use std::path::Path;

/// One sentence: its words and their tags, and the line it starts on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaggedSentence {
    pub words: Vec<String>,
    pub tags: Vec<String>,
    pub line: usize,
}

/// Which tag of a CoNLL-U word to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UdColumn {
    /// Column 4: the universal part of speech (17 tags).
    Upos,
    /// Column 5: the language-specific tag (Penn Treebank tags for English).
    Xpos,
}

impl UdColumn {
    pub fn name(self) -> &'static str {
        match self {
            UdColumn::Upos => "UPOS",
            UdColumn::Xpos => "XPOS",
        }
    }
}

/// Reads every sentence of `path` (`.jsonl` for JSON lines, `.conllu` as CoNLL-U with UPOS tags,
/// anything else as CoNLL columns).
pub fn read_tagged(path: &Path) -> Result<Vec<TaggedSentence>> {
    read_tagged_column(path, UdColumn::Upos)
}

/// [`read_tagged`], a CoNLL-U file giving its `column`'s tags.
pub fn read_tagged_column(path: &Path, column: UdColumn) -> Result<Vec<TaggedSentence>> {
    let name = path
        .to_string_lossy()
        .trim_end_matches(".gz")
        .to_lowercase();
    if name.ends_with(".conllu") {
        return read_conllu(path, column);
    }
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

/// Reads the words of a CoNLL-U file (ten tab-separated columns; `#` comments; multiword-token
/// ranges like `3-4` and empty nodes like `8.1` skipped) with their `column` tags.
pub fn read_conllu(path: &Path, column: UdColumn) -> Result<Vec<TaggedSentence>> {
    let lines = read_lines(path)?;
    let mut out = Vec::new();
    let mut current = TaggedSentence {
        words: Vec::new(),
        tags: Vec::new(),
        line: 1,
    };
    for (i, line) in lines.iter().enumerate() {
        let at = |m: String| file_err(path, format!("line {}: {m}", i + 1));
        if line.trim().is_empty() {
            if !current.words.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 10 {
            return Err(at(format!(
                "{} tab-separated columns, CoNLL-U has 10",
                fields.len()
            )));
        }
        let id = fields[0];
        if id.contains('-') || id.contains('.') {
            continue; // a multiword token's range, or an empty node
        }
        if id.parse::<u32>().map_or(true, |n| n == 0) {
            return Err(at(format!("the word ID `{id}` is not a positive integer")));
        }
        let tag = fields[if column == UdColumn::Upos { 3 } else { 4 }];
        if tag == "_" || tag.is_empty() {
            return Err(at(format!(
                "the word `{}` has no {} tag",
                fields[1],
                column.name()
            )));
        }
        if current.words.is_empty() {
            current.line = i + 1;
        }
        current.words.push(fields[1].to_string());
        current.tags.push(tag.to_string());
    }
    if !current.words.is_empty() {
        out.push(current);
    }
    if out.is_empty() {
        return Err(file_err(path, "no tagged sentences".into()));
    }
    Ok(out)
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

    const CONLLU: &str = "# sent_id = 1\n# text = Don't go.\n\
        1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n\
        1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n\
        2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n\
        3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n\
        3.1\tgone\t_\t_\t_\t_\t_\t_\t_\t_\n\
        4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_\n\n\
        1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_\n\n";

    #[test]
    fn reads_conllu_words_with_upos_or_xpos() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.conllu");
        std::fs::write(&p, CONLLU).expect("write");
        let upos = read_tagged(&p)?;
        assert_eq!(upos.len(), 2);
        assert_eq!(upos[0].words, ["Do", "n't", "go", "."]);
        assert_eq!(upos[0].tags, ["AUX", "PART", "VERB", "PUNCT"]);
        assert_eq!((upos[0].line, upos[1].line), (4, 10));
        assert_eq!(
            read_conllu(&p, UdColumn::Xpos)?[0].tags,
            ["VBP", "RB", "VB", "."]
        );
        Ok(())
    }

    #[test]
    fn bad_conllu_lines_name_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.conllu");
        for (text, want) in [
            (
                CONLLU.replace("\tPART\t", " PART\t"),
                "line 5: 9 tab-separated columns",
            ),
            (
                CONLLU.replace("4\t.\t", "x\t.\t"),
                "line 8: the word ID `x`",
            ),
            (
                CONLLU.replace("\tINTJ\t", "\t_\t"),
                "line 10: the word `Yes` has no UPOS tag",
            ),
            ("# only a comment\n".to_string(), "no tagged sentences"),
        ] {
            std::fs::write(&p, text).expect("write");
            let e = read_tagged(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("bad.conllu"), "{e}");
        }
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
