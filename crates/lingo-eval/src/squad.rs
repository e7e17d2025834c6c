//! SQuAD v1.1 exact match and F1, as the official evaluation script computes them: answers are
//! lower-cased, stripped of ASCII punctuation and of the articles a/an/the, and whitespace-joined;
//! each question takes its best score over the reference answers; totals are percentages.

use crate::{check_pairs, MetricError};
use serde::Serialize;
use std::collections::HashMap;

/// The official script's `normalize_answer`.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // `re.sub(r"\b(a|an|the)\b", " ", text)` then `" ".join(text.split())`: after removing
    // punctuation, whole whitespace-separated words are what `\b` delimits, except inside runs of
    // word characters joined by non-ASCII non-word symbols — which the script also splits, so match
    // it by splitting on anything that is not a word character.
    let mut out = String::with_capacity(no_punct.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !matches!(word.as_str(), "a" | "an" | "the") {
            out.push_str(word);
        } else {
            out.push(' ');
        }
        word.clear();
    };
    for c in no_punct.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `prediction` equals `truth` after normalisation.
pub fn exact_match(prediction: &str, truth: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(truth)
}

/// Token-level F1 of the normalised answers (0 when they share no token).
pub fn f1_score(prediction: &str, truth: &str) -> f64 {
    let p = normalize_answer(prediction);
    let t = normalize_answer(truth);
    let (p, t): (Vec<&str>, Vec<&str>) = (
        p.split_whitespace().collect(),
        t.split_whitespace().collect(),
    );
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in &t {
        *counts.entry(w).or_default() += 1;
    }
    let mut same = 0;
    for w in &p {
        if let Some(c) = counts.get_mut(w) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / t.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Exact match and F1, each 0–100.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SquadScores {
    pub exact_match: f64,
    pub f1: f64,
}

/// Scores one prediction per question against that question's reference answers.
pub fn squad<S: AsRef<str>>(
    predictions: &[S],
    answers: &[Vec<String>],
) -> Result<SquadScores, MetricError> {
    check_pairs(predictions.len(), answers.len())?;
    let (mut em, mut f1) = (0.0, 0.0);
    for (p, truths) in predictions.iter().zip(answers) {
        let p = p.as_ref();
        em += if truths.iter().any(|t| exact_match(p, t)) {
            1.0
        } else {
            0.0
        };
        f1 += truths.iter().map(|t| f1_score(p, t)).fold(0.0, f64::max);
    }
    let n = predictions.len() as f64;
    Ok(SquadScores {
        exact_match: 100.0 * em / n,
        f1: 100.0 * f1 / n,
    })
}

/// The official script's interface: the SQuAD dataset JSON and `{question id: answer}`
/// predictions. As there, a question with no prediction scores 0 (and is reported).
pub fn evaluate_dataset(
    dataset: &serde_json::Value,
    predictions: &HashMap<String, String>,
) -> Result<(SquadScores, Vec<String>), MetricError> {
    let data = dataset["data"]
        .as_array()
        .ok_or_else(|| MetricError::Invalid("the dataset has no `data` list".into()))?;
    let (mut preds, mut answers, mut unanswered) = (Vec::new(), Vec::new(), Vec::new());
    for (a, article) in data.iter().enumerate() {
        let paragraphs = article["paragraphs"]
            .as_array()
            .ok_or_else(|| MetricError::Invalid(format!("data[{a}] has no `paragraphs` list")))?;
        for paragraph in paragraphs {
            for qa in paragraph["qas"].as_array().into_iter().flatten() {
                let id = qa["id"].as_str().ok_or_else(|| {
                    MetricError::Invalid(format!("data[{a}]: a question has no `id`"))
                })?;
                let truths: Vec<String> = qa["answers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x["text"].as_str().map(str::to_string))
                    .collect();
                let prediction = match predictions.get(id) {
                    Some(p) => p.clone(),
                    None => {
                        unanswered.push(id.to_string());
                        String::new()
                    }
                };
                // An empty prediction scores 0 against any non-empty answer, as unanswered ones do.
                preds.push(prediction);
                answers.push(if truths.is_empty() {
                    vec![String::new()]
                } else {
                    truths
                });
            }
        }
    }
    Ok((squad(&preds, &answers)?, unanswered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_near, fixture};

    #[test]
    fn matches_the_official_script() {
        let f = fixture("squad.json");
        let preds: HashMap<String, String> =
            serde_json::from_value(f["predictions"].clone()).expect("predictions");
        let (scores, unanswered) = evaluate_dataset(&f["dataset"], &preds).expect("scores");
        assert!(unanswered.is_empty());
        assert_near(&scores.exact_match.into(), &f["exact_match"], 1e-9, "EM");
        assert_near(&scores.f1.into(), &f["f1"], 1e-9, "F1");
        for (raw, want) in f["normalized"].as_object().expect("normalized") {
            assert_eq!(
                normalize_answer(raw),
                want.as_str().expect("string"),
                "{raw}"
            );
        }
        // A missing prediction counts as wrong.
        let mut fewer = preds.clone();
        fewer.remove("q1");
        let (partial, unanswered) = evaluate_dataset(&f["dataset"], &fewer).expect("scores");
        assert_eq!(unanswered, vec!["q1".to_string()]);
        assert!(partial.f1 < scores.f1);
    }
}
