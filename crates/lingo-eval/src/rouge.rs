//! ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum (Lin, 2004) as Google's `rouge-score` computes them:
//! text lower-cased, every run of characters outside `[a-z0-9]` a separator, tokens longer than three
//! letters optionally Porter-stemmed (NLTK's rules, [`crate::porter`]); n-gram overlap with clipped
//! counts; LCS for ROUGE-L; for ROUGE-Lsum, sentences are lines and each reference sentence takes
//! the union of its LCS with every predicted sentence, without double counting.

use crate::{check_pairs, MetricError};
use serde::Serialize;
use std::collections::HashMap;

/// Precision, recall and F-measure of one ROUGE type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl RougeScore {
    fn new(hits: usize, predicted: usize, reference: usize) -> Self {
        let precision = hits as f64 / predicted.max(1) as f64;
        let recall = hits as f64 / reference.max(1) as f64;
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        RougeScore {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// The four ROUGE types of one prediction against one reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rouge {
    pub rouge1: RougeScore,
    pub rouge2: RougeScore,
    #[serde(rename = "rougeL")]
    pub rouge_l: RougeScore,
    #[serde(rename = "rougeLsum")]
    pub rouge_lsum: RougeScore,
}

/// rouge-score's tokenizer.
pub fn tokenize(text: &str, stem: bool) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| {
            if stem && t.len() > 3 {
                crate::porter::stem(t)
            } else {
                t.to_string()
            }
        })
        .filter(|t| !t.is_empty())
        .collect()
}

fn ngram_score(reference: &[String], prediction: &[String], n: usize) -> RougeScore {
    fn grams(t: &[String], n: usize) -> HashMap<&[String], usize> {
        let mut m = HashMap::new();
        for g in t.windows(n) {
            *m.entry(g).or_default() += 1;
        }
        m
    }
    let (r, p) = (grams(reference, n), grams(prediction, n));
    let hits = r
        .iter()
        .map(|(g, &c)| c.min(p.get(g).copied().unwrap_or(0)))
        .sum();
    RougeScore::new(
        hits,
        prediction.len().saturating_sub(n - 1),
        reference.len().saturating_sub(n - 1),
    )
}

/// The LCS dynamic-programming table of `a` (rows) and `b` (columns).
fn lcs_table(a: &[String], b: &[String]) -> Vec<Vec<usize>> {
    let mut t = vec![vec![0; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            t[i][j] = if a[i - 1] == b[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    t
}

/// Indices into `a` of one LCS of `a` and `b`, read back as rouge-score does.
fn lcs_indices(a: &[String], b: &[String]) -> Vec<usize> {
    let t = lcs_table(a, b);
    let (mut i, mut j) = (a.len(), b.len());
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i][j - 1] > t[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    out.reverse();
    out
}

fn lcs_score(reference: &[String], prediction: &[String]) -> RougeScore {
    if reference.is_empty() || prediction.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_table(reference, prediction)[reference.len()][prediction.len()];
    RougeScore::new(lcs, prediction.len(), reference.len())
}

fn summary_lcs_score(reference: &[Vec<String>], prediction: &[Vec<String>]) -> RougeScore {
    let m: usize = reference.iter().map(Vec::len).sum();
    let n: usize = prediction.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return RougeScore::default();
    }
    let count = |sents: &[Vec<String>]| {
        let mut c: HashMap<String, usize> = HashMap::new();
        for t in sents.iter().flatten() {
            *c.entry(t.clone()).or_default() += 1;
        }
        c
    };
    let (mut left_r, mut left_p) = (count(reference), count(prediction));
    let mut hits = 0;
    for r in reference {
        let mut union: Vec<usize> = prediction.iter().flat_map(|p| lcs_indices(r, p)).collect();
        union.sort_unstable();
        union.dedup();
        for i in union {
            let t = &r[i];
            let (cr, cp) = (left_r.get_mut(t), left_p.get_mut(t));
            if let (Some(cr), Some(cp)) = (cr, cp) {
                if *cr > 0 && *cp > 0 {
                    hits += 1;
                    *cr -= 1;
                    *cp -= 1;
                }
            }
        }
    }
    RougeScore::new(hits, n, m)
}

/// ROUGE of one `prediction` against one `reference`.
pub fn rouge(prediction: &str, reference: &str, stem: bool) -> Rouge {
    let (p, r) = (tokenize(prediction, stem), tokenize(reference, stem));
    let sentences = |text: &str| -> Vec<Vec<String>> {
        text.split('\n')
            .filter(|s| !s.is_empty())
            .map(|s| tokenize(s, stem))
            .collect()
    };
    Rouge {
        rouge1: ngram_score(&r, &p, 1),
        rouge2: ngram_score(&r, &p, 2),
        rouge_l: lcs_score(&r, &p),
        rouge_lsum: summary_lcs_score(&sentences(reference), &sentences(prediction)),
    }
}

/// Mean F-measures over a corpus (what `evaluate`'s `rouge` and the summarisation papers report),
/// each 0–1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CorpusRouge {
    pub rouge1: f64,
    pub rouge2: f64,
    #[serde(rename = "rougeL")]
    pub rouge_l: f64,
    #[serde(rename = "rougeLsum")]
    pub rouge_lsum: f64,
}

pub fn corpus_rouge<S: AsRef<str>>(
    predictions: &[S],
    references: &[S],
    stem: bool,
) -> Result<CorpusRouge, MetricError> {
    check_pairs(predictions.len(), references.len())?;
    let mut total = CorpusRouge::default();
    for (p, r) in predictions.iter().zip(references) {
        let s = rouge(p.as_ref(), r.as_ref(), stem);
        total.rouge1 += s.rouge1.fmeasure;
        total.rouge2 += s.rouge2.fmeasure;
        total.rouge_l += s.rouge_l.fmeasure;
        total.rouge_lsum += s.rouge_lsum.fmeasure;
    }
    let n = predictions.len() as f64;
    Ok(CorpusRouge {
        rouge1: total.rouge1 / n,
        rouge2: total.rouge2 / n,
        rouge_l: total.rouge_l / n,
        rouge_lsum: total.rouge_lsum / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_near, fixture};

    #[test]
    fn matches_rouge_score_with_and_without_stemming() {
        let f = fixture("rouge.json");
        let cases = f["cases"].as_array().expect("cases");
        assert!(cases.len() >= 10);
        for case in cases {
            let (p, r) = (
                case["prediction"].as_str().expect("prediction"),
                case["reference"].as_str().expect("reference"),
            );
            let stem = case["stem"].as_bool().expect("stem");
            let got = serde_json::to_value(rouge(p, r, stem)).expect("json");
            for t in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
                for m in ["precision", "recall", "fmeasure"] {
                    assert_near(
                        &got[t][m],
                        &case[t][m],
                        1e-12,
                        &format!("{p:?} {t} {m} {stem}"),
                    );
                }
            }
        }
    }
}
