//! Labelled texts for classification: tab- or comma-separated files with a header line, or JSON
//! lines, gzip-compressed when the name ends in `.gz`. Columns are found by name — the text in
//! `text`, `sentence` or `sentence1` (`question` for pairs), an optional second text in
//! `text_pair`, `sentence2` or `context`, the label in `label` — so GLUE's files read as they are
//! (SST-2's `sentence<TAB>label`). Errors name the file and line.

use crate::parallel::{file_err, read_lines};
use crate::Result;
use std::path::Path;

/// One example: a text (or a pair) and its label as written in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledText {
    pub text: String,
    pub text_pair: Option<String>,
    pub label: String,
    /// 1-based line in the file, for error messages.
    pub line: usize,
}

impl LabelledText {
    /// The index of this example's label in `labels` (the training labels); an unknown label is
    /// an error naming its line and the labels there are.
    pub fn label_index(&self, labels: &[String]) -> std::result::Result<u32, String> {
        (labels.iter().position(|l| *l == self.label))
            .map(|i| i as u32)
            .ok_or_else(|| {
                format!(
                    "line {}: label `{}` is not among the training labels ({})",
                    self.line,
                    self.label,
                    labels.join(", ")
                )
            })
    }
}

const TEXT: [&str; 4] = ["text", "sentence", "sentence1", "question"];
const PAIR: [&str; 4] = ["text_pair", "sentence2", "context", "question2"];
const LABEL: [&str; 1] = ["label"];

/// Reads every example of `path`; an empty file, a missing column or a malformed line is an error.
pub fn read_labelled(path: &Path) -> Result<Vec<LabelledText>> {
    let name = path
        .to_string_lossy()
        .trim_end_matches(".gz")
        .to_lowercase();
    let lines = read_lines(path)?;
    let examples = if name.ends_with(".jsonl") || name.ends_with(".json") {
        read_jsonl(path, &lines)?
    } else if name.ends_with(".tsv") || name.ends_with(".csv") {
        read_table(path, &lines, name.ends_with(".csv"))?
    } else {
        return Err(file_err(
            path,
            "expected a .tsv, .csv or .jsonl file (optionally .gz)".into(),
        ));
    };
    if examples.is_empty() {
        return Err(file_err(path, "no examples after the header".into()));
    }
    Ok(examples)
}

fn read_jsonl(path: &Path, lines: &[String]) -> Result<Vec<LabelledText>> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |m: String| file_err(path, format!("line {}: {m}", i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not valid JSON ({e})")))?;
        let field = |names: &[&str]| names.iter().find_map(|n| v.get(*n)).cloned();
        let as_text = |x: serde_json::Value, what: &str| match x {
            serde_json::Value::String(s) => Ok(s),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            serde_json::Value::Bool(b) => Ok(b.to_string()),
            other => Err(at(format!(
                "`{what}` must be a string or a number, got {other}"
            ))),
        };
        let text = field(&TEXT).ok_or_else(|| at("no `text` field".into()))?;
        let label = field(&LABEL).ok_or_else(|| at("no `label` field".into()))?;
        out.push(LabelledText {
            text: as_text(text, "text")?,
            text_pair: field(&PAIR).map(|p| as_text(p, "text_pair")).transpose()?,
            label: as_text(label, "label")?,
            line: i + 1,
        });
    }
    Ok(out)
}

/// Splits one CSV record: commas outside double quotes separate fields, `""` is a quote.
fn csv_fields(line: &str) -> Option<Vec<String>> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    (!quoted).then_some(fields)
}

fn read_table(path: &Path, lines: &[String], csv: bool) -> Result<Vec<LabelledText>> {
    let split = |line: &str| -> Option<Vec<String>> {
        if csv {
            csv_fields(line)
        } else {
            Some(line.split('\t').map(str::to_string).collect())
        }
    };
    let header = split(&lines[0]).ok_or_else(|| file_err(path, "line 1: unclosed quote".into()))?;
    let column = |names: &[&str]| {
        header
            .iter()
            .position(|h| names.contains(&h.trim().to_lowercase().as_str()))
    };
    let text = column(&TEXT).ok_or_else(|| {
        file_err(
            path,
            format!(
                "line 1: no text column (one of {}) in the header {header:?}",
                TEXT.join(", ")
            ),
        )
    })?;
    let label = column(&LABEL).ok_or_else(|| {
        file_err(
            path,
            format!("line 1: no `label` column in the header {header:?}"),
        )
    })?;
    let pair = column(&PAIR);
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields =
            split(line).ok_or_else(|| file_err(path, format!("line {}: unclosed quote", i + 1)))?;
        if fields.len() != header.len() {
            return Err(file_err(
                path,
                format!(
                    "line {}: {} columns, the header has {}",
                    i + 1,
                    fields.len(),
                    header.len()
                ),
            ));
        }
        out.push(LabelledText {
            text: fields[text].trim().to_string(),
            text_pair: pair.map(|p| fields[p].trim().to_string()),
            label: fields[label].trim().to_string(),
            line: i + 1,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn reads_tsv_csv_and_jsonl() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let tsv = write(
            dir.path(),
            "a.tsv",
            "sentence\tlabel\na fine film \t1\nbad\t0\n",
        );
        let got = read_labelled(&tsv)?;
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].text.as_str(), got[0].label.as_str()),
            ("a fine film", "1")
        );
        let csv = write(
            dir.path(),
            "b.csv",
            "sentence1,sentence2,label\n\"he said \"\"hi\"\", then left\",ok,entailment\n",
        );
        let got = read_labelled(&csv)?;
        assert_eq!(got[0].text, "he said \"hi\", then left");
        assert_eq!(got[0].text_pair.as_deref(), Some("ok"));
        let jsonl = write(
            dir.path(),
            "c.jsonl",
            "{\"text\": \"x\", \"label\": 2.5}\n\n{\"text\": \"y\", \"text_pair\": \"z\", \"label\": \"pos\"}\n",
        );
        let got = read_labelled(&jsonl)?;
        assert_eq!(got[0].label, "2.5");
        assert_eq!((got[1].line, got[1].text_pair.as_deref()), (3, Some("z")));
        Ok(())
    }

    #[test]
    fn bad_files_name_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            (
                "a.tsv",
                "sentence\tlabel\ngood\t1\nno label\n",
                "line 3: 1 columns",
            ),
            ("b.tsv", "text\tscore\nx\t1\n", "no `label` column"),
            ("c.tsv", "sentence\tlabel\n", "no examples"),
            ("d.jsonl", "{\"text\": \"x\"}\n", "line 1: no `label` field"),
            (
                "e.jsonl",
                "{\"text\": \"x\", \"label\": 1}\n{oops\n",
                "line 2: not valid JSON",
            ),
            ("f.txt", "x\n", "expected a .tsv"),
        ];
        for (name, text, want) in cases {
            let p = write(dir.path(), name, text);
            let e = read_labelled(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(name), "{name}: {e}");
        }
    }
}
