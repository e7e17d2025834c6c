//! Pipeline parallelism (GPipe, Huang et al. 2019) over a [`Collective`]: rank `r` runs stage `r`
//! of a model cut into consecutive layer ranges ([`PipelineStage`]). A step sends every
//! micro-batch forward through the stages — each stage passes its activations to the next — then
//! back in reverse order, each stage passing the gradient of its input to the previous one; the
//! stages' parameter gradients add up over the micro-batches, and every stage then updates its own
//! parameters. While stage `r` works on micro-batch `m`, stage `r − 1` works on `m + 1`: the
//! micro-batches fill the pipeline.

use crate::grads::Gradients;
use crate::TrainError;
use candle_core::{Tensor, Var};
use lingo_dist::Collective;
use lingo_nn::pipeline::PipelineStage;
use lingo_nn::Ctx;

/// Dimensions a message header can describe.
const HEADER: usize = 8;

/// Sends `t` (f32, any shape up to 7 dimensions) to rank `to`: its shape, then its values.
fn send_tensor(c: &dyn Collective, t: &Tensor, to: usize) -> crate::Result<()> {
    let dims = t.dims();
    if dims.len() >= HEADER {
        return Err(TrainError::Input(format!(
            "cannot send a tensor of shape {dims:?}"
        )));
    }
    let mut header = [0f32; HEADER];
    header[0] = dims.len() as f32;
    for (h, &d) in header[1..].iter_mut().zip(dims) {
        *h = d as f32;
    }
    c.send(&header, to)?;
    c.send(&t.flatten_all()?.to_vec1::<f32>()?, to)?;
    Ok(())
}

/// What [`send_tensor`] sent from rank `from`.
fn recv_tensor(c: &dyn Collective, from: usize) -> crate::Result<Tensor> {
    let mut header = [0f32; HEADER];
    c.recv(&mut header, from)?;
    let dims: Vec<usize> = header[1..=header[0] as usize]
        .iter()
        .map(|&d| d as usize)
        .collect();
    let mut values = vec![0f32; dims.iter().product()];
    c.recv(&mut values, from)?;
    Ok(Tensor::from_vec(values, dims, &candle_core::Device::Cpu)?)
}

/// One GPipe step of this rank's `stage` over `micro_batches` (each the model's inputs: ids,
/// targets, …; every rank has them all): the mean of the micro-batches' losses, on every rank, and
/// the gradients of the mean with respect to [`PipelineStage::params`], in that order. Parameters
/// the first and last stages share ([`PipelineStage::tied`]) get the sum of both stages' parts.
pub fn gpipe_step(
    c: &dyn Collective,
    stage: &dyn PipelineStage,
    micro_batches: &[Vec<Tensor>],
    ctx: &mut Ctx,
) -> crate::Result<(f64, Gradients)> {
    let (rank, stages) = (c.rank(), c.world_size());
    let (first, last) = (rank == 0, rank + 1 == stages);
    let named = stage.params();
    let m = micro_batches.len() as f64;
    if micro_batches.is_empty() {
        return Err(TrainError::Input(
            "a pipeline step needs a micro-batch".into(),
        ));
    }

    // Forward: each micro-batch through this stage; the activations go on to the next stage.
    let mut kept: Vec<(Option<Var>, Tensor)> = Vec::with_capacity(micro_batches.len());
    for inputs in micro_batches {
        let x = match first {
            true => None,
            false => Some(Var::from_tensor(&recv_tensor(c, rank - 1)?)?),
        };
        let out = stage.forward(inputs, x.as_ref().map(Var::as_tensor), ctx)?;
        if !last {
            send_tensor(c, &out, rank + 1)?;
        }
        kept.push((x, out));
    }

    // Backward, last micro-batch first: the gradient of each stage's output comes from the next
    // stage, and the gradient of its input goes to the previous one.
    let mut loss = 0.0;
    let mut total: Option<Gradients> = None;
    for (x, out) in kept.into_iter().rev() {
        let objective = match last {
            true => {
                loss += out.to_scalar::<f32>()? as f64;
                (out / m)?
            }
            false => {
                let upstream = recv_tensor(c, rank + 1)?;
                (out * upstream)?.sum_all()?
            }
        };
        let store = objective.backward()?;
        if let Some(x) = &x {
            let dx = store.get(x.as_tensor()).ok_or_else(|| {
                TrainError::Input(format!("stage {rank} does not depend on its input"))
            })?;
            send_tensor(c, dx, rank - 1)?;
        }
        Gradients::sum_into(&mut total, Gradients::from_store(&named, &store))?;
    }
    let mut grads = total.expect("at least one micro-batch");

    // Tied parameters: the first and last stages' parts, summed (zeros from the stages between).
    for (name, shape) in stage.tied() {
        let at = named.iter().position(|(n, _)| *n == name);
        let mut values = match at.and_then(|i| grads.grads[i].as_ref()) {
            Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0f32; shape.iter().product()],
        };
        c.all_reduce_sum(&mut values)?;
        if let Some(i) = at {
            grads.grads[i] = Some(Tensor::from_vec(values, shape, &candle_core::Device::Cpu)?);
        }
    }

    // The loss is the last stage's; every rank reports it.
    let mut mean = [(loss / m) as f32];
    c.broadcast(&mut mean, stages - 1)?;
    Ok((mean[0] as f64, grads))
}
