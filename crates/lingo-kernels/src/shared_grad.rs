//! One gradient buffer for a tensor that many ops of a graph read: a recurrent weight at every time
//! step, the encoder outputs at every decoder step, an embedding table looked up once per step.
//!
//! candle sums such a gradient by giving every reader a full-size gradient tensor of its own and adding
//! it into a fresh copy of the running sum (`zeros_like` + `add`), so a loop of `T` steps allocates and
//! streams `2T` copies of a weight matrix or of the encoder outputs. Ops built with a [`SharedGrad`]
//! add their part in place into one buffer instead, and one of them hands the total to candle:
//! - [`SharedGrad::chained`], for a recurrence where every reader depends on the first one (step `t`
//!   reads the state step `t − 1` produced): the first reader runs its backward last, so it hands the
//!   total, whatever subset of the steps the loss depends on;
//! - [`SharedGrad::new`], for readers that do not depend on one another (an embedding looked up at every
//!   decoder step): the last of the registered readers to run its backward hands the total, so every
//!   reader must lie on the path to the loss.
//!
//! A buffer dropped holding parts that were never handed over says so on stderr.

use crate::cpu;
use candle_core::{Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// The summed gradient of one tensor across the ops that read it (see the module docs).
#[derive(Clone)]
pub struct SharedGrad(Arc<Mutex<Sum>>);

struct Sum {
    shape: Shape,
    chained: bool,
    readers: usize,
    arrived: usize,
    total: Vec<f32>,
}

/// One op's handle on a [`SharedGrad`].
pub(crate) struct Reader {
    sum: SharedGrad,
    index: usize,
}

impl SharedGrad {
    /// A buffer for the gradient of `t` whose readers are independent: the last to run its backward
    /// hands the total. No memory is allocated until a backward pass adds to it.
    pub fn new(t: &Tensor) -> Self {
        Self::with(t, false)
    }

    /// A buffer for the gradient of `t` whose readers form a chain (each depends on the first): the
    /// first reader, whose backward runs last, hands the total.
    pub fn chained(t: &Tensor) -> Self {
        Self::with(t, true)
    }

    fn with(t: &Tensor, chained: bool) -> Self {
        SharedGrad(Arc::new(Mutex::new(Sum {
            shape: t.shape().clone(),
            chained,
            readers: 0,
            arrived: 0,
            total: Vec::new(),
        })))
    }

    /// Registers one more reader (an op being built in the forward pass).
    pub(crate) fn reader(&self) -> Reader {
        let mut sum = self.lock();
        sum.readers += 1;
        Reader {
            sum: self.clone(),
            index: sum.readers - 1,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sum> {
        // A panic inside `add` cannot leave the sum half-written in a way later readers rely on.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reader {
    /// Adds this reader's part with `add` (which receives the zero-initialised sum); returns the total
    /// if this reader is the one that hands it over.
    fn add(&self, add: impl FnOnce(&mut [f32])) -> Result<Option<Tensor>> {
        let mut sum = self.sum.lock();
        if sum.total.is_empty() {
            sum.total = vec![0f32; sum.shape.elem_count()];
        }
        add(&mut sum.total);
        sum.arrived += 1;
        let last = if sum.chained {
            self.index == 0
        } else {
            sum.arrived == sum.readers
        };
        if !last {
            return Ok(None);
        }
        sum.arrived = 0;
        let total = std::mem::take(&mut sum.total);
        cpu::tensor(total, sum.shape.clone()).map(Some)
    }
}

impl Drop for Sum {
    fn drop(&mut self) {
        if self.arrived > 0 {
            eprintln!(
                "lingo: warning: a shared gradient of shape {:?} was dropped after {} of its {} readers ran backward, before the reader that hands the total; those parts never reached the parameter",
                self.shape, self.arrived, self.readers
            );
        }
    }
}

/// A tensor whose gradient is shared must reach the op as it is: a contiguous copy or reshape made at
/// every step would be a new graph node per step, whose gradient the shared sum never fills.
pub(crate) fn check_input(t: &Tensor, what: &str) -> Result<()> {
    if !t.is_contiguous() {
        candle_core::bail!(
            "{what}: a tensor with a shared gradient must be contiguous (make it contiguous once, before the loop), got strides {:?}",
            t.stride()
        );
    }
    Ok(())
}

/// The gradient of one op input: added into the shared sum when the op has a [`Reader`] (returning
/// the total only from the reader that hands it over), else computed into a fresh zeroed tensor shaped
/// like `like`.
pub(crate) fn gradient(
    shared: Option<&Reader>,
    like: &Tensor,
    add: impl FnOnce(&mut [f32]) -> Result<()>,
) -> Result<Option<Tensor>> {
    match shared {
        Some(reader) => {
            let mut outcome = Ok(());
            let total = reader.add(|buf| outcome = add(buf))?;
            outcome?;
            // The op may see a reshaped view of the shared tensor (e.g. `v` flattened).
            total.map(|t| t.reshape(like.shape())).transpose()
        }
        None => {
            let mut buf = vec![0f32; like.elem_count()];
            add(&mut buf)?;
            cpu::tensor(buf, like.shape().clone()).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{assert_close, random_tensor};
    use candle_core::{Device, Var};

    /// A small recurrence that reads every tensor at every step, run with and without shared
    /// gradients: the gradients agree, and the shared run hands each total to candle once.
    #[test]
    fn shared_sums_equal_candle_sums() -> Result<()> {
        let vars: Vec<Var> = [
            &[4usize, 5][..],
            &[4],
            &[6, 5],
            &[2, 3, 4],
            &[4],
            &[2, 3, 5],
        ]
        .iter()
        .enumerate()
        .map(|(i, dims)| Var::from_tensor(&random_tensor(dims, i as u64 + 1)?))
        .collect::<Result<_>>()?;
        let [w, b, table, keys, v, memory] = [0, 1, 2, 3, 4, 5].map(|i| vars[i].as_tensor());
        let run = |shared: bool| -> Result<Vec<Tensor>> {
            let sums: Vec<SharedGrad> = vars.iter().map(|t| SharedGrad::new(t)).collect();
            let mut h = Tensor::zeros((2, 4), candle_core::DType::F32, &Device::Cpu)?;
            for step in 0..3u32 {
                let ids = Tensor::new(&[step, 5 - step], &Device::Cpu)?;
                let x = if shared {
                    crate::embedding_shared(table, &ids, &sums[2])?
                } else {
                    crate::embedding(table, &ids)?
                };
                let lin = |x: &Tensor| {
                    if shared {
                        crate::linear_shared(x, w, Some(b), &sums[0], Some(&sums[1]))
                    } else {
                        crate::linear(x, w, Some(b))
                    }
                };
                let q = (lin(&x)? + &h)?.tanh()?;
                let e = if shared {
                    crate::additive_scores_shared(keys, &q, v, &sums[3], &sums[4])?
                } else {
                    crate::additive_scores(keys, &q, v)?
                };
                let weights = crate::softmax(&e)?;
                let c = if shared {
                    crate::weighted_sum_shared(&weights, memory, &sums[5])?
                } else {
                    crate::weighted_sum(&weights, memory)?
                };
                h = lin(&c)?;
            }
            let grads = h.sqr()?.sum_all()?.backward()?;
            vars.iter()
                .map(|t| {
                    grads
                        .get(t)
                        .cloned()
                        .ok_or_else(|| candle_core::Error::Msg("missing gradient".into()))
                })
                .collect()
        };
        let names = ["w", "b", "table", "keys", "v", "memory"];
        for ((a, e), name) in run(true)?.iter().zip(&run(false)?).zip(names) {
            assert_close(a, e, 1e-5, name)?;
        }
        Ok(())
    }
}
