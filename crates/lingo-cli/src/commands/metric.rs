use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use lingo_data::read_lines;
use lingo_eval::seqeval::Mode;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MetricName {
    /// One label per line: accuracy, precision/recall/F1 (binary, macro, micro, weighted), MCC;
    /// float labels give MSE/MAE/RMSE/R² instead.
    Classification,
    /// One space-separated tag sequence per line: entity-level P/R/F1, overall and per type.
    Seqeval,
    /// Predictions as `{id: answer}` JSON, references as the SQuAD v1.1 dataset JSON.
    Squad,
    /// One text per line: ROUGE-1/2/L/Lsum F-measures.
    Rouge,
    /// One text per line: corpus BLEU as sacreBLEU computes it.
    Bleu,
}

#[derive(Args)]
pub struct Metric {
    name: MetricName,
    #[arg(long)]
    predictions: PathBuf,
    /// The references; several for BLEU (one file per reference set).
    #[arg(long, required = true, num_args = 1..)]
    references: Vec<PathBuf>,
    /// Print one JSON object (the reference packages' key names).
    #[arg(long)]
    json: bool,
    /// ROUGE: Porter-stem words longer than three letters.
    #[arg(long)]
    stem: bool,
    /// Classification: class probabilities per line (space-separated, in sorted label order), for
    /// ROC-AUC and log loss.
    #[arg(long)]
    probabilities: Option<PathBuf>,
}

/// The non-empty-file lines of `path`, with the file named in errors.
fn lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let lines = read_lines(path)?;
    if lines.is_empty() {
        bail!("{}: the file is empty", path.display());
    }
    Ok(lines)
}

fn paired(p: &Path, r: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let (preds, refs) = (lines(p)?, lines(r)?);
    if preds.len() != refs.len() {
        bail!(
            "{} has {} lines but {} has {}: they must be line-aligned",
            p.display(),
            preds.len(),
            r.display(),
            refs.len()
        );
    }
    Ok((preds, refs))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = read_lines(path)?.join("\n");
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

impl Metric {
    pub fn run(self) -> anyhow::Result<()> {
        let reference = &self.references[0];
        if self.references.len() > 1 && !matches!(self.name, MetricName::Bleu) {
            bail!("only BLEU takes several reference files");
        }
        let out = match self.name {
            MetricName::Classification => self.classification(reference)?,
            MetricName::Seqeval => seqeval(&self.predictions, reference)?,
            MetricName::Squad => {
                let preds: HashMap<String, String> =
                    serde_json::from_value(read_json(&self.predictions)?).with_context(|| {
                        format!(
                            "{}: predictions must be a JSON object {{question id: answer text}}",
                            self.predictions.display()
                        )
                    })?;
                let dataset = read_json(reference)?;
                let (scores, unanswered) = lingo_eval::squad::evaluate_dataset(&dataset, &preds)
                    .with_context(|| reference.display().to_string())?;
                if !unanswered.is_empty() {
                    eprintln!(
                        "warning: {} questions have no prediction and score 0 (first: {})",
                        unanswered.len(),
                        unanswered[0]
                    );
                }
                serde_json::to_value(scores)?
            }
            MetricName::Rouge => {
                let (preds, refs) = paired(&self.predictions, reference)?;
                serde_json::to_value(lingo_eval::corpus_rouge(&preds, &refs, self.stem)?)?
            }
            MetricName::Bleu => {
                let preds = lines(&self.predictions)?;
                let mut refs = Vec::new();
                for r in &self.references {
                    refs.push(paired(&self.predictions, r)?.1);
                }
                let bleu = lingo_eval::corpus_bleu(&preds, &refs).map_err(anyhow::Error::msg)?;
                if !self.json {
                    println!("{bleu}");
                    return Ok(());
                }
                json!({"bleu": bleu.score, "precisions": bleu.precisions,
                       "brevity_penalty": bleu.brevity_penalty,
                       "sys_len": bleu.sys_len, "ref_len": bleu.ref_len})
            }
        };
        print_metrics(&out, self.json)
    }

    fn classification(&self, reference: &Path) -> anyhow::Result<Value> {
        let (preds, refs) = paired(&self.predictions, reference)?;
        let is_float = |s: &String| s.trim().parse::<f64>().is_ok();
        if refs.iter().all(is_float) && refs.iter().any(|r| r.contains('.')) {
            let floats = |v: &[String], path: &Path| -> anyhow::Result<Vec<f64>> {
                v.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        s.trim().parse::<f64>().with_context(|| {
                            format!("{}:{}: `{s}` is not a number", path.display(), i + 1)
                        })
                    })
                    .collect()
            };
            let rep = lingo_eval::regression_report(
                &floats(&preds, &self.predictions)?,
                &floats(&refs, reference)?,
            )?;
            return Ok(serde_json::to_value(rep)?);
        }
        let rep = lingo_eval::classification_report(&preds, &refs)?;
        let mut out = serde_json::to_value(&rep)?;
        if let Some(path) = &self.probabilities {
            let probs = lines(path)?
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    l.split_whitespace()
                        .map(|x| x.parse::<f64>())
                        .collect::<Result<Vec<_>, _>>()
                        .with_context(|| format!("{}:{}: not numbers", path.display(), i + 1))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            out["roc_auc"] = lingo_eval::roc_auc(&probs, &refs, &rep.labels)?.into();
            out["log_loss"] = lingo_eval::log_loss(&probs, &refs, &rep.labels)?.into();
        }
        Ok(out)
    }
}

/// Default (conlleval-like) scores as `precision`/`recall`/`f1`, strict IOB2 ones as `strict_*`
/// (absent, with a warning, when the tags are not IOB2), and each type's default scores.
fn seqeval(p: &Path, r: &Path) -> anyhow::Result<Value> {
    let (preds, refs) = paired(p, r)?;
    let split = |v: Vec<String>| -> Vec<Vec<String>> {
        v.into_iter()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    let (preds, refs) = (split(preds), split(refs));
    let default = lingo_eval::seqeval(&preds, &refs, Mode::Default)?;
    let mut out = Map::new();
    out.insert("precision".into(), default.precision.into());
    out.insert("recall".into(), default.recall.into());
    out.insert("f1".into(), default.f1.into());
    match lingo_eval::seqeval(&preds, &refs, Mode::Strict) {
        Ok(strict) => {
            out.insert("strict_precision".into(), strict.precision.into());
            out.insert("strict_recall".into(), strict.recall.into());
            out.insert("strict_f1".into(), strict.f1.into());
        }
        Err(e) => eprintln!("warning: no strict IOB2 scores: {e}"),
    }
    for (kind, s) in default.per_type {
        out.insert(
            kind,
            json!({"precision": s.precision, "recall": s.recall, "f1": s.f1, "number": s.support}),
        );
    }
    Ok(Value::Object(out))
}

/// One JSON object, or `key: value` lines (nested objects indented).
pub fn print_metrics(v: &Value, as_json: bool) -> anyhow::Result<()> {
    fn show(v: &Value, indent: usize, out: &mut String) {
        let Some(obj) = v.as_object() else { return };
        for (k, x) in obj {
            match x {
                Value::Object(_) => {
                    out.push_str(&format!("{:indent$}{k}:\n", ""));
                    show(x, indent + 2, out);
                }
                Value::Number(n) if n.is_f64() => out.push_str(&format!(
                    "{:indent$}{k}: {:.4}\n",
                    "",
                    n.as_f64().unwrap_or(f64::NAN)
                )),
                _ => out.push_str(&format!("{:indent$}{k}: {x}\n", "")),
            }
        }
    }
    let mut text = String::new();
    if as_json {
        text = serde_json::to_string(v)? + "\n";
    } else {
        show(v, 0, &mut text);
    }
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
