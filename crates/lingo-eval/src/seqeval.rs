//! Entity-level precision, recall and F1 of tag sequences, as `seqeval` computes them.
//!
//! An entity is a (sentence, type, first token, last token) span; a predicted entity counts only if
//! the same span with the same type is in the references. Two ways of reading spans from tags:
//! - [`Mode::Default`]: seqeval's default, conlleval's lenient rules — a chunk starts at `B-`/`S-`,
//!   at an `I-`/`E-` after `O` or after an entity of another type, and ends before any tag that
//!   cannot continue it. It reads IOB1, IOB2, IOE and BIOES alike.
//! - [`Mode::Strict`]: `mode="strict", scheme=IOB2` — only `B-` starts an entity, `I-` of the same
//!   type continues it; a stray `I-` is no entity; any prefix other than B/I/O is an error.

use crate::{check_pairs, MetricError};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Default,
    Strict,
}

/// One entity span: sentence index, type, first and last token (inclusive).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub sentence: usize,
    pub kind: String,
    pub start: usize,
    pub end: usize,
}

/// Overall (micro-averaged) and per-type scores.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeqevalReport {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub per_type: BTreeMap<String, TypeScores>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TypeScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Reference entities of this type.
    pub support: usize,
}

/// A tag's prefix letter and type: `B-PER` → (`B`, `PER`), `O` → (`O`, `_`), as seqeval splits it.
fn split(tag: &str) -> (char, &str) {
    let mut chars = tag.chars();
    let prefix = chars.next().unwrap_or('O');
    let rest = chars.as_str();
    let kind = rest.split_once('-').map_or(rest, |(_, k)| k);
    (prefix, if kind.is_empty() { "_" } else { kind })
}

fn chunk_ends(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_kind != kind)
}

fn chunk_starts(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_kind != kind)
}

/// The entities of one sentence's tags.
pub fn entities(
    tags: &[impl AsRef<str>],
    sentence: usize,
    mode: Mode,
) -> Result<Vec<Span>, MetricError> {
    match mode {
        Mode::Default => Ok(lenient_entities(tags, sentence)),
        Mode::Strict => strict_iob2_entities(tags, sentence),
    }
}

fn lenient_entities(tags: &[impl AsRef<str>], sentence: usize) -> Vec<Span> {
    let mut spans = Vec::new();
    let (mut prev, mut prev_kind, mut begin) = ('O', "", 0);
    let padded = tags.iter().map(|t| t.as_ref()).chain(std::iter::once("O"));
    for (i, tag) in padded.enumerate() {
        let (p, kind) = split(tag);
        if chunk_ends(prev, p, prev_kind, kind) {
            spans.push(Span {
                sentence,
                kind: prev_kind.to_string(),
                start: begin,
                end: i - 1,
            });
        }
        if chunk_starts(prev, p, prev_kind, kind) {
            begin = i;
        }
        (prev, prev_kind) = (p, kind);
    }
    spans
}

fn strict_iob2_entities(
    tags: &[impl AsRef<str>],
    sentence: usize,
) -> Result<Vec<Span>, MetricError> {
    let parsed = tags
        .iter()
        .map(|t| {
            let t = t.as_ref();
            let (p, kind) = split(t);
            match p {
                'B' | 'I' | 'O' => Ok((p, kind)),
                _ => Err(MetricError::Invalid(format!(
                    "tag `{t}` is not IOB2 (strict mode allows the prefixes B, I and O)"
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut spans = Vec::new();
    let mut i = 0;
    while i < parsed.len() {
        let (p, kind) = parsed[i];
        if p != 'B' {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < parsed.len() && parsed[end] == ('I', kind) {
            end += 1;
        }
        spans.push(Span {
            sentence,
            kind: kind.to_string(),
            start: i,
            end: end - 1,
        });
        i = end;
    }
    Ok(spans)
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Scores `predictions` against `references`, one tag sequence per sentence.
pub fn seqeval<S: AsRef<str>>(
    predictions: &[Vec<S>],
    references: &[Vec<S>],
    mode: Mode,
) -> Result<SeqevalReport, MetricError> {
    check_pairs(predictions.len(), references.len())?;
    let (mut truth, mut guess) = (HashSet::new(), HashSet::new());
    for (s, (p, r)) in predictions.iter().zip(references).enumerate() {
        if p.len() != r.len() {
            return Err(MetricError::Invalid(format!(
                "sentence {}: {} predicted tags but {} reference tags",
                s + 1,
                p.len(),
                r.len()
            )));
        }
        guess.extend(entities(p, s, mode)?);
        truth.extend(entities(r, s, mode)?);
    }
    let kinds: HashSet<&str> = truth
        .iter()
        .chain(&guess)
        .map(|e: &Span| e.kind.as_str())
        .collect();
    let mut per_type = BTreeMap::new();
    for kind in kinds {
        let t: HashSet<&Span> = truth.iter().filter(|e| e.kind == kind).collect();
        let g: HashSet<&Span> = guess.iter().filter(|e| e.kind == kind).collect();
        let hit = t.intersection(&g).count();
        let (p, r) = (ratio(hit, g.len()), ratio(hit, t.len()));
        per_type.insert(
            kind.to_string(),
            TypeScores {
                precision: p,
                recall: r,
                f1: f1(p, r),
                support: t.len(),
            },
        );
    }
    let hit = truth.intersection(&guess).count();
    let (p, r) = (ratio(hit, guess.len()), ratio(hit, truth.len()));
    Ok(SeqevalReport {
        precision: p,
        recall: r,
        f1: f1(p, r),
        per_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_near, fixture};

    #[test]
    fn matches_seqeval_in_both_modes() {
        let f = fixture("seqeval.json");
        let seqs = |v: &serde_json::Value| -> Vec<Vec<String>> {
            serde_json::from_value(v.clone()).expect("tag sequences")
        };
        let (refs, preds) = (seqs(&f["references"]), seqs(&f["predictions"]));
        for (mode, key) in [(Mode::Default, "default"), (Mode::Strict, "strict")] {
            let want = &f[key];
            let rep = seqeval(&preds, &refs, mode).expect("report");
            for m in ["precision", "recall", "f1"] {
                let got = serde_json::to_value(&rep).expect("json");
                assert_near(&got[m], &want[m], 1e-12, &format!("{key} {m}"));
            }
            let types = want["per_type"].as_object().expect("per type");
            assert_eq!(rep.per_type.len(), types.len(), "{key}");
            for (kind, w) in types {
                let got = &rep.per_type[kind];
                assert_near(&got.f1.into(), &w["f1-score"], 1e-12, kind);
                assert_near(&got.precision.into(), &w["precision"], 1e-12, kind);
                assert_near(&got.recall.into(), &w["recall"], 1e-12, kind);
                assert_eq!(
                    got.support as f64,
                    w["support"].as_f64().expect("n"),
                    "{kind}"
                );
            }
        }
    }

    #[test]
    fn lenient_and_strict_spans() {
        let tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG"];
        let kinds = |mode| {
            entities(&tags, 0, mode)
                .expect("spans")
                .into_iter()
                .map(|s| (s.kind, s.start, s.end))
                .collect::<Vec<_>>()
        };
        let d = |k: &str, a, b| (k.to_string(), a, b);
        assert_eq!(
            kinds(Mode::Default),
            vec![
                d("PER", 0, 1),
                d("LOC", 3, 4),
                d("LOC", 5, 5),
                d("ORG", 6, 6)
            ]
        );
        assert_eq!(kinds(Mode::Strict), vec![d("PER", 0, 1), d("LOC", 5, 5)]);
        // BIOES reads in the default mode, and is refused in strict IOB2.
        let bioes = ["S-PER", "B-LOC", "E-LOC"];
        assert_eq!(entities(&bioes, 0, Mode::Default).expect("spans").len(), 2);
        let err = entities(&bioes, 0, Mode::Strict).unwrap_err();
        assert!(err.to_string().contains("S-PER"), "{err}");
        let err = seqeval(&[vec!["O"]], &[vec!["O", "O"]], Mode::Default).unwrap_err();
        assert!(err.to_string().contains("sentence 1"), "{err}");
    }
}
