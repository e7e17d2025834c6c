//! The run's record: one JSON object per line in `metrics.jsonl` (training steps and evaluations), and a
//! loss-curve PNG drawn from it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lr: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grad_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tokens_per_sec: Option<f64>,
    /// Data-parallel runs: seconds of the step spent all-reducing the gradients.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub allreduce_s: Option<f64>,
    pub elapsed_s: f64,
    /// A task's validation metrics (accuracy, f1, …), named as `lingo metric` names them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub metrics: BTreeMap<String, f64>,
}

pub struct MetricsLog {
    path: PathBuf,
    records: Vec<Record>,
}

impl MetricsLog {
    /// Starts a new log at `path`, or — when resuming from step `resume_step` — keeps the records up to
    /// that step and drops any written after it by the interrupted run.
    pub fn open(path: &Path, resume_step: Option<usize>) -> crate::Result<Self> {
        let mut records = Vec::new();
        if let (Some(step), Ok(text)) = (resume_step, std::fs::read_to_string(path)) {
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let r: Record = serde_json::from_str(line).map_err(|e| {
                    crate::TrainError::Input(format!(
                        "{}:{}: malformed metrics record ({e})",
                        path.display(),
                        i + 1
                    ))
                })?;
                if r.step <= step {
                    records.push(r);
                }
            }
        }
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        lingo_nn::io::write_atomic(path, text.as_bytes()).map_err(crate::io(path))?;
        Ok(MetricsLog {
            path: path.into(),
            records,
        })
    }

    pub fn append(&mut self, record: Record) -> crate::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(crate::io(&self.path))?;
        writeln!(f, "{}", serde_json::to_string(&record)?).map_err(crate::io(&self.path))?;
        self.records.push(record);
        Ok(())
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }
}

/// Draws every validation metric of the run against steps, one panel each (`metrics.png`).
pub fn plot_metrics(records: &[Record], path: &Path, title: &str) -> crate::Result<()> {
    let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for r in records {
        for (name, &value) in &r.metrics {
            series.entry(name).or_default().push((r.step as f64, value));
        }
    }
    let series: Vec<(String, Vec<(f64, f64)>)> = series
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    Ok(lingo_viz::metric_curves(&series, path, title)?)
}

/// Draws training loss (light: per step; dark: moving average) and validation loss against steps.
pub fn plot_losses(records: &[Record], path: &Path, title: &str) -> crate::Result<()> {
    let train: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| r.loss.map(|l| (r.step as f64, l)))
        .collect();
    let val: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| r.val_loss.map(|l| (r.step as f64, l)))
        .collect();
    Ok(lingo_viz::loss_curve(&train, &val, path, title)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_drops_records_after_the_checkpoint() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, None)?;
        for step in 1..=5 {
            log.append(Record {
                step,
                loss: Some(1.0 / step as f64),
                ..Default::default()
            })?;
        }
        let log = MetricsLog::open(&path, Some(3))?;
        assert_eq!(
            log.records().iter().map(|r| r.step).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(std::fs::read_to_string(&path)?.lines().count(), 3);
        Ok(())
    }

    #[test]
    fn plot_writes_a_png() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("loss.png");
        let records: Vec<Record> = (1..=30)
            .map(|s| Record {
                step: s,
                loss: Some(3.0 / s as f64),
                val_loss: (s % 10 == 0).then_some(3.2 / s as f64),
                ..Default::default()
            })
            .collect();
        plot_losses(&records, &path, "test")?;
        let bytes = std::fs::read(&path)?;
        assert_eq!(&bytes[1..4], b"PNG");
        Ok(())
    }
}
