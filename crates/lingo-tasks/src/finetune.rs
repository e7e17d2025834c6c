//! What every fine-tuning task shares: the recipe, the epoch-wise data order and label names.

use lingo_nn::LingoRng;
use lingo_train::{ScheduleKind, TrainConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The recipe of `lingo finetune classify|ner` (`configs/sst2-minilm.json`, `configs/conll2003-minilm.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneRecipe {
    /// Tokens per input, special tokens included; longer inputs are truncated (longest text first).
    pub max_length: usize,
    /// Passes over the training data; when set, `train.steps` is derived from it.
    pub epochs: Option<usize>,
    /// Linear warm-up over this fraction of the steps (`transformers`' `warmup_ratio`); overrides
    /// `train.schedule.warmup_steps`.
    pub warmup_ratio: Option<f32>,
    /// Replaces the checkpoint's dropout probabilities (hidden and attention) when set.
    pub dropout: Option<f32>,
    /// Label smoothing of the cross-entropy (not for regression).
    pub label_smoothing: f32,
    pub train: TrainConfig,
}

impl Default for FinetuneRecipe {
    fn default() -> Self {
        let mut train = TrainConfig {
            batch_size: 32,
            eval_every: 500,
            checkpoint_every: 500,
            ..TrainConfig::default()
        };
        train.schedule.kind = ScheduleKind::Linear;
        FinetuneRecipe {
            max_length: 128,
            epochs: Some(3),
            warmup_ratio: Some(0.06),
            dropout: None,
            label_smoothing: 0.0,
            train,
        }
    }
}

impl FinetuneRecipe {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Ok(lingo_models::config::read_json(path)?)
    }

    /// Fills in the steps and warm-up that follow from `epochs` and `warmup_ratio` for
    /// `examples` training examples.
    pub fn resolve(&mut self, examples: usize) {
        if let Some(epochs) = self.epochs {
            let per_step = self.train.batch_size * self.train.grad_accum;
            self.train.steps = (epochs * examples.div_ceil(per_step.max(1))).max(1);
        }
        if let Some(ratio) = self.warmup_ratio {
            self.train.schedule.warmup_steps = (ratio * self.train.steps as f32).ceil() as usize;
        }
    }
}

/// The order in which a task walks its training examples: epoch `e` is a permutation drawn from
/// `(seed, e)`, so the examples of micro-batch `i` depend only on `i` — a resumed run continues
/// mid-epoch exactly. The last batch of an epoch may be short, as a PyTorch `DataLoader`'s is.
pub struct EpochOrder {
    seed: u64,
    epoch: Option<(u64, Vec<usize>)>,
}

impl EpochOrder {
    pub fn new(seed: u64) -> Self {
        EpochOrder { seed, epoch: None }
    }

    /// The example indices of micro-batch `index` over `n` examples in batches of `batch_size`.
    pub fn batch(&mut self, index: u64, batch_size: usize, n: usize) -> Vec<usize> {
        let per_epoch = n.div_ceil(batch_size.max(1)).max(1) as u64;
        let (epoch, within) = (index / per_epoch, (index % per_epoch) as usize);
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<usize> = (0..n).collect();
            LingoRng::new(self.seed)
                .fork(0x5EED_0000 + epoch)
                .shuffle(&mut order);
            self.epoch = Some((epoch, order));
        }
        let order = &self.epoch.as_ref().expect("drawn above").1;
        let start = (within * batch_size).min(n);
        order[start..(start + batch_size).min(n)].to_vec()
    }
}

/// Moves 5% of `data` (at least one example), drawn with `seed`, into a validation split.
pub fn hold_out<T>(data: &mut Vec<T>, seed: u64, path: &Path) -> anyhow::Result<Vec<T>> {
    let n = data.len().div_ceil(20);
    if n >= data.len() {
        anyhow::bail!(
            "{}: {} examples are too few to hold out a validation part; give --valid",
            path.display(),
            data.len()
        );
    }
    LingoRng::new(seed).fork(0x7A11D).shuffle(data);
    Ok(data.split_off(data.len() - n))
}

/// `id2label` of a config in id order.
pub fn id2label(config: &serde_json::Value) -> Vec<String> {
    let mut labels: Vec<(usize, String)> = config["id2label"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
        .collect();
    labels.sort();
    labels.into_iter().map(|(_, l)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recipes the README's results use parse, and say what the recipe says.
    #[test]
    fn shipped_recipes_parse() -> anyhow::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut sst2 = FinetuneRecipe::load(&dir.join("sst2-minilm.json"))?;
        sst2.resolve(64_000);
        assert_eq!((sst2.max_length, sst2.train.batch_size), (64, 32));
        assert_eq!(
            (sst2.train.steps, sst2.train.schedule.warmup_steps),
            (2000, 120)
        );
        assert_eq!(sst2.train.optimizer.lr(), 5e-5);
        let conll = FinetuneRecipe::load(&dir.join("conll2003-minilm.json"))?;
        assert_eq!((conll.max_length, conll.epochs), (128, Some(3)));
        Ok(())
    }

    #[test]
    fn every_epoch_visits_every_example_once_in_a_new_order() {
        let mut order = EpochOrder::new(3);
        let epoch = |order: &mut EpochOrder, e: u64| -> Vec<usize> {
            (e * 4..e * 4 + 4)
                .flat_map(|i| order.batch(i, 3, 10))
                .collect()
        };
        let (first, second) = (epoch(&mut order, 0), epoch(&mut order, 1));
        for e in [&first, &second] {
            let mut sorted = e.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(first, second);
        // A fresh order (a resumed run) gives the same batch for the same index.
        assert_eq!(EpochOrder::new(3).batch(5, 3, 10), order.batch(5, 3, 10));
    }
}
