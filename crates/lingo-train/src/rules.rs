//! The update rules without a fused kernel, as plain code over one parameter's values, its gradient
//! and its state, each with the semantics of the PyTorch (or `transformers`) optimizer of the same
//! name: `torch.optim.Adam` (L2 weight decay added to the gradient), `Adagrad`, `RMSprop` and
//! `transformers.optimization.Adafactor`. AdamW and SGD, the common ones, are fused kernels in
//! `lingo_kernels::optim`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// L2 penalty added to the gradient (not decoupled: that is AdamW).
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdagradConfig {
    pub lr: f32,
    /// The rate of step `t` is `lr / (1 + (t − 1) · lr_decay)`.
    pub lr_decay: f32,
    pub weight_decay: f32,
    pub initial_accumulator_value: f32,
    pub eps: f32,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmspropConfig {
    pub lr: f32,
    /// Smoothing of the squared-gradient average.
    pub alpha: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub momentum: f32,
    /// Normalise by the variance estimate instead of the raw second moment.
    pub centered: bool,
}

impl Default for RmspropConfig {
    fn default() -> Self {
        RmspropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
}

/// Adafactor (Shazeer & Stern, 2018) as `transformers` implements it: second moments of a matrix
/// factored into row and column averages, update clipping, and by default a relative step size
/// `min(1e-2, 1/√t)` scaled by the parameter's RMS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdafactorConfig {
    /// An explicit (scheduled) learning rate; `None` uses the relative step size and ignores the
    /// schedule, as `transformers`' `Adafactor(lr=None, relative_step=True)`.
    pub lr: Option<f32>,
    /// Regularisers of the squared gradient and of the parameter scale.
    pub eps: [f32; 2],
    /// Updates whose RMS exceeds this are scaled down to it.
    pub clip_threshold: f32,
    /// The second-moment decay of step `t` is `1 − t^decay_rate`.
    pub decay_rate: f32,
    /// First-moment smoothing; `None` keeps no first moment (Adafactor's memory saving).
    pub beta1: Option<f32>,
    pub weight_decay: f32,
    /// Scale the step by the parameter's RMS.
    pub scale_parameter: bool,
    /// With relative steps, warm up linearly: `min(1e-6 · t, 1/√t)`.
    pub warmup_init: bool,
}

impl Default for AdafactorConfig {
    fn default() -> Self {
        AdafactorConfig {
            lr: None,
            eps: [1e-30, 1e-3],
            clip_threshold: 1.0,
            decay_rate: -0.8,
            beta1: None,
            weight_decay: 0.0,
            scale_parameter: true,
            warmup_init: false,
        }
    }
}

/// `torch.optim.Adam`: `m`, `v` the moments, `step` 1-based.
#[allow(clippy::too_many_arguments)]
pub fn adam(
    c: &AdamConfig,
    lr: f32,
    weight_decay: f32,
    step: u64,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    grad_scale: f32,
) {
    let t = step.min(i32::MAX as u64) as i32;
    let step_size = lr / (1.0 - c.beta1.powi(t));
    let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
    for i in 0..p.len() {
        let gi = g[i] * grad_scale + weight_decay * p[i];
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
        p[i] -= step_size * m[i] / (v[i].sqrt() / bc2_sqrt + c.eps);
    }
}

/// `torch.optim.Adagrad`: `sum` the accumulated squared gradients.
#[allow(clippy::too_many_arguments)]
pub fn adagrad(
    c: &AdagradConfig,
    lr: f32,
    weight_decay: f32,
    step: u64,
    p: &mut [f32],
    g: &[f32],
    sum: &mut [f32],
    grad_scale: f32,
) {
    let clr = lr / (1.0 + (step - 1) as f32 * c.lr_decay);
    for i in 0..p.len() {
        let gi = g[i] * grad_scale + weight_decay * p[i];
        sum[i] += gi * gi;
        p[i] -= clr * gi / (sum[i].sqrt() + c.eps);
    }
}

/// `torch.optim.RMSprop`: `state` holds the squared average, then the momentum buffer (when
/// `momentum > 0`), then the gradient average (when `centered`).
pub fn rmsprop(
    c: &RmspropConfig,
    lr: f32,
    weight_decay: f32,
    p: &mut [f32],
    g: &[f32],
    state: &mut [Vec<f32>],
    grad_scale: f32,
) {
    let (square, rest) = state
        .split_first_mut()
        .expect("rmsprop keeps a square average");
    let (mut buf, mut avg) = (None, None);
    let mut rest = rest.iter_mut();
    if c.momentum > 0.0 {
        buf = rest.next();
    }
    if c.centered {
        avg = rest.next();
    }
    for i in 0..p.len() {
        let gi = g[i] * grad_scale + weight_decay * p[i];
        square[i] = c.alpha * square[i] + (1.0 - c.alpha) * gi * gi;
        let denom = match avg.as_deref_mut() {
            Some(a) => {
                a[i] = c.alpha * a[i] + (1.0 - c.alpha) * gi;
                (square[i] - a[i] * a[i]).sqrt() + c.eps
            }
            None => square[i].sqrt() + c.eps,
        };
        match buf.as_deref_mut() {
            Some(b) => {
                b[i] = c.momentum * b[i] + gi / denom;
                p[i] -= lr * b[i];
            }
            None => p[i] -= lr * gi / denom,
        }
    }
}

fn rms(x: &[f32]) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    (sum / x.len().max(1) as f64).sqrt() as f32
}

/// The state Adafactor keeps for a parameter of `shape`: row and column averages of the squared
/// gradient for a matrix (rank ≥ 2: the last two dimensions, per leading index), the full average
/// otherwise, then the first moment if `beta1` is set.
pub fn adafactor_state(c: &AdafactorConfig, shape: &[usize]) -> Vec<Vec<f32>> {
    let n: usize = shape.iter().product();
    let mut state = match shape {
        [lead @ .., rows, cols] => {
            let outer: usize = lead.iter().product();
            vec![vec![0f32; outer * rows], vec![0f32; outer * cols]]
        }
        _ => vec![vec![0f32; n]],
    };
    if c.beta1.is_some() {
        state.push(vec![0f32; n]);
    }
    state
}

/// `transformers.optimization.Adafactor.step` for one parameter of `shape` at 1-based `step`;
/// `lr` is the scheduled rate, used only when the config sets `lr`.
#[allow(clippy::too_many_arguments)]
pub fn adafactor(
    c: &AdafactorConfig,
    lr: f32,
    weight_decay: f32,
    step: u64,
    shape: &[usize],
    p: &mut [f32],
    g: &[f32],
    state: &mut [Vec<f32>],
    grad_scale: f32,
) {
    let t = step as f32;
    let relative = match c.lr {
        None => {
            let min_step = if c.warmup_init { 1e-6 * t } else { 1e-2 };
            min_step.min(1.0 / t.sqrt())
        }
        Some(_) => lr,
    };
    let scale = if c.scale_parameter {
        c.eps[1].max(rms(p))
    } else {
        1.0
    };
    let lr = scale * relative;
    let beta2t = 1.0 - t.powf(c.decay_rate);
    let g: Vec<f32> = g.iter().map(|&x| x * grad_scale).collect();
    let mut update: Vec<f32> = g.iter().map(|&x| x * x + c.eps[0]).collect();
    if let [lead @ .., rows, cols] = shape {
        let (rows, cols, outer) = (*rows, *cols, lead.iter().product::<usize>());
        let [row, col, ..] = state else {
            unreachable!("adafactor_state gives a matrix two averages")
        };
        for o in 0..outer {
            let block = &mut update[o * rows * cols..(o + 1) * rows * cols];
            let (row, col) = (
                &mut row[o * rows..(o + 1) * rows],
                &mut col[o * cols..(o + 1) * cols],
            );
            for r in 0..rows {
                let mean = block[r * cols..(r + 1) * cols].iter().sum::<f32>() / cols as f32;
                row[r] = beta2t * row[r] + (1.0 - beta2t) * mean;
            }
            for (j, cj) in col.iter_mut().enumerate() {
                let mean = (0..rows).map(|r| block[r * cols + j]).sum::<f32>() / rows as f32;
                *cj = beta2t * *cj + (1.0 - beta2t) * mean;
            }
            let row_mean = row.iter().sum::<f32>() / rows as f32;
            for r in 0..rows {
                let r_factor = (row[r] / row_mean).sqrt().recip();
                for j in 0..cols {
                    block[r * cols + j] = r_factor * col[j].sqrt().recip();
                }
            }
        }
        for (u, gi) in update.iter_mut().zip(&g) {
            *u *= gi;
        }
    } else {
        let avg = &mut state[0];
        for i in 0..update.len() {
            avg[i] = beta2t * avg[i] + (1.0 - beta2t) * update[i];
            update[i] = avg[i].sqrt().recip() * g[i];
        }
    }
    let clip = (rms(&update) / c.clip_threshold).max(1.0);
    for u in update.iter_mut() {
        *u = *u / clip * lr;
    }
    if let Some(beta1) = c.beta1 {
        let m = state.last_mut().expect("the first moment is last");
        for (mi, u) in m.iter_mut().zip(update.iter_mut()) {
            *mi = beta1 * *mi + (1.0 - beta1) * *u;
            *u = *mi;
        }
    }
    for (pi, u) in p.iter_mut().zip(&update) {
        if weight_decay != 0.0 {
            *pi += *pi * (-weight_decay * lr);
        }
        *pi -= u;
    }
}
