//! Reading sentence pairs for translation and summarisation: two line-aligned files (line *i* of one
//! translates line *i* of the other), one tab-separated file (`source<TAB>target`), or JSON — lines
//! of objects, or one array of them (SAMSum's layout) — with the two sides under given field names
//! (`source` and `target` unless told). Files ending in `.gz` are decompressed. Errors name the file
//! and line (or record).

use crate::synthetic::Pair;
use crate::{DataError, Result};
use std::io::Read;
use std::path::Path;

pub(crate) fn file_err(path: &Path, message: String) -> DataError {
    DataError::File {
        path: path.into(),
        message,
    }
}

/// The text of a UTF-8 file (gzip-compressed if its name ends in `.gz`); an empty file is an error.
pub fn read_file(path: &Path) -> Result<String> {
    let raw = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read ({e})")))?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| file_err(path, format!("not a valid gzip file ({e})")))?;
        out
    } else {
        raw
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        file_err(
            path,
            format!(
                "not valid UTF-8 (first bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    if text.trim().is_empty() {
        return Err(file_err(path, "the file is empty".into()));
    }
    Ok(text)
}

/// The lines of a UTF-8 text file (gzip-compressed if its name ends in `.gz`), without line endings.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    Ok(read_file(path)?
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect())
}

fn check_nonempty(path: &Path, line: usize, side: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(file_err(
            path,
            format!("line {line}: the {side} sentence is empty"),
        ));
    }
    Ok(())
}

/// Sentence pairs from `source` and, if given, the line-aligned `target` file; with no `target`,
/// `source` must be `.tsv` or `.jsonl` (optionally `.gz`).
pub fn read_pairs(source: &Path, target: Option<&Path>) -> Result<Vec<Pair>> {
    let fields = ("source", "target");
    if target.is_none() && is_json(source) {
        let (pairs, empty) = read_json_pairs(source, fields)?;
        if let Some(record) = empty.first() {
            return Err(file_err(
                source,
                format!("record {record}: the source or target is empty"),
            ));
        }
        return Ok(pairs);
    }
    read_text_pairs(source, target)
}

/// Whether `path` names a JSON or JSON-lines file (optionally `.gz`).
pub fn is_json(path: &Path) -> bool {
    let name = path.to_string_lossy();
    let name = name.trim_end_matches(".gz");
    name.ends_with(".jsonl") || name.ends_with(".json")
}

/// Pairs from a JSON file — one object per line, or one array of objects — with the source under
/// `fields.0` and the target under `fields.1`. Records with an empty source or target are left
/// out; their numbers (1-based) are returned beside the pairs (SAMSum's training split holds one
/// empty dialogue).
pub fn read_json_pairs(path: &Path, fields: (&str, &str)) -> Result<(Vec<Pair>, Vec<usize>)> {
    let text = read_file(path)?;
    let records: Vec<(usize, serde_json::Value)> = if text.trim_start().starts_with('[') {
        let all: Vec<serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| file_err(path, format!("not a valid JSON array ({e})")))?;
        all.into_iter()
            .enumerate()
            .map(|(i, v)| (i + 1, v))
            .collect()
    } else {
        (text.lines().enumerate())
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .map(|v| (i + 1, v))
                    .map_err(|e| file_err(path, format!("line {}: not valid JSON ({e})", i + 1)))
            })
            .collect::<Result<_>>()?
    };
    let (mut pairs, mut empty) = (Vec::with_capacity(records.len()), Vec::new());
    for (n, v) in records {
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(String::from)
                .ok_or_else(|| file_err(path, format!("record {n}: missing string field `{k}`")))
        };
        let (s, t) = (field(fields.0)?, field(fields.1)?);
        if s.trim().is_empty() || t.trim().is_empty() {
            empty.push(n);
        } else {
            pairs.push((s, t));
        }
    }
    if pairs.is_empty() {
        return Err(file_err(path, "no pairs with a source and a target".into()));
    }
    Ok((pairs, empty))
}

/// Pairs from line-aligned files or a `.tsv` file.
fn read_text_pairs(source: &Path, target: Option<&Path>) -> Result<Vec<Pair>> {
    let lines = read_lines(source)?;
    let mut pairs = Vec::with_capacity(lines.len());
    match target {
        Some(target) => {
            let targets = read_lines(target)?;
            if lines.len() != targets.len() {
                return Err(DataError::Invalid(format!(
                    "{} has {} lines but {} has {}: the files must be line-aligned",
                    source.display(),
                    lines.len(),
                    target.display(),
                    targets.len()
                )));
            }
            for (i, (s, t)) in lines.into_iter().zip(targets).enumerate() {
                check_nonempty(source, i + 1, "source", &s)?;
                check_nonempty(target, i + 1, "target", &t)?;
                pairs.push((s, t));
            }
        }
        None => {
            let name = source.to_string_lossy().trim_end_matches(".gz").to_string();
            if !name.ends_with(".tsv") {
                return Err(file_err(
                    source,
                    "give a target file too, or use a .tsv or .jsonl file of pairs".into(),
                ));
            }
            for (i, line) in lines
                .into_iter()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let n = i + 1;
                let mut parts = line.split('\t');
                let (s, t) = match (parts.next(), parts.next(), parts.next()) {
                    (Some(s), Some(t), None) => (s.to_string(), t.to_string()),
                    _ => {
                        return Err(file_err(
                            source,
                            format!("line {n}: expected exactly one tab between source and target"),
                        ))
                    }
                };
                check_nonempty(source, n, "source", &s)?;
                check_nonempty(source, n, "target", &t)?;
                pairs.push((s, t));
            }
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_aligned_files_tsv_jsonl_and_gzip() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let en = p("a.en", "a dog\nthe sun\n");
        let de = p("a.de", "ein Hund\ndie Sonne\n");
        assert_eq!(
            read_pairs(&en, Some(&de))?[1],
            ("the sun".into(), "die Sonne".into())
        );
        let tsv = p("p.tsv", "a dog\tein Hund\n");
        assert_eq!(read_pairs(&tsv, None)?.len(), 1);
        let jsonl = p(
            "p.jsonl",
            "{\"source\": \"a dog\", \"target\": \"ein Hund\"}\n",
        );
        assert_eq!(read_pairs(&jsonl, None)?[0].1, "ein Hund");
        let gz = dir.path().join("a.en.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(b"a dog\nthe sun\n").unwrap();
        enc.finish().unwrap();
        assert_eq!(read_pairs(&gz, Some(&de))?.len(), 2);
        Ok(())
    }

    #[test]
    fn mismatched_counts_empty_lines_and_bad_rows_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (en, de) = (p("b.en", "one\ntwo\nthree\n"), p("b.de", "eins\nzwei\n"));
        let err = read_pairs(&en, Some(&de)).unwrap_err().to_string();
        assert!(
            err.contains("has 3 lines") && err.contains("has 2"),
            "{err}"
        );
        let (en, de) = (p("c.en", "one\n\nthree\n"), p("c.de", "eins\nzwei\ndrei\n"));
        let err = read_pairs(&en, Some(&de)).unwrap_err().to_string();
        assert!(
            err.contains("c.en") && err.contains("line 2") && err.contains("empty"),
            "{err}"
        );
        let tsv = p("d.tsv", "one\teins\ntwo zwei\n");
        let err = read_pairs(&tsv, None).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("tab"), "{err}");
        let jsonl = p("e.jsonl", "{\"source\": \"x\"}\n");
        let err = read_pairs(&jsonl, None).unwrap_err().to_string();
        assert!(
            err.contains("`target`") && err.contains("record 1"),
            "{err}"
        );
        // A JSON array under other field names, one record with an empty source left out.
        let array = p(
            "g.json",
            r#"[{"dialogue": "a: hi", "summary": "a greets"}, {"dialogue": "", "summary": "x"}]"#,
        );
        let (pairs, empty) = read_json_pairs(&array, ("dialogue", "summary")).unwrap();
        assert_eq!((pairs.len(), empty), (1, vec![2]));
        let err = read_pairs(&array, None).unwrap_err().to_string();
        assert!(err.contains("`source`"), "{err}");
        let txt = p("f.txt", "x\n");
        assert!(read_pairs(&txt, None)
            .unwrap_err()
            .to_string()
            .contains("give a target file"));
    }
}
