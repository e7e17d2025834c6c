//! Gradient checkpointing (Chen et al., 2016): a block keeps only its input for the backward
//! pass, not the activations inside it; the backward runs the block again from that input and
//! differentiates the recomputation. Memory for activations drops from every layer's
//! intermediates to one layer's, for about one more forward pass of compute.
//!
//! [`checkpointed`] wraps a block as a candle op whose forward returns the block's output
//! (computed once, its graph dropped) and whose backward recomputes the block — with the same
//! dropout masks, the run's RNG being replayed from where the block first drew — and returns the
//! input's gradient to candle. Candle never sees the parameters behind the op, so their gradients
//! from the recomputation are gathered in the [`Recomputed`] the [`Ctx`] carries, which the
//! trainer adds to the backward's own.

use crate::{Ctx, LingoRng, ParamStore};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, TensorId, Var};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Parameter gradients found by recomputing blocks during a backward pass.
#[derive(Clone)]
pub struct Recomputed {
    grads: Arc<Mutex<GradStore>>,
    params: Arc<HashSet<TensorId>>,
}

impl Recomputed {
    /// Gathers gradients for the parameters of `store`.
    pub fn for_params(store: &ParamStore) -> Self {
        Recomputed {
            grads: Arc::default(),
            params: Arc::new(
                store
                    .named()
                    .iter()
                    .map(|(_, v)| v.as_tensor().id())
                    .collect(),
            ),
        }
    }

    /// The gradients gathered so far, leaving none.
    pub fn take(&self) -> GradStore {
        std::mem::take(&mut *self.grads.lock().expect("not poisoned"))
    }

    /// Keeps the parameters' gradients of `grads` (the recomputation's input has its own).
    fn add(&self, grads: GradStore) -> Result<()> {
        let mut kept = GradStore::default();
        for id in grads.get_ids().filter(|id| self.params.contains(id)) {
            if let Some(g) = grads.get_id(*id) {
                kept.insert_id(*id, g.clone());
            }
        }
        self.grads.lock().expect("not poisoned").extend(kept)
    }
}

/// A block: a pure function of its input, the parameters it reads and the context's RNG.
pub type Block = dyn Fn(&Tensor, &mut Ctx) -> Result<Tensor> + Send + Sync;

/// `block(x)`, keeping only `x` for the backward pass when the context recomputes (training
/// with a [`Recomputed`]); otherwise the block as it is.
pub fn checkpointed(
    x: &Tensor,
    ctx: &mut Ctx,
    block: impl Fn(&Tensor, &mut Ctx) -> Result<Tensor> + Send + Sync + 'static,
) -> Result<Tensor> {
    let Some(recomputed) = ctx.recompute.clone() else {
        return block(x, ctx);
    };
    let rng = ctx.rng.clone();
    let output = block(&x.detach(), ctx)?.detach().contiguous()?;
    let op = Recompute {
        block: Box::new(block),
        rng,
        train: ctx.train,
        output,
        recomputed,
    };
    x.apply_op1(op)
}

struct Recompute {
    block: Box<Block>,
    /// The RNG as the block first found it, so the recomputation draws the same masks.
    rng: LingoRng,
    train: bool,
    output: Tensor,
    recomputed: Recomputed,
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "recompute"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.output.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("recompute: the block's output is not on the CPU");
        };
        let start = layout.start_offset();
        let n = layout.shape().elem_count();
        let data = match cpu {
            CpuStorage::F32(v) => CpuStorage::F32(v[start..start + n].to_vec()),
            _ => candle_core::bail!("recompute: only f32 blocks are supported"),
        };
        Ok((data, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let x = Var::from_tensor(&arg.detach())?;
        let mut ctx = Ctx {
            train: self.train,
            rng: self.rng.clone(),
            recompute: None,
        };
        let y = (self.block)(x.as_tensor(), &mut ctx)?;
        let mut grads = (y * grad_res.detach())?.sum_all()?.backward()?;
        let dx = grads.remove(x.as_tensor());
        self.recomputed.add(grads)?;
        Ok(dx)
    }
}
