//! Learning-rate schedules: linear warm-up, then constant, linear, cosine, cosine with hard restarts,
//! polynomial, exponential or step decay to `min_lr`. After the warm-up each follows the
//! `transformers` schedule of the same name (`get_*_schedule_with_warmup`; exponential and step as
//! `torch.optim`'s `ExponentialLR` and `StepLR`); warm-up step `s` (0-based) runs at `peak · (s + 1) / warmup`, so the first step
//! already learns (`transformers` starts at 0).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    #[default]
    Cosine,
    Linear,
    /// Cosine decay restarted `cycles` times.
    CosineWithRestarts,
    /// `(1 − progress)^power` from the peak to `min_lr`.
    Polynomial,
    /// `peak · gamma^(steps after warm-up)`, never below `min_lr`.
    Exponential,
    /// `peak` for `hold_steps` after warm-up, then multiplied by `gamma` at the start of every
    /// `step_size` steps (Zaremba et al.'s "halve the rate every epoch after the fourth"; torch's
    /// `StepLR` when `hold_steps` is 0), never below `min_lr`.
    Step,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub warmup_steps: usize,
    /// The rate decay ends at (absolute, not a fraction of the peak).
    pub min_lr: f32,
    /// Step at which decay reaches `min_lr`; 0 means the last training step.
    pub decay_steps: usize,
    /// Warm-up as a fraction of the run's steps (`transformers`' `warmup_ratio`); overrides
    /// `warmup_steps` when set.
    pub warmup_ratio: Option<f32>,
    /// Cosine with restarts: the number of cosine cycles.
    pub cycles: f32,
    /// Polynomial decay: the exponent (1 is linear).
    pub power: f32,
    /// Exponential decay: the factor per step; step decay: the factor per `step_size` steps.
    pub gamma: f32,
    /// Step decay: steps between decays.
    pub step_size: usize,
    /// Step decay: steps at the peak (after warm-up) before the first decay.
    pub hold_steps: usize,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            kind: ScheduleKind::Cosine,
            warmup_steps: 0,
            min_lr: 0.0,
            decay_steps: 0,
            warmup_ratio: None,
            cycles: 1.0,
            power: 1.0,
            gamma: 0.999,
            step_size: 1,
            hold_steps: 0,
        }
    }
}

impl Schedule {
    /// Warm-up steps of a run of `total_steps`.
    pub fn warmup(&self, total_steps: usize) -> usize {
        match self.warmup_ratio {
            Some(r) => (r * total_steps as f32).ceil() as usize,
            None => self.warmup_steps,
        }
    }

    /// The learning rate of 0-based `step` of `total_steps`, peaking at `peak`.
    pub fn lr(&self, peak: f32, step: usize, total_steps: usize) -> f32 {
        let warmup = self.warmup(total_steps);
        if step < warmup {
            return peak * (step + 1) as f32 / warmup as f32;
        }
        let end = if self.decay_steps == 0 {
            total_steps
        } else {
            self.decay_steps
        };
        let span = end.saturating_sub(warmup).max(1);
        let after = step - warmup;
        let progress = (after as f32 / span as f32).min(1.0);
        let range = peak - self.min_lr;
        let cosine = |x: f32| 0.5 * (1.0 + (std::f32::consts::PI * x).cos());
        match self.kind {
            ScheduleKind::Constant => peak,
            ScheduleKind::Cosine => self.min_lr + cosine(progress) * range,
            ScheduleKind::Linear => peak - range * progress,
            ScheduleKind::CosineWithRestarts if progress >= 1.0 => self.min_lr,
            ScheduleKind::CosineWithRestarts => {
                self.min_lr + cosine((self.cycles * progress) % 1.0) * range
            }
            ScheduleKind::Polynomial => self.min_lr + range * (1.0 - progress).powf(self.power),
            ScheduleKind::Exponential => {
                (peak * self.gamma.powi(after.min(i32::MAX as usize) as i32)).max(self.min_lr)
            }
            ScheduleKind::Step if after < self.hold_steps => peak,
            ScheduleKind::Step => {
                let decays = 1 + (after - self.hold_steps) / self.step_size.max(1);
                (peak * self.gamma.powi(decays.min(i32::MAX as usize) as i32)).max(self.min_lr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_reaches_min() {
        let s = Schedule {
            kind: ScheduleKind::Cosine,
            warmup_steps: 10,
            min_lr: 1e-4,
            ..Default::default()
        };
        assert!((s.lr(1e-3, 0, 100) - 1e-4).abs() < 1e-9);
        assert!((s.lr(1e-3, 9, 100) - 1e-3).abs() < 1e-9);
        assert!((s.lr(1e-3, 10, 100) - 1e-3).abs() < 1e-9);
        assert!((s.lr(1e-3, 55, 100) - 5.5e-4).abs() < 1e-6);
        assert!((s.lr(1e-3, 100, 100) - 1e-4).abs() < 1e-9);
    }

    #[test]
    fn linear_and_constant() {
        let lin = Schedule {
            kind: ScheduleKind::Linear,
            warmup_steps: 0,
            ..Default::default()
        };
        assert!((lin.lr(1.0, 50, 100) - 0.5).abs() < 1e-6);
        let c = Schedule {
            kind: ScheduleKind::Constant,
            warmup_steps: 4,
            ..Default::default()
        };
        assert_eq!(c.lr(2.0, 1, 100), 1.0);
        assert_eq!(c.lr(2.0, 70, 100), 2.0);
        let e = Schedule {
            kind: ScheduleKind::Exponential,
            gamma: 0.5,
            min_lr: 0.1,
            ..Default::default()
        };
        assert_eq!((e.lr(1.0, 2, 100), e.lr(1.0, 9, 100)), (0.25, 0.1));
        // Zaremba's small recipe with 10 steps an epoch: 4 epochs at the peak, then halved each.
        let z = Schedule {
            kind: ScheduleKind::Step,
            gamma: 0.5,
            step_size: 10,
            hold_steps: 40,
            ..Default::default()
        };
        let lrs: Vec<f32> = [0, 39, 40, 49, 50, 129].map(|s| z.lr(1.0, s, 130)).to_vec();
        assert_eq!(lrs, [1.0, 1.0, 0.5, 0.5, 0.25, 0.5f32.powi(9)]);
    }

    /// After the warm-up, every decay equals `transformers`' schedule of the same name
    /// (`tests/fixtures/optim/schedules.json`, by `tools/make_optim_fixtures.py`).
    #[test]
    fn decays_match_transformers() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/optim/schedules.json"
        );
        let f: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
        let (total, warmup) = (
            f["total"].as_u64().unwrap() as usize,
            f["warmup"].as_u64().unwrap() as usize,
        );
        for case in f["cases"].as_array().unwrap() {
            let mut s: Schedule =
                serde_json::from_value(case["schedule"].clone()).expect("schedule");
            s.warmup_steps = warmup;
            let lrs: Vec<f32> = serde_json::from_value(case["lrs"].clone()).unwrap();
            for (step, want) in lrs.iter().enumerate().skip(warmup) {
                let got = s.lr(1.0, step, total);
                assert!(
                    (got - want).abs() < 1e-5,
                    "{:?} step {step}: {got} vs {want}",
                    s.kind
                );
            }
        }
    }
}
