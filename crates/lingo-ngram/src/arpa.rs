//! ARPA files, as SRILM and KenLM read and write them: `\data\` with the count of each order,
//! then per order `log10 p <TAB> w1 … wn [<TAB> log10 backoff]`, then `\end\`.

use crate::counts::{Grams, Vocab};
use crate::model::{Level, NgramModel};
use crate::{NgramError, Result};
use std::fmt::Write as _;

impl NgramModel {
    /// The model as an ARPA file's text.
    pub fn to_arpa(&self) -> String {
        let mut out = String::from("\n\\data\\\n");
        for (i, level) in self.levels.iter().enumerate() {
            let _ = writeln!(out, "ngram {}={}", i + 1, level.grams.len());
        }
        let top = self.levels.len();
        for (i, level) in self.levels.iter().enumerate() {
            let _ = write!(out, "\n\\{}-grams:\n", i + 1);
            for g in 0..level.grams.len() {
                let _ = write!(out, "{}\t", level.logp[g]);
                for (k, &w) in level.grams.gram(g).iter().enumerate() {
                    if k > 0 {
                        out.push(' ');
                    }
                    out.push_str(self.vocab.word(w));
                }
                if i + 1 < top {
                    let _ = write!(out, "\t{}", level.bow[g]);
                }
                out.push('\n');
            }
        }
        out.push_str("\n\\end\\\n");
        out
    }

    /// Reads an ARPA file's text; `name` labels errors.
    pub fn from_arpa(text: &str, name: &str) -> Result<NgramModel> {
        let err = |line: usize, msg: String| NgramError::Arpa {
            path: name.to_string(),
            line,
            msg,
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        // Header: `\data\` then `ngram n=count` lines.
        let mut declared: Vec<usize> = Vec::new();
        let mut found_data = false;
        let mut pending = None;
        for (no, line) in lines.by_ref() {
            if line.is_empty() {
                continue;
            }
            if !found_data {
                if line == "\\data\\" {
                    found_data = true;
                    continue;
                }
                return Err(err(no, format!("expected \\data\\, found `{line}`")));
            }
            if let Some(rest) = line.strip_prefix("ngram ") {
                let (n, count) = rest
                    .split_once('=')
                    .ok_or_else(|| err(no, format!("expected `ngram N=COUNT`, found `{line}`")))?;
                let parse = |s: &str| {
                    s.trim()
                        .parse::<usize>()
                        .map_err(|_| err(no, format!("not a number: `{s}`")))
                };
                let (n, count) = (parse(n)?, parse(count)?);
                if n != declared.len() + 1 {
                    return Err(err(no, format!("ngram {n} declared out of order")));
                }
                if count > text.len() {
                    return Err(err(
                        no,
                        format!("{count} {n}-grams cannot fit in this file"),
                    ));
                }
                declared.push(count);
                continue;
            }
            pending = Some((no, line));
            break;
        }
        if declared.is_empty() {
            return Err(err(
                0,
                "no `ngram N=COUNT` lines in the \\data\\ section".into(),
            ));
        }
        let mut vocab = Vocab::default();
        let mut raw: Vec<Vec<(Vec<u32>, f32, f32)>> = vec![Vec::new(); declared.len()];
        let mut section = 0usize;
        let mut ended = false;
        let mut next = pending;
        while let Some((no, line)) = next.take().or_else(|| lines.next()) {
            if line.is_empty() {
                continue;
            }
            if line == "\\end\\" {
                ended = true;
                break;
            }
            if let Some(n) = line
                .strip_prefix('\\')
                .and_then(|l| l.strip_suffix("-grams:"))
            {
                section = n
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1 && n <= declared.len())
                    .ok_or_else(|| err(no, format!("unexpected section `{line}`")))?;
                continue;
            }
            if section == 0 {
                return Err(err(no, format!("an n-gram before any section: `{line}`")));
            }
            let mut fields = line.split_whitespace();
            let logp: f32 = (fields.next().unwrap_or(""))
                .parse()
                .map_err(|_| err(no, format!("not a log probability: `{line}`")))?;
            let words: Vec<&str> = fields.by_ref().take(section).collect();
            if words.len() != section {
                return Err(err(
                    no,
                    format!("a {section}-gram needs {section} words: `{line}`"),
                ));
            }
            let bow = match fields.next() {
                Some(b) => b
                    .parse()
                    .map_err(|_| err(no, format!("not a backoff weight: `{b}`")))?,
                None => 0.0,
            };
            if fields.next().is_some() {
                return Err(err(no, format!("too many fields: `{line}`")));
            }
            let ids = words
                .iter()
                .map(|w| match section {
                    1 => Ok(vocab.add(w)),
                    _ => vocab
                        .get(w)
                        .ok_or_else(|| err(no, format!("`{w}` is not among the unigrams"))),
                })
                .collect::<Result<Vec<u32>>>()?;
            raw[section - 1].push((ids, logp, bow));
        }
        if !ended {
            return Err(err(
                text.lines().count(),
                "missing \\end\\ (truncated file?)".into(),
            ));
        }
        for (n, (grams, &want)) in raw.iter().zip(&declared).enumerate() {
            if grams.len() != want {
                return Err(err(
                    0,
                    format!(
                        "\\data\\ declares {want} {}-grams, the file has {}",
                        n + 1,
                        grams.len()
                    ),
                ));
            }
        }
        let levels = raw
            .into_iter()
            .enumerate()
            .map(|(i, mut grams)| {
                grams.sort_by(|a, b| a.0.cmp(&b.0));
                let mut level = Level {
                    grams: Grams {
                        n: i + 1,
                        ids: Vec::with_capacity(grams.len() * (i + 1)),
                        counts: vec![0; grams.len()],
                    },
                    logp: Vec::with_capacity(grams.len()),
                    bow: Vec::with_capacity(grams.len()),
                };
                for (ids, logp, bow) in grams {
                    level.grams.ids.extend(ids);
                    level.logp.push(logp);
                    level.bow.push(bow);
                }
                level
            })
            .collect();
        Ok(NgramModel { vocab, levels })
    }
}

#[cfg(test)]
mod tests {
    use crate::{estimate, Counts, NgramModel, Smoothing};

    fn model() -> NgramModel {
        let text = crate::model::tests::corpus(1000);
        let counts = Counts::count(
            3,
            text.iter().map(|s| s.iter().map(|w| w.as_str()).collect()),
        )
        .unwrap();
        estimate(&counts, Smoothing::ModifiedKneserNey).unwrap()
    }

    #[test]
    fn arpa_round_trips_and_scores_the_same() {
        let m = model();
        let text = m.to_arpa();
        let back = NgramModel::from_arpa(&text, "test.arpa").unwrap();
        assert_eq!(back.to_arpa(), text);
        let probe = [vec!["w1", "w2", "w3"], vec!["w5", "unknown", "r17"]];
        assert_eq!(m.evaluate(probe.clone()), back.evaluate(probe));
    }

    #[test]
    fn malformed_files_name_the_line() {
        let text = model().to_arpa();
        let truncated = &text[..=text[..text.len() / 2].rfind('\n').unwrap()];
        let e = NgramModel::from_arpa(truncated, "t.arpa")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.arpa: line") && e.contains("\\end\\"),
            "{e}"
        );
        let bad = text.replacen("\n-", "\nx-", 1);
        let e = NgramModel::from_arpa(&bad, "b.arpa")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a log probability"), "{e}");
        let e = NgramModel::from_arpa("hello", "h.arpa")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("\\data\\"), "{e}");
        let e = NgramModel::from_arpa("\\data\\\nngram 1=99999999999\n", "n.arpa")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot fit"), "{e}");
    }
}
