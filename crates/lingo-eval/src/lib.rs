//! Metrics, each matching the reference implementation users compare against, and tested against
//! that implementation's own output (`tools/make_bleu_fixtures.py`, `tools/make_metric_fixtures.py`).
//!
//! | file | metric | reference |
//! |---|---|---|
//! | [`bleu`] | corpus BLEU (13a tokenisation, exp smoothing) | sacreBLEU |
//! | [`classification`] | accuracy, P/R/F1 (binary, macro, micro, weighted), MCC, confusion matrix, ROC-AUC, log loss; MSE/MAE/RMSE/R² | scikit-learn |
//! | [`seqeval`] | entity-level P/R/F1, overall and per type, default and strict IOB2 | seqeval |
//! | [`squad`] | SQuAD v1.1 exact match and F1 | the official script |
//! | [`rouge`] | ROUGE-1/2/L/Lsum, optional Porter stemming ([`porter`]) | rouge-score |

pub mod bleu;
pub mod classification;
pub mod porter;
pub mod rouge;
pub mod seqeval;
pub mod squad;

pub use bleu::{corpus_bleu, Bleu};
pub use classification::{
    classification_report, log_loss, regression_report, roc_auc, ClassificationReport,
    RegressionReport,
};
pub use rouge::{corpus_rouge, rouge, CorpusRouge, Rouge};
pub use seqeval::{seqeval, Mode as SeqevalMode, SeqevalReport};
pub use squad::{exact_match, SquadScores};

/// What can be wrong with the inputs of a metric.
#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    #[error("{predictions} predictions but {references} references: they must pair up one to one")]
    LengthMismatch {
        predictions: usize,
        references: usize,
    },
    #[error("no examples to score")]
    Empty,
    #[error("label `{0}` is not among the known labels")]
    UnknownLabel(String),
    #[error("{0}")]
    Invalid(String),
}

/// Predictions and references must pair up one to one, and there must be some.
pub(crate) fn check_pairs(predictions: usize, references: usize) -> Result<(), MetricError> {
    if predictions != references {
        return Err(MetricError::LengthMismatch {
            predictions,
            references,
        });
    }
    if predictions == 0 {
        return Err(MetricError::Empty);
    }
    Ok(())
}

/// Perplexity from a mean negative log-likelihood in nats per token.
pub fn perplexity(mean_nll: f64) -> f64 {
    mean_nll.exp()
}

#[cfg(test)]
pub(crate) mod testing {
    /// A committed fixture of `tests/fixtures/metrics/`.
    pub fn fixture(name: &str) -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/metrics")
            .join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            panic!(
                "fixture {} is missing (tools/make_metric_fixtures.py writes it)",
                path.display()
            );
        };
        serde_json::from_str(&text).expect("fixture is JSON")
    }

    /// `got` is within `tol` (absolute) of `want`, both JSON numbers.
    pub fn assert_near(got: &serde_json::Value, want: &serde_json::Value, tol: f64, what: &str) {
        let (g, w) = (got.as_f64(), want.as_f64());
        match (g, w) {
            (Some(g), Some(w)) => assert!((g - w).abs() <= tol, "{what}: {g} vs reference {w}"),
            _ => panic!("{what}: {got} vs reference {want}"),
        }
    }
}
