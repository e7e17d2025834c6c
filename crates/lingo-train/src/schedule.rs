//! Learning-rate schedules: linear warm-up from zero, then constant, cosine or linear decay to `min_lr`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    #[default]
    Cosine,
    Linear,
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
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            kind: ScheduleKind::Cosine,
            warmup_steps: 0,
            min_lr: 0.0,
            decay_steps: 0,
        }
    }
}

impl Schedule {
    /// The learning rate of 0-based `step` of `total_steps`, peaking at `peak`.
    pub fn lr(&self, peak: f32, step: usize, total_steps: usize) -> f32 {
        if step < self.warmup_steps {
            return peak * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let end = if self.decay_steps == 0 {
            total_steps
        } else {
            self.decay_steps
        };
        let span = end.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f32 / span as f32).min(1.0);
        match self.kind {
            ScheduleKind::Constant => peak,
            ScheduleKind::Cosine => {
                self.min_lr
                    + 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()) * (peak - self.min_lr)
            }
            ScheduleKind::Linear => peak - (peak - self.min_lr) * progress,
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
            decay_steps: 0,
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
            min_lr: 0.0,
            decay_steps: 0,
        };
        assert!((lin.lr(1.0, 50, 100) - 0.5).abs() < 1e-6);
        let c = Schedule {
            kind: ScheduleKind::Constant,
            warmup_steps: 4,
            ..Default::default()
        };
        assert_eq!(c.lr(2.0, 1, 100), 1.0);
        assert_eq!(c.lr(2.0, 70, 100), 2.0);
    }
}
