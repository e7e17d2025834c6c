//! Finite-difference gradient checks and tensor comparisons, used by the tests of every fused op and
//! by the layers and models built on them.

use candle_core::{bail, DType, Device, Result, Tensor, Var};

/// Tolerances for [`check_gradients`].
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Half-width of the central difference.
    pub eps: f32,
    pub atol: f64,
    pub rtol: f64,
    /// Coordinates probed per input (spread evenly over the tensor).
    pub probes: usize,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            eps: 1e-2,
            atol: 2e-3,
            rtol: 2e-2,
            probes: 48,
        }
    }
}

/// Deterministic values in [-1, 1) used to project an output onto a scalar.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A tensor of [`pseudo_random`] values.
pub fn random_tensor(shape: &[usize], seed: u64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(pseudo_random(n, seed), shape, &Device::Cpu)
}

/// Checks the gradient of `f` with respect to each of `inputs` against central finite differences of
/// the scalar `Σ f(inputs) ⊙ R` for a fixed pseudo-random `R`. Fails if any probed coordinate disagrees
/// or if an input receives an all-zero gradient.
pub fn check_gradients(
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: GradCheck,
) -> Result<()> {
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors)?;
    let projection = random_tensor(out.dims(), 7)?;
    let loss = (out.to_dtype(DType::F32)? * &projection)?.sum_all()?;
    let grads = loss.backward()?;
    let proj = projection.flatten_all()?.to_vec1::<f32>()?;
    let scalar = |xs: &[Tensor]| -> Result<f64> {
        let out = f(xs)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(out
            .iter()
            .zip(&proj)
            .map(|(&o, &r)| o as f64 * r as f64)
            .sum())
    };
    for (i, var) in vars.iter().enumerate() {
        let Some(grad) = grads.get(var.as_tensor()) else {
            bail!("input {i}: no gradient reached it");
        };
        let analytic = grad.flatten_all()?.to_vec1::<f32>()?;
        if analytic.iter().all(|&g| g == 0.0) {
            bail!("input {i}: gradient is all zeros");
        }
        let base = inputs[i].flatten_all()?.to_vec1::<f32>()?;
        let n = base.len();
        let stride = (n / opts.probes.max(1)).max(1);
        for j in (0..n).step_by(stride).take(opts.probes) {
            let eval_at = |delta: f32| -> Result<f64> {
                let mut data = base.clone();
                data[j] += delta;
                let mut xs = inputs.to_vec();
                xs[i] = Tensor::from_vec(data, inputs[i].dims(), &Device::Cpu)?;
                scalar(&xs)
            };
            let numeric = (eval_at(opts.eps)? - eval_at(-opts.eps)?) / (2.0 * opts.eps as f64);
            let a = analytic[j] as f64;
            let tol = opts.atol + opts.rtol * a.abs().max(numeric.abs());
            if (a - numeric).abs() > tol {
                bail!("input {i}, element {j}: analytic {a:.6} vs numeric {numeric:.6}");
            }
        }
    }
    Ok(())
}

/// Checks each of `params`' gradients in `grads` along its own pseudo-random direction (seed
/// `seed + i` for the `i`-th, so an error in any one gradient shows) against the central finite
/// difference of `loss` with the parameter moved `±eps` that way; each parameter is restored
/// after. Agreement means `|numeric − analytic| ≤ atol + rtol·|analytic|`; an error names the
/// parameter.
pub fn check_directions(
    params: &[(String, Var)],
    grads: &candle_core::backprop::GradStore,
    loss: &dyn Fn() -> Result<f64>,
    eps: f64,
    (atol, rtol): (f64, f64),
    seed: u64,
) -> Result<()> {
    let set = |v: &Var, t: &Tensor| -> Result<()> {
        crate::params_changed();
        v.set(t)
    };
    for (i, (name, v)) in params.iter().enumerate() {
        let d = random_tensor(v.dims(), seed + i as u64)?;
        let Some(g) = grads.get(v.as_tensor()) else {
            bail!("{name}: no gradient reached it");
        };
        let analytic = (g * &d)?.sum_all()?.to_scalar::<f32>()? as f64;
        let original = v.as_tensor().copy()?;
        let at = |sign: f64| -> Result<f64> {
            set(v, &(&original + (&d * (sign * eps))?)?)?;
            loss()
        };
        let numeric = (at(1.0)? - at(-1.0)?) / (2.0 * eps);
        set(v, &original)?;
        if (numeric - analytic).abs() > atol + rtol * analytic.abs() {
            bail!("{name}: gradient · direction {analytic} vs finite difference {numeric}");
        }
    }
    Ok(())
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        bail!("shape mismatch: {:?} vs {:?}", a.dims(), b.dims());
    }
    let a = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let b = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max))
}

/// Fails unless `a` and `b` agree to `tol` everywhere.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) -> Result<()> {
    let d = max_abs_diff(a, b)?;
    if d.is_nan() || d > tol {
        bail!("{what}: max abs diff {d:e} > {tol:e}");
    }
    Ok(())
}

/// Runs `f` forward and backward on `inputs` as variables and returns the output and each input's
/// gradient of `Σ out ⊙ R` — for comparing a fused op with its composed reference.
pub fn value_and_grads(
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
) -> Result<(Tensor, Vec<Tensor>)> {
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors)?;
    let projection = random_tensor(out.dims(), 11)?;
    let grads = (&out * &projection)?.sum_all()?.backward()?;
    let gs = tensors
        .iter()
        .map(|t| match grads.get(t) {
            Some(g) => Ok(g.clone()),
            None => t.zeros_like(),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out.detach(), gs))
}

/// Checks that the fused `fused` and the composed `reference` agree in value and in every gradient.
pub fn check_parity(
    fused: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    reference: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    tol: f32,
) -> Result<()> {
    let (a, ga) = value_and_grads(fused, inputs)?;
    let (b, gb) = value_and_grads(reference, inputs)?;
    assert_close(&a, &b, tol, "forward")?;
    for (i, (x, y)) in ga.iter().zip(&gb).enumerate() {
        assert_close(x, y, tol, &format!("gradient of input {i}"))?;
    }
    Ok(())
}
