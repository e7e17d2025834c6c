//! Classification and regression metrics with scikit-learn's definitions: accuracy, precision /
//! recall / F1 (binary, macro, micro, weighted; 0 where a denominator is 0, as `zero_division=0`),
//! Matthews correlation, the confusion matrix, ROC-AUC (binary, and one-vs-rest macro for several
//! classes), log loss; MSE, MAE, RMSE and R². Tested against scikit-learn's output
//! (`tools/make_metric_fixtures.py`).

use crate::{check_pairs, MetricError};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Every label-based metric of one set of predictions. Labels are compared as strings; they are
/// ordered as scikit-learn orders them (numerically when every label is a number).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassificationReport {
    pub accuracy: f64,
    /// Binary metrics of the positive class `1`; present when every label is `0` or `1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub micro_precision: f64,
    pub micro_recall: f64,
    pub micro_f1: f64,
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub weighted_f1: f64,
    pub mcc: f64,
    /// The labels in the order of the confusion matrix's rows and columns.
    pub labels: Vec<String>,
    /// `confusion_matrix[i][j]`: examples of true label `i` predicted as `j`.
    pub confusion_matrix: Vec<Vec<u64>>,
    /// Per label: precision, recall, F1 and support.
    pub per_label: BTreeMap<String, LabelScores>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

fn f1(p: f64, r: f64) -> f64 {
    ratio(2.0 * p * r, p + r)
}

/// Labels in scikit-learn's order: numeric when all parse as numbers, else lexicographic.
pub fn sorted_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut set: Vec<String> = labels.into_iter().map(str::to_string).collect();
    set.sort();
    set.dedup();
    if set.iter().all(|l| l.parse::<f64>().is_ok()) {
        set.sort_by(|a, b| {
            let (x, y) = (
                a.parse::<f64>().unwrap_or(0.0),
                b.parse::<f64>().unwrap_or(0.0),
            );
            x.total_cmp(&y)
        });
    }
    set
}

/// Accuracy, precision/recall/F1 in every averaging, MCC and the confusion matrix.
pub fn classification_report<S: AsRef<str>>(
    predictions: &[S],
    references: &[S],
) -> Result<ClassificationReport, MetricError> {
    check_pairs(predictions.len(), references.len())?;
    let labels = sorted_labels(
        predictions
            .iter()
            .chain(references)
            .map(|s| s.as_ref().trim()),
    );
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let k = labels.len();
    let mut cm = vec![vec![0u64; k]; k];
    for (p, r) in predictions.iter().zip(references) {
        // Every label is in `index`: it was built from these very strings.
        cm[index[r.as_ref().trim()]][index[p.as_ref().trim()]] += 1;
    }
    let n = predictions.len() as f64;
    let tp: Vec<f64> = (0..k).map(|i| cm[i][i] as f64).collect();
    let predicted: Vec<f64> = (0..k)
        .map(|j| (0..k).map(|i| cm[i][j]).sum::<u64>() as f64)
        .collect();
    let support: Vec<f64> = (0..k).map(|i| cm[i].iter().sum::<u64>() as f64).collect();
    let mut per_label = BTreeMap::new();
    let (mut mp, mut mr, mut mf, mut wp, mut wr, mut wf) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..k {
        let p = ratio(tp[i], predicted[i]);
        let r = ratio(tp[i], support[i]);
        let f = f1(p, r);
        (mp, mr, mf) = (mp + p, mr + r, mf + f);
        (wp, wr, wf) = (
            wp + p * support[i],
            wr + r * support[i],
            wf + f * support[i],
        );
        per_label.insert(
            labels[i].clone(),
            LabelScores {
                precision: p,
                recall: r,
                f1: f,
                support: support[i] as u64,
            },
        );
    }
    let correct: f64 = tp.iter().sum();
    let accuracy = correct / n;
    // Matthews correlation in its multi-class form (Gorodkin, 2004), as scikit-learn computes it.
    let cov_pt = correct * n
        - predicted
            .iter()
            .zip(&support)
            .map(|(p, t)| p * t)
            .sum::<f64>();
    let cov_pp = n * n - predicted.iter().map(|p| p * p).sum::<f64>();
    let cov_tt = n * n - support.iter().map(|t| t * t).sum::<f64>();
    let mcc = ratio(cov_pt, (cov_pp * cov_tt).sqrt());
    let binary = labels.iter().all(|l| l == "0" || l == "1");
    let positive = binary.then(|| per_label.get("1").cloned());
    let positive = positive.map(|p| {
        p.unwrap_or(LabelScores {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            support: 0,
        })
    });
    let kf = k as f64;
    Ok(ClassificationReport {
        accuracy,
        precision: positive.as_ref().map(|p| p.precision),
        recall: positive.as_ref().map(|p| p.recall),
        f1: positive.as_ref().map(|p| p.f1),
        macro_precision: mp / kf,
        macro_recall: mr / kf,
        macro_f1: mf / kf,
        // Single-label: every false positive is another label's false negative, so all three equal
        // the accuracy.
        micro_precision: accuracy,
        micro_recall: accuracy,
        micro_f1: accuracy,
        weighted_precision: wp / n,
        weighted_recall: wr / n,
        weighted_f1: wf / n,
        mcc,
        labels,
        confusion_matrix: cm,
        per_label,
    })
}

/// Area under the ROC curve of binary `scores` (higher = more likely `1`) against 0/1 `references`:
/// the trapezoidal area, with tied scores as one step, as scikit-learn's `roc_auc_score`.
pub fn roc_auc_binary(scores: &[f64], positive: &[bool]) -> Result<f64, MetricError> {
    check_pairs(scores.len(), positive.len())?;
    let pos = positive.iter().filter(|&&p| p).count() as f64;
    let neg = positive.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return Err(MetricError::Invalid(
            "ROC-AUC needs both classes among the references".into(),
        ));
    }
    // Mann–Whitney: the probability that a random positive outranks a random negative, ties ½
    // (equal to the trapezoidal area over tied thresholds).
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|&t| positive[order[t]]).count() as f64 * mid_rank;
        i = j + 1;
    }
    Ok((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// ROC-AUC from class probabilities `[example][label]` (columns in `labels` order): binary uses
/// the second column; several classes average one-vs-rest areas over the labels (macro).
pub fn roc_auc<S: AsRef<str>>(
    probabilities: &[Vec<f64>],
    references: &[S],
    labels: &[String],
) -> Result<f64, MetricError> {
    check_pairs(probabilities.len(), references.len())?;
    check_width(probabilities, labels.len())?;
    let column = |c: usize| probabilities.iter().map(|row| row[c]).collect::<Vec<_>>();
    let is = |c: usize| {
        references
            .iter()
            .map(|r| r.as_ref().trim() == labels[c])
            .collect::<Vec<_>>()
    };
    if labels.len() == 2 {
        return roc_auc_binary(&column(1), &is(1));
    }
    let mut total = 0.0;
    for c in 0..labels.len() {
        total += roc_auc_binary(&column(c), &is(c))?;
    }
    Ok(total / labels.len() as f64)
}

fn check_width(probabilities: &[Vec<f64>], width: usize) -> Result<(), MetricError> {
    match probabilities.iter().position(|row| row.len() != width) {
        Some(i) => Err(MetricError::Invalid(format!(
            "probability row {} has {} values, expected one per label ({width})",
            i + 1,
            probabilities[i].len()
        ))),
        None => Ok(()),
    }
}

/// Mean negative log-likelihood of the references under `probabilities` (rows renormalised and
/// clipped to machine epsilon, as scikit-learn's `log_loss`).
pub fn log_loss<S: AsRef<str>>(
    probabilities: &[Vec<f64>],
    references: &[S],
    labels: &[String],
) -> Result<f64, MetricError> {
    check_pairs(probabilities.len(), references.len())?;
    check_width(probabilities, labels.len())?;
    let eps = f64::EPSILON;
    let mut total = 0.0;
    for (row, r) in probabilities.iter().zip(references) {
        let Some(c) = labels.iter().position(|l| l == r.as_ref().trim()) else {
            return Err(MetricError::UnknownLabel(r.as_ref().to_string()));
        };
        let sum: f64 = row.iter().sum();
        total -= (row[c] / sum).clamp(eps, 1.0 - eps).ln();
    }
    Ok(total / references.len() as f64)
}

/// Regression errors of `predictions` against `references`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegressionReport {
    pub mse: f64,
    pub mae: f64,
    pub rmse: f64,
    pub r2: f64,
}

pub fn regression_report(
    predictions: &[f64],
    references: &[f64],
) -> Result<RegressionReport, MetricError> {
    check_pairs(predictions.len(), references.len())?;
    let n = predictions.len() as f64;
    let mse = predictions
        .iter()
        .zip(references)
        .map(|(p, r)| (p - r).powi(2))
        .sum::<f64>()
        / n;
    let mae = predictions
        .iter()
        .zip(references)
        .map(|(p, r)| (p - r).abs())
        .sum::<f64>()
        / n;
    let mean = references.iter().sum::<f64>() / n;
    let total = references.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
    // scikit-learn: a constant reference gives 1 for a perfect fit, else 0.
    let r2 = if total == 0.0 {
        if mse == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        1.0 - mse / total
    };
    Ok(RegressionReport {
        mse,
        mae,
        rmse: mse.sqrt(),
        r2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_near, fixture};

    #[test]
    fn matches_scikit_learn() {
        let f = fixture("classification.json");
        let cases = f["cases"].as_array().expect("cases");
        assert!(cases.len() >= 4);
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .expect("array")
                .iter()
                .map(|s| s.as_str().expect("string").to_string())
                .collect()
        };
        for case in cases {
            let name = case["name"].as_str().unwrap_or("?");
            let (refs, preds) = (strings(&case["references"]), strings(&case["predictions"]));
            let rep = classification_report(&preds, &refs).expect("report");
            assert_eq!(rep.labels, strings(&case["labels"]), "{name}");
            let cm: Vec<Vec<u64>> =
                serde_json::from_value(case["confusion_matrix"].clone()).expect("confusion matrix");
            assert_eq!(rep.confusion_matrix, cm, "{name}");
            let json = serde_json::to_value(&rep).expect("json");
            for key in [
                "accuracy",
                "mcc",
                "macro_precision",
                "macro_recall",
                "macro_f1",
                "micro_precision",
                "micro_recall",
                "micro_f1",
                "weighted_precision",
                "weighted_recall",
                "weighted_f1",
                "precision",
                "recall",
                "f1",
            ] {
                match case.get(key) {
                    Some(want) => assert_near(&json[key], want, 1e-12, &format!("{name} {key}")),
                    None => assert!(json.get(key).is_none(), "{name}: {key} should be absent"),
                }
            }
            if let Some(probs) = case.get("probabilities") {
                let probs: Vec<Vec<f64>> = serde_json::from_value(probs.clone()).expect("probs");
                let auc = roc_auc(&probs, &refs, &rep.labels).expect("auc");
                assert_near(&auc.into(), &case["roc_auc"], 1e-12, &format!("{name} auc"));
                let ll = log_loss(&probs, &refs, &rep.labels).expect("log loss");
                assert_near(&ll.into(), &case["log_loss"], 1e-12, &format!("{name} ll"));
            }
        }
        let r = &f["regression"];
        let floats = |v: &serde_json::Value| -> Vec<f64> {
            serde_json::from_value(v.clone()).expect("floats")
        };
        let rep = regression_report(&floats(&r["predictions"]), &floats(&r["references"]))
            .expect("regression");
        let json = serde_json::to_value(&rep).expect("json");
        for key in ["mse", "mae", "rmse", "r2"] {
            assert_near(&json[key], &r[key], 1e-12, key);
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let err = classification_report(&["1", "0"], &["1"]).unwrap_err();
        assert!(
            err.to_string().contains("2 predictions but 1 references"),
            "{err}"
        );
        assert!(matches!(
            classification_report::<&str>(&[], &[]),
            Err(MetricError::Empty)
        ));
        let labels = vec!["0".to_string(), "1".to_string()];
        assert!(roc_auc(&[vec![0.2, 0.8]], &["1"], &labels).is_err());
        let err = log_loss(&[vec![0.2, 0.8]], &["7"], &labels).unwrap_err();
        assert!(err.to_string().contains("`7`"), "{err}");
    }
}
