//! Optimizers with PyTorch's semantics: AdamW (decoupled weight decay), Adam (L2), SGD (momentum,
//! Nesterov), AdaGrad, RMSProp, and `transformers`' Adafactor.
//!
//! Parameters fall into groups: by default only matrices (rank ≥ 2: linear weights, embeddings) are
//! decayed, never biases or norm weights; [`ParamGroup`] rules matched on parameter names override the
//! decay and scale the learning rate (layer-wise rates, freezing with `lr_scale: 0`).

use crate::grads::Gradients;
use crate::rules::{self, AdafactorConfig, AdagradConfig, AdamConfig, RmspropConfig};
use candle_core::{bail, Result, Tensor, Var};
use lingo_kernels::optim::{adamw_update, custom_update, sgd_update, AdamWStep, SgdStep};
use lingo_nn::ParamStore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OptimizerConfig {
    #[serde(rename = "adamw")]
    AdamW(AdamWConfig),
    Adam(AdamConfig),
    Sgd(SgdConfig),
    Adagrad(AdagradConfig),
    Rmsprop(RmspropConfig),
    Adafactor(AdafactorConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::AdamW(AdamWConfig::default())
    }
}

impl OptimizerConfig {
    /// The peak learning rate the schedule scales (1 for Adafactor's relative steps, which
    /// ignore it).
    pub fn lr(&self) -> f32 {
        match self {
            OptimizerConfig::AdamW(c) => c.lr,
            OptimizerConfig::Adam(c) => c.lr,
            OptimizerConfig::Sgd(c) => c.lr,
            OptimizerConfig::Adagrad(c) => c.lr,
            OptimizerConfig::Rmsprop(c) => c.lr,
            OptimizerConfig::Adafactor(c) => c.lr.unwrap_or(1.0),
        }
    }
    fn weight_decay(&self) -> f32 {
        match self {
            OptimizerConfig::AdamW(c) => c.weight_decay,
            OptimizerConfig::Adam(c) => c.weight_decay,
            OptimizerConfig::Sgd(c) => c.weight_decay,
            OptimizerConfig::Adagrad(c) => c.weight_decay,
            OptimizerConfig::Rmsprop(c) => c.weight_decay,
            OptimizerConfig::Adafactor(c) => c.weight_decay,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::AdamW(_) => "adamw",
            OptimizerConfig::Adam(_) => "adam",
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adagrad(_) => "adagrad",
            OptimizerConfig::Rmsprop(_) => "rmsprop",
            OptimizerConfig::Adafactor(_) => "adafactor",
        }
    }

    /// The per-parameter state of a parameter of `shape`.
    fn state(&self, shape: &[usize]) -> Vec<Vec<f32>> {
        let n = shape.iter().product();
        match self {
            OptimizerConfig::AdamW(_) | OptimizerConfig::Adam(_) => vec![vec![0f32; n]; 2],
            OptimizerConfig::Sgd(c) if c.momentum != 0.0 => vec![vec![0f32; n]],
            OptimizerConfig::Sgd(_) => vec![],
            OptimizerConfig::Adagrad(c) => vec![vec![c.initial_accumulator_value; n]],
            OptimizerConfig::Rmsprop(c) => {
                vec![vec![0f32; n]; 1 + (c.momentum > 0.0) as usize + c.centered as usize]
            }
            OptimizerConfig::Adafactor(c) => rules::adafactor_state(c, shape),
        }
    }
}

/// Which parameters weight decay applies to when no group rule says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DecayPolicy {
    /// Rank ≥ 2 tensors only: weights and embeddings, not biases or norm weights.
    #[default]
    Matrices,
    All,
    None,
}

/// A rule for the parameters whose name contains `pattern`. Each setting comes from the first
/// matching rule that gives it, so a rule about weight decay and one about the learning rate
/// combine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    pub pattern: String,
    #[serde(default)]
    pub weight_decay: Option<f32>,
    /// Multiplies the scheduled learning rate (0 freezes the group).
    #[serde(default)]
    pub lr_scale: Option<f32>,
    /// The group stays frozen before this (0-based) optimizer step: gradual unfreezing.
    #[serde(default)]
    pub from_step: Option<usize>,
}

struct Slot {
    name: String,
    var: Var,
    weight_decay: f32,
    lr_scale: f32,
    /// Frozen before this optimizer step.
    from_step: usize,
    /// Updates applied to this parameter (PyTorch keeps a per-parameter step).
    steps: u64,
    /// AdamW: `[m, v]`; SGD with momentum: `[buffer]`.
    state: Vec<Vec<f32>>,
}

impl Slot {
    fn scale_at(&self, step: usize) -> f32 {
        if step < self.from_step {
            0.0
        } else {
            self.lr_scale
        }
    }
}

/// What a checkpoint keeps of an optimizer.
pub struct OptimizerState {
    /// Moments / momentum buffers, named `<optimizer>.<slot>.<parameter>`.
    pub tensors: Vec<(String, Tensor)>,
    /// Updates applied to each parameter.
    pub steps: HashMap<String, u64>,
}

pub struct Optimizer {
    config: OptimizerConfig,
    slots: Vec<Slot>,
}

impl Optimizer {
    pub fn new(
        config: OptimizerConfig,
        params: &ParamStore,
        decay: DecayPolicy,
        groups: &[ParamGroup],
    ) -> Self {
        let slots = params
            .named()
            .into_iter()
            .map(|(name, var)| {
                let matching = || groups.iter().filter(|g| name.contains(&g.pattern));
                let default_decay = match decay {
                    DecayPolicy::Matrices if var.rank() >= 2 => config.weight_decay(),
                    DecayPolicy::All => config.weight_decay(),
                    _ => 0.0,
                };
                let state = config.state(var.dims());
                Slot {
                    weight_decay: matching()
                        .find_map(|r| r.weight_decay)
                        .unwrap_or(default_decay),
                    lr_scale: matching().find_map(|r| r.lr_scale).unwrap_or(1.0),
                    from_step: matching().find_map(|r| r.from_step).unwrap_or(0),
                    name,
                    var,
                    steps: 0,
                    state,
                }
            })
            .collect();
        Optimizer { config, slots }
    }

    pub fn params(&self) -> Vec<(String, Var)> {
        self.slots
            .iter()
            .map(|s| (s.name.clone(), s.var.clone()))
            .collect()
    }

    /// Names of the parameters that are weight-decayed, for logs and tests.
    pub fn decayed(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.weight_decay > 0.0)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// The learning-rate multiplier of each parameter at optimizer step `step` (0 while frozen).
    pub fn lr_scales(&self, step: usize) -> Vec<(&str, f32)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), s.scale_at(step)))
            .collect()
    }

    /// Applies optimizer step `step` (0-based) with learning rate `lr`, gradients multiplied by
    /// `grad_scale` first. Parameters without a gradient, or frozen, are left alone, as PyTorch
    /// leaves parameters without `grad`.
    pub fn step(&mut self, step: usize, grads: &Gradients, lr: f32, grad_scale: f32) -> Result<()> {
        for (slot, grad) in self.slots.iter_mut().zip(&grads.grads) {
            let Some(grad) = grad else { continue };
            if slot.scale_at(step) == 0.0 {
                continue;
            }
            slot.steps += 1;
            let lr = lr * slot.lr_scale;
            let param = slot.var.as_tensor();
            match &self.config {
                OptimizerConfig::AdamW(c) => {
                    let [m, v] = slot.state.as_mut_slice() else {
                        bail!("adamw state of {} is corrupt", slot.name)
                    };
                    let k = AdamWStep {
                        lr,
                        beta1: c.beta1,
                        beta2: c.beta2,
                        eps: c.eps,
                        weight_decay: slot.weight_decay,
                        step: slot.steps,
                        grad_scale,
                    };
                    adamw_update(param, grad, m, v, k)?;
                }
                OptimizerConfig::Sgd(c) => {
                    let k = SgdStep {
                        lr,
                        momentum: c.momentum,
                        dampening: c.dampening,
                        nesterov: c.nesterov,
                        weight_decay: slot.weight_decay,
                        first: slot.steps == 1,
                        grad_scale,
                    };
                    let mut empty = Vec::new();
                    let buf = slot.state.first_mut().unwrap_or(&mut empty);
                    sgd_update(param, grad, buf, k)?;
                }
                config => {
                    let (wd, step, state) = (slot.weight_decay, slot.steps, &mut slot.state);
                    let shape = param.dims().to_vec();
                    let rule: lingo_kernels::optim::CustomUpdate<'_> = match config {
                        OptimizerConfig::Adam(c) => Box::new(move |p, g| {
                            let [m, v] = state.as_mut_slice() else {
                                bail!("adam state is corrupt")
                            };
                            rules::adam(c, lr, wd, step, p, g, m, v, grad_scale);
                            Ok(())
                        }),
                        OptimizerConfig::Adagrad(c) => Box::new(move |p, g| {
                            let [sum] = state.as_mut_slice() else {
                                bail!("adagrad state is corrupt")
                            };
                            rules::adagrad(c, lr, wd, step, p, g, sum, grad_scale);
                            Ok(())
                        }),
                        OptimizerConfig::Rmsprop(c) => Box::new(move |p, g| {
                            rules::rmsprop(c, lr, wd, p, g, state, grad_scale);
                            Ok(())
                        }),
                        OptimizerConfig::Adafactor(c) => Box::new(move |p, g| {
                            rules::adafactor(c, lr, wd, step, &shape, p, g, state, grad_scale);
                            Ok(())
                        }),
                        OptimizerConfig::AdamW(_) | OptimizerConfig::Sgd(_) => {
                            unreachable!("fused above")
                        }
                    };
                    custom_update(param, grad, rule)?;
                }
            }
        }
        Ok(())
    }

    /// The optimizer's state as named tensors plus per-parameter step counts, for checkpoints.
    pub fn state(&self) -> Result<OptimizerState> {
        let mut tensors = Vec::new();
        let mut steps = HashMap::new();
        for slot in &self.slots {
            for (i, s) in slot.state.iter().enumerate() {
                tensors.push((
                    format!("{}.{i}.{}", self.config.name(), slot.name),
                    Tensor::from_slice(s, s.len(), &candle_core::Device::Cpu)?,
                ));
            }
            steps.insert(slot.name.clone(), slot.steps);
        }
        Ok(OptimizerState { tensors, steps })
    }

    /// Calls `sync(parameter, values)` on every state buffer of every parameter and on its update
    /// count (as two values), always in the same order: how ranks that each updated some of the
    /// parameters (pipeline stages) share their optimizer state before a checkpoint.
    pub fn sync_state(
        &mut self,
        mut sync: impl FnMut(&str, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        for slot in &mut self.slots {
            for s in slot.state.iter_mut() {
                sync(&slot.name, s)?;
            }
            let mut steps = [
                f32::from_bits(slot.steps as u32),
                f32::from_bits((slot.steps >> 32) as u32),
            ];
            sync(&slot.name, &mut steps)?;
            slot.steps = steps[0].to_bits() as u64 | (steps[1].to_bits() as u64) << 32;
        }
        Ok(())
    }

    /// Restores what [`Optimizer::state`] saved; `source` names the file for errors.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        steps: &HashMap<String, u64>,
        source: &str,
    ) -> Result<()> {
        let kind = self.config.name();
        for slot in &mut self.slots {
            for (i, s) in slot.state.iter_mut().enumerate() {
                let key = format!("{kind}.{i}.{}", slot.name);
                let Some(t) = tensors.get(&key) else {
                    bail!("{source}: optimizer state {key} is missing")
                };
                let v = t.flatten_all()?.to_vec1::<f32>()?;
                if v.len() != s.len() {
                    bail!(
                        "{source}: optimizer state {key} has {} values, expected {}",
                        v.len(),
                        s.len()
                    );
                }
                *s = v;
            }
            slot.steps = steps.get(&slot.name).copied().unwrap_or(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use lingo_nn::Init;

    #[test]
    fn default_groups_decay_matrices_only_and_rules_override() -> Result<()> {
        let store = ParamStore::new(0, &Device::Cpu);
        let root = store.root();
        root.sub("fc").get("weight", &[3, 2], Init::Normal(0.1))?;
        root.sub("fc").get("bias", &[3], Init::Zeros)?;
        root.sub("ln").get("weight", &[3], Init::Ones)?;
        root.sub("head").get("weight", &[3, 3], Init::Normal(0.1))?;
        let opt = Optimizer::new(
            OptimizerConfig::default(),
            &store,
            DecayPolicy::Matrices,
            &[],
        );
        assert_eq!(opt.decayed(), vec!["fc.weight", "head.weight"]);
        let rules = [
            ParamGroup {
                pattern: "head".into(),
                weight_decay: Some(0.0),
                lr_scale: None,
                from_step: None,
            },
            ParamGroup {
                pattern: "head.w".into(),
                weight_decay: None,
                lr_scale: Some(0.5),
                from_step: Some(3),
            },
        ];
        let opt = Optimizer::new(
            OptimizerConfig::default(),
            &store,
            DecayPolicy::Matrices,
            &rules,
        );
        assert_eq!(opt.decayed(), vec!["fc.weight"]);
        // The head's rate comes from the second rule although the first matched it.
        let at = |step| -> Vec<f32> { opt.lr_scales(step).iter().map(|s| s.1).collect() };
        assert_eq!(at(0), vec![1.0, 1.0, 1.0, 0.0]);
        assert_eq!(at(3), vec![1.0, 1.0, 1.0, 0.5]);
        Ok(())
    }

    #[test]
    fn adamw_minimises_a_quadratic() -> Result<()> {
        let store = ParamStore::new(0, &Device::Cpu);
        let x = store.root().get("x", &[4], Init::Normal(1.0))?;
        let target = Tensor::new(&[1f32, -2.0, 3.0, 0.5], &Device::Cpu)?;
        let cfg = OptimizerConfig::AdamW(AdamWConfig {
            lr: 0.05,
            weight_decay: 0.0,
            ..Default::default()
        });
        let mut opt = Optimizer::new(cfg, &store, DecayPolicy::Matrices, &[]);
        for _ in 0..400 {
            let loss = (&x - &target)?.sqr()?.sum_all()?;
            let grads = Gradients::from_store(&opt.params(), &loss.backward()?);
            opt.step(0, &grads, 0.05, 1.0)?;
        }
        let err = (&x - &target)?.abs()?.max(0)?.to_scalar::<f32>()?;
        assert!(err < 1e-2, "{err}");
        Ok(())
    }
}
