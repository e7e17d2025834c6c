//! Corpus BLEU (Papineni et al., 2002) with sacreBLEU's default settings: `13a` tokenisation (the
//! `mteval-v13a.pl` rules WMT uses), case-sensitive, 4-gram, `exp` smoothing, closest reference length.
//! Tested against fixtures produced by sacreBLEU itself (`tools/make_bleu_fixtures.py`).

use regex::Regex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::OnceLock;

const MAX_ORDER: usize = 4;

/// A corpus BLEU score with its sufficient statistics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bleu {
    /// 0–100.
    pub score: f64,
    pub correct: [u64; MAX_ORDER],
    pub total: [u64; MAX_ORDER],
    /// n-gram precisions in percent, after smoothing.
    pub precisions: [f64; MAX_ORDER],
    pub brevity_penalty: f64,
    pub sys_len: u64,
    pub ref_len: u64,
}

impl std::fmt::Display for Bleu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.precisions;
        write!(
            f,
            "BLEU = {:.2} {:.1}/{:.1}/{:.1}/{:.1} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            p[0],
            p[1],
            p[2],
            p[3],
            self.brevity_penalty,
            self.sys_len as f64 / self.ref_len.max(1) as f64,
            self.sys_len,
            self.ref_len
        )
    }
}

fn rules() -> &'static [(Regex, &'static str); 4] {
    static RULES: OnceLock<[(Regex, &'static str); 4]> = OnceLock::new();
    RULES.get_or_init(|| {
        let re = |p: &str| Regex::new(p).expect("valid 13a pattern");
        [
            // punctuation and symbols, except apostrophe, hyphen, period and comma
            (re(r"([\{-~\[-` -&\(-\+:-@/])"), " $1 "),
            // period and comma unless preceded by a digit
            (re(r"([^0-9])([\.,])"), "$1 $2 "),
            // period and comma unless followed by a digit
            (re(r"([\.,])([^0-9])"), " $1 $2"),
            // dash when preceded by a digit
            (re(r"([0-9])(-)"), "$1 $2 "),
        ]
    })
}

/// sacreBLEU's `13a` tokeniser.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (re, rep) in rules() {
        line = re.replace_all(&line, *rep).into_owned();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ngrams(tokens: &[&str]) -> HashMap<Vec<String>, u64> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_ORDER {
        for w in tokens.windows(n) {
            *counts
                .entry(w.iter().map(|s| s.to_string()).collect())
                .or_insert(0) += 1;
        }
    }
    counts
}

/// Corpus BLEU of `hypotheses` against one or more reference streams (`references[k][i]` is the k-th
/// reference of sentence i). Every stream must have one line per hypothesis.
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(
    hypotheses: &[H],
    references: &[Vec<R>],
) -> Result<Bleu, String> {
    if references.is_empty() {
        return Err("BLEU needs at least one reference stream".into());
    }
    if let Some(bad) = references.iter().position(|r| r.len() != hypotheses.len()) {
        return Err(format!(
            "reference stream {} has {} lines but there are {} hypotheses",
            bad + 1,
            references[bad].len(),
            hypotheses.len()
        ));
    }
    let (mut correct, mut total) = ([0u64; MAX_ORDER], [0u64; MAX_ORDER]);
    let (mut sys_len, mut ref_len) = (0u64, 0u64);
    for (i, hyp) in hypotheses.iter().enumerate() {
        let hyp = tokenize_13a(hyp.as_ref().trim_end());
        let hyp_tokens: Vec<&str> = hyp.split_whitespace().collect();
        let mut ref_counts: HashMap<Vec<String>, u64> = HashMap::new();
        let mut ref_lens = Vec::new();
        for stream in references {
            let r = tokenize_13a(stream[i].as_ref().trim_end());
            let tokens: Vec<&str> = r.split_whitespace().collect();
            ref_lens.push(tokens.len());
            for (gram, c) in ngrams(&tokens) {
                let e = ref_counts.entry(gram).or_insert(0);
                *e = (*e).max(c);
            }
        }
        // Closest reference length; ties go to the shorter one.
        let hyp_len = hyp_tokens.len();
        let closest = ref_lens
            .iter()
            .copied()
            .min_by_key(|&l| (l.abs_diff(hyp_len), l))
            .unwrap_or(0);
        sys_len += hyp_len as u64;
        ref_len += closest as u64;
        for (gram, c) in ngrams(&hyp_tokens) {
            let n = gram.len() - 1;
            total[n] += c;
            correct[n] += c.min(ref_counts.get(&gram).copied().unwrap_or(0));
        }
    }
    Ok(score_from_stats(correct, total, sys_len, ref_len))
}

/// sacreBLEU's `compute_bleu` with `exp` smoothing.
fn score_from_stats(
    correct: [u64; MAX_ORDER],
    total: [u64; MAX_ORDER],
    sys_len: u64,
    ref_len: u64,
) -> Bleu {
    let brevity_penalty = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut precisions = [0.0; MAX_ORDER];
    let mut bleu = Bleu {
        score: 0.0,
        correct,
        total,
        precisions,
        brevity_penalty,
        sys_len,
        ref_len,
    };
    if correct.iter().all(|&c| c == 0) {
        return bleu;
    }
    let mut smooth = 1.0;
    for n in 0..MAX_ORDER {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    bleu.precisions = precisions;
    bleu.score = brevity_penalty
        * (precisions.iter().map(|&p| log(p)).sum::<f64>() / MAX_ORDER as f64).exp();
    bleu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_follows_13a_rules() {
        assert_eq!(tokenize_13a("Hello, world."), "Hello , world .");
        assert_eq!(
            tokenize_13a("It costs $3.50, or 1,000 yen."),
            "It costs $ 3.50 , or 1,000 yen ."
        );
        assert_eq!(
            tokenize_13a("pages 10-12 (see \"notes\")"),
            "pages 10 - 12 ( see \" notes \" )"
        );
        assert_eq!(tokenize_13a("Tom &amp; Jerry's"), "Tom & Jerry's");
    }

    #[test]
    fn mismatched_lengths_are_errors() {
        let err = corpus_bleu(&["a", "b"], &[vec!["a"]]).unwrap_err();
        assert!(err.contains("1 lines but there are 2"), "{err}");
    }

    /// Fixtures written by sacreBLEU itself (tools/make_bleu_fixtures.py).
    #[test]
    fn matches_sacrebleu_fixtures() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bleu");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("fixture folder") {
            let path = entry.unwrap().path();
            let case: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let hyps: Vec<String> = serde_json::from_value(case["hypotheses"].clone()).unwrap();
            let refs: Vec<Vec<String>> =
                serde_json::from_value(case["references"].clone()).unwrap();
            let got = corpus_bleu(&hyps, &refs).unwrap();
            let want = &case["sacrebleu"];
            let name = path.display();
            assert!(
                (got.score - want["score"].as_f64().unwrap()).abs() < 1e-9,
                "{name}: {got} vs {want}"
            );
            let counts: Vec<u64> = serde_json::from_value(want["counts"].clone()).unwrap();
            let totals: Vec<u64> = serde_json::from_value(want["totals"].clone()).unwrap();
            assert_eq!(got.correct.to_vec(), counts, "{name}");
            assert_eq!(got.total.to_vec(), totals, "{name}");
            assert_eq!(got.sys_len, want["sys_len"].as_u64().unwrap(), "{name}");
            assert_eq!(got.ref_len, want["ref_len"].as_u64().unwrap(), "{name}");
            let tokens: Vec<String> = serde_json::from_value(case["tokenized"].clone()).unwrap();
            for (h, t) in hyps.iter().zip(&tokens) {
                assert_eq!(&tokenize_13a(h), t, "{name}");
            }
            checked += 1;
        }
        assert!(
            checked >= 3,
            "only {checked} fixtures found in {}",
            dir.display()
        );
    }
}
