use crate::params::LinearPrecision;
use crate::params::{Init, ParamPath};
use candle_core::{Result, Tensor};
use lingo_kernels::{Bf16Matrix, Int8Matrix, SharedGrad};
use std::sync::{Arc, Mutex};

/// A linear layer's weight `[out, in]`: an f32 parameter, or int8 or bf16 for inference (see
/// [`crate::ParamStore::hold_linears_as`]).
#[derive(Clone, Debug)]
pub enum LinearWeight {
    F32(Tensor),
    Int8(Arc<Int8Matrix>),
    Bf16(Arc<Bf16Matrix>),
    /// A bf16 embedding table `[vocab, dim]` read in place by the head tied to it.
    Bf16Rows(Tensor),
}

impl LinearWeight {
    /// `values` (`[out, in]`, row-major) held as int8 or bf16, as `precision` says. An f32
    /// weight is a parameter of its store, never converted.
    pub fn convert(
        values: &[f32],
        out: usize,
        inp: usize,
        precision: LinearPrecision,
    ) -> Result<Self> {
        Ok(match precision {
            LinearPrecision::F32 => {
                candle_core::bail!("an f32 linear weight is a parameter, not a conversion")
            }
            LinearPrecision::Int8 => {
                LinearWeight::Int8(Arc::new(Int8Matrix::quantize(values, out, inp)?))
            }
            LinearPrecision::Bf16 => {
                LinearWeight::Bf16(Arc::new(Bf16Matrix::from_f32(values, out, inp)?))
            }
        })
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            LinearWeight::F32(w) | LinearWeight::Bf16Rows(w) => {
                let d = w.dims();
                (d[0], d.get(1).copied().unwrap_or(1))
            }
            LinearWeight::Int8(q) => q.dims(),
            LinearWeight::Bf16(q) => q.dims(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            LinearWeight::F32(w) | LinearWeight::Bf16Rows(w) => {
                w.dtype().size_in_bytes() * w.elem_count()
            }
            LinearWeight::Int8(q) => q.bytes(),
            LinearWeight::Bf16(q) => q.bytes(),
        }
    }
}

/// `y = x Wᵀ + b`, weight `[out, in]` as in PyTorch.
///
/// For inputs of several rows the layer keeps a copy of its weight laid out `[in, out]`, which
/// `gemm` multiplies 2–20× faster at the row counts of inference (see
/// [`lingo_kernels::linear_transposed`]). The copy is made the second time the layer runs at one
/// [`lingo_kernels::params_version`], so a training step (one forward per update) never pays for it;
/// once any parameter is written the copy is stale and the next call drops it. Inference thus holds
/// each weight twice.
///
/// A layer built in a store that holds linear weights as int8 or bf16
/// ([`crate::ParamStore::hold_linears_as`]) holds its weight that way only, and multiplies with
/// [`lingo_kernels::linear_int8`] or [`lingo_kernels::linear_bf16`] (inference only).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: LinearWeight,
    pub bias: Option<Tensor>,
    transposed: Arc<Mutex<Transposed>>,
    /// Tensor parallelism: this layer holds some input features only, and its outputs are summed
    /// over the ranks (before the bias, added once) — see [`crate::tensor_parallel`].
    reduce: Option<crate::tensor_parallel::Reduce>,
}

/// The weight's `[in, out]` copy, the parameter version it was seen or made at, and how many
/// forward passes have read the weight at that version.
#[derive(Debug, Default)]
struct Transposed {
    version: Option<u64>,
    weight: Option<Tensor>,
    calls: usize,
}

/// Inputs of at most this many rows are multiplied as plain `gemv`, where `[out, in]` is as fast.
const GEMV_ROWS: usize = 1;

/// When the copy is made: at the second pass over an unchanged weight for inputs of fewer rows
/// than this (decoding, small batches: the layout matters most), else at the fourth. A training
/// step reads each weight once per shard or micro-batch before the optimizer changes it, so two
/// shards no longer pay for a copy every step, while inference (BERT-base at 1 × 128 rows: 195 →
/// 127 ms) still gets it.
const FEW_ROWS: usize = 128;
const COPY_AT_CALL: usize = 4;

thread_local! {
    /// Whether layers on this thread may use their `[in, out]` weight copies.
    static WEIGHT_COPIES: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `f` with every [`Linear`] on this thread multiplying by its weight as stored, never by
/// its `[in, out]` copy. For computations that run at once on several threads over the same layers
/// (the shards of a training batch): which of them reads a weight the second time, and so makes
/// the copy, is a race, and a product sums in another order with the copy than without — the
/// results would differ in their last bits from run to run.
pub fn without_weight_copies<R>(f: impl FnOnce() -> R) -> R {
    let before = WEIGHT_COPIES.replace(false);
    let out = f();
    WEIGHT_COPIES.set(before);
    out
}

impl Linear {
    /// Weight drawn from `init`, bias (if any) zero.
    pub fn new(
        p: &ParamPath,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        init: Init,
    ) -> Result<Self> {
        let weight = p.linear_weight("weight", out_dim, in_dim, init)?;
        let bias = if bias {
            Some(p.get("bias", &[out_dim], Init::Zeros)?)
        } else {
            None
        };
        Ok(Linear::with_weight(weight, bias))
    }

    /// A layer over an existing weight (`[out, in]`).
    pub fn with_weight(weight: LinearWeight, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            transposed: Arc::default(),
            reduce: None,
        }
    }

    /// A layer over existing f32 tensors (`weight: [out, in]`).
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear::with_weight(LinearWeight::F32(weight), bias)
    }

    /// An output projection tied to an embedding table (`[vocab, dim]`) of the store `p` is in.
    /// In a store that holds linear weights as int8, the projection is an int8 copy of the table
    /// (the lookup keeps reading the table): what is derived is not saved, and loading derives it
    /// again. In a bf16 store the table is bf16 and the projection reads it in place.
    pub fn tied(p: &ParamPath, table: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        let precision = p.store().linear_precision();
        let weight = if precision == LinearPrecision::F32 {
            LinearWeight::F32(table.clone())
        } else if table.dtype() == candle_core::DType::BF16 {
            // The bf16 table serves the lookup and the head alike: no copy.
            LinearWeight::Bf16Rows(table.clone())
        } else {
            let (out, inp) = table.dims2()?;
            let values = table.to_dtype(candle_core::DType::F32)?;
            let values = values.flatten_all()?.to_vec1::<f32>()?;
            let weight = LinearWeight::convert(&values, out, inp, precision)?;
            p.store().hold_derived(weight.clone());
            weight
        };
        Ok(Linear::with_weight(weight, bias))
    }

    /// The f32 weight `[out, in]`; `None` for an int8 or bf16 layer.
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.weight {
            LinearWeight::F32(w) => Some(w),
            LinearWeight::Int8(_) | LinearWeight::Bf16(_) | LinearWeight::Bf16Rows(_) => None,
        }
    }

    pub fn weight_storage(&self) -> &LinearWeight {
        &self.weight
    }

    /// `(out, in)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        match &self.weight {
            LinearWeight::F32(w) => w.dims2(),
            other => Ok(other.dims()),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(reduce) = &self.reduce {
            let partial = Linear {
                bias: None,
                reduce: None,
                ..self.clone()
            };
            let y = reduce.sum(&partial.forward(x)?)?;
            return match &self.bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        let weight = match &self.weight {
            LinearWeight::F32(w) => w,
            LinearWeight::Int8(q) => return lingo_kernels::linear_int8(x, q, self.bias.as_ref()),
            LinearWeight::Bf16(q) => return lingo_kernels::linear_bf16(x, q, self.bias.as_ref()),
            LinearWeight::Bf16Rows(t) => {
                return lingo_kernels::bf16::linear_bf16_rows(x, t, self.bias.as_ref())
            }
        };
        let rows = x.elem_count() / x.dim(candle_core::D::Minus1)?.max(1);
        match self.transposed_weight(weight, rows)? {
            Some(wt) => lingo_kernels::linear_transposed(x, weight, &wt, self.bias.as_ref()),
            None => lingo_kernels::linear(x, weight, self.bias.as_ref()),
        }
    }

    /// This layer's output features `ranges` only, in that order: a column-parallel share of it
    /// (tensor parallelism). f32 layers only.
    pub fn keep_outputs(&self, ranges: &[std::ops::Range<usize>]) -> Result<Linear> {
        let Some(w) = self.weight() else {
            candle_core::bail!("tensor parallelism splits f32 layers only");
        };
        let pick = |t: &Tensor| -> Result<Tensor> {
            let parts = (ranges.iter())
                .map(|r| t.narrow(0, r.start, r.len()))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)?.contiguous()
        };
        let bias = self.bias.as_ref().map(pick).transpose()?;
        Ok(Linear::from_parts(pick(w)?, bias))
    }

    /// This layer's input features `inputs` only, its outputs summed over the ranks by `reduce`
    /// before the bias is added (once): a row-parallel share of it (tensor parallelism).
    pub fn row_parallel(
        &self,
        inputs: std::ops::Range<usize>,
        reduce: crate::tensor_parallel::Reduce,
    ) -> Result<Linear> {
        let Some(w) = self.weight() else {
            candle_core::bail!("tensor parallelism splits f32 layers only");
        };
        let weight = w.narrow(1, inputs.start, inputs.len())?.contiguous()?;
        Ok(Linear {
            reduce: Some(reduce),
            ..Linear::from_parts(weight, self.bias.clone())
        })
    }

    /// Several layers applied to one input (a self-attention's query, key and value). When all are
    /// int8 the input is quantized once for all of them; otherwise each runs as [`Self::forward`].
    pub fn forward_each(layers: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
        let int8: Option<Vec<_>> = layers
            .iter()
            .map(|l| match &l.weight {
                LinearWeight::Int8(q) => Some((q, l.bias.as_ref())),
                _ => None,
            })
            .collect();
        match int8 {
            Some(int8) if layers.len() > 1 => lingo_kernels::linear_int8_many(x, &int8),
            _ => layers.iter().map(|l| l.forward(x)).collect(),
        }
    }

    /// The `[in, out]` copy of the weight, if it is current or worth making now.
    fn transposed_weight(&self, weight: &Tensor, rows: usize) -> Result<Option<Tensor>> {
        if rows <= GEMV_ROWS || !weight.device().is_cpu() || !WEIGHT_COPIES.get() {
            return Ok(None);
        }
        let version = lingo_kernels::params_version();
        let mut cache = self
            .transposed
            .lock()
            .expect("transposed weight lock poisoned");
        if cache.version != Some(version) {
            *cache = Transposed {
                version: Some(version),
                weight: None,
                calls: 1,
            };
            return Ok(None);
        }
        cache.calls += 1;
        let due = cache.calls >= COPY_AT_CALL || rows < FEW_ROWS;
        if cache.weight.is_none() && due {
            cache.weight = Some(weight.detach().t()?.contiguous()?);
        }
        Ok(cache.weight.clone())
    }
}

/// A [`Linear`] applied at every step of a loop: the gradients of all steps are summed in place (see
/// [`lingo_kernels::SharedGrad`]). Make one per forward pass; every step must feed the loss.
/// An int8 layer has no gradient to share and is simply applied.
pub struct LoopLinear<'a> {
    layer: &'a Linear,
    dw: Option<SharedGrad>,
    db: Option<SharedGrad>,
}

impl Linear {
    pub fn in_loop(&self) -> LoopLinear<'_> {
        LoopLinear {
            layer: self,
            dw: self.weight().map(SharedGrad::new),
            db: self.bias.as_ref().map(SharedGrad::new),
        }
    }
}

impl LoopLinear<'_> {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let l = self.layer;
        match (l.weight(), &self.dw) {
            (Some(w), Some(dw)) => {
                lingo_kernels::linear_shared(x, w, l.bias.as_ref(), dw, self.db.as_ref())
            }
            _ => l.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{assign, ParamStore};
    use candle_core::Device;

    /// The `[in, out]` copy must follow every write to the weight, or inference would run on stale
    /// weights after a training step or a load.
    #[test]
    fn transposed_copy_follows_weight_writes() -> Result<()> {
        let store = ParamStore::new(3, &Device::Cpu);
        let layer = Linear::new(&store.root().sub("l"), 16, 24, true, Init::Normal(0.5))?;
        let x = Tensor::randn(0f32, 1.0, (5, 16), &Device::Cpu)?;
        let expect = |layer: &Linear| -> Result<Tensor> {
            lingo_kernels::linear::linear_composed(&x, layer.weight().unwrap(), layer.bias.as_ref())
        };
        let max_diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
            (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
        };
        // Tests in other threads also write parameters, so allow a few tries at one version.
        for _ in 0..20 {
            assert!(max_diff(&layer.forward(&x)?, &expect(&layer)?)? < 1e-5);
            if layer.transposed.lock().unwrap().weight.is_some() {
                break;
            }
        }
        assert!(
            layer.transposed.lock().unwrap().weight.is_some(),
            "copy not made"
        );
        let var = store.get("l.weight").expect("weight");
        assign(&var, &(var.as_tensor() * 2.0)?)?;
        assert!(max_diff(&layer.forward(&x)?, &expect(&layer)?)? < 1e-5);
        assert!(max_diff(&layer.forward(&x)?, &expect(&layer)?)? < 1e-5);
        // An optimizer step writes in place through the kernels.
        let mut state = (vec![0f32; 24 * 16], vec![0f32; 24 * 16]);
        let grad = Tensor::ones((24, 16), candle_core::DType::F32, &Device::Cpu)?;
        let step = lingo_kernels::optim::AdamWStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 1,
            grad_scale: 1.0,
        };
        lingo_kernels::optim::adamw_update(
            var.as_tensor(),
            &grad,
            &mut state.0,
            &mut state.1,
            step,
        )?;
        assert!(max_diff(&layer.forward(&x)?, &expect(&layer)?)? < 1e-5);
        Ok(())
    }
}
