//! Data parallelism over a [`Collective`]: what the trainer exchanges between ranks. Every rank
//! starts from rank 0's weights, computes its shards of each batch, and takes part in one
//! all-reduce of the gradients per step, so every rank applies the same update to the same
//! weights and they never drift apart.

use crate::grads::Gradients;
use crate::{TrainError, TrainReport, TrainTask, Trainer};
use candle_core::{Tensor, Var};
use lingo_dist::{Collective, InProcess};
use lingo_nn::ParamStore;
use std::sync::Arc;

/// Gradients are all-reduced in buckets of at most this many values (16 MiB), so the flat copy
/// never doubles a large model's gradient memory, and one bucket is reduced while the next is
/// packed and the previous unpacked.
pub const BUCKET_VALUES: usize = 4 << 20;

/// Rank 0's parameters copied into every rank's, so all ranks start from the same weights however
/// each was initialised or loaded.
pub fn broadcast_params(collective: &dyn Collective, params: &ParamStore) -> crate::Result<()> {
    for (_, var) in params.named() {
        let tensor = var.as_tensor();
        let mut values = tensor.flatten_all()?.to_vec1::<f32>()?;
        collective.broadcast(&mut values, 0)?;
        if !collective.is_root() {
            let value = Tensor::from_vec(values, tensor.dims(), &tensor.device().clone())?;
            lingo_nn::params::assign(&var, &value)?;
        }
    }
    Ok(())
}

/// What rank 0 computed alone (the bytes of a checkpoint it read, say), or its error, on every
/// rank: the other ranks fail with rank 0's message instead of waiting for it.
pub fn share_from_root(
    collective: &dyn Collective,
    compute: impl FnOnce() -> crate::Result<Vec<u8>>,
) -> crate::Result<Vec<u8>> {
    let mut message = if collective.is_root() {
        match compute() {
            Ok(mut bytes) => {
                bytes.insert(0, 0);
                bytes
            }
            Err(e) => {
                let mut text = e.to_string().into_bytes();
                text.insert(0, 1);
                text
            }
        }
    } else {
        Vec::new()
    };
    collective.broadcast_bytes(&mut message, 0)?;
    match message.split_first() {
        Some((0, bytes)) => Ok(bytes.to_vec()),
        Some((_, error)) if collective.is_root() => {
            Err(TrainError::Input(String::from_utf8_lossy(error).into()))
        }
        Some((_, error)) => Err(TrainError::Input(format!(
            "rank 0 failed: {}",
            String::from_utf8_lossy(error)
        ))),
        None => Err(TrainError::Input("rank 0 sent nothing".into())),
    }
}

/// The sum a tensor-parallel layer adds its partial outputs up with (see
/// [`lingo_nn::tensor_parallel`]): an all-reduce over `world`, in rank order, so every rank gets
/// the same bits.
pub fn tensor_sum(world: Arc<dyn Collective>) -> lingo_nn::tensor_parallel::Reduce {
    lingo_nn::tensor_parallel::Reduce(Arc::new(move |t: &Tensor| {
        let mut values = t.flatten_all()?.to_vec1::<f32>()?;
        world
            .all_reduce_sum(&mut values)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Tensor::from_vec(values, t.dims(), t.device())
    }))
}

/// Every rank's `value` summed in f64, in rank order: the same sum, to the bit, as one process
/// adding its shards' values in shard order.
pub fn sum_over_ranks(collective: &dyn Collective, value: f64) -> crate::Result<f64> {
    let bits = value.to_bits();
    let mine = [
        f32::from_bits(bits as u32),
        f32::from_bits((bits >> 32) as u32),
    ];
    let mut all = vec![0f32; 2 * collective.world_size()];
    collective.all_gather(&mine, &mut all)?;
    let values = all
        .chunks_exact(2)
        .map(|w| f64::from_bits(w[0].to_bits() as u64 | (w[1].to_bits() as u64) << 32));
    Ok(values.fold(0.0, |sum, v| sum + v))
}

/// Sums every rank's gradients in rank order, leaving the same sums on every rank. A parameter
/// that has a gradient on some ranks and not on others (their shards did not reach it) gets the
/// sum of those that have one.
pub fn all_reduce_gradients(
    collective: &dyn Collective,
    grads: &mut Gradients,
    params: &[(String, Var)],
) -> crate::Result<()> {
    // Which parameters have a gradient anywhere, in one small collective.
    let mut present: Vec<f32> = grads
        .grads
        .iter()
        .map(|g| g.is_some() as u8 as f32)
        .collect();
    collective.all_reduce_sum(&mut present)?;
    let present: Vec<usize> = (0..present.len()).filter(|&i| present[i] > 0.0).collect();

    // Buckets of whole parameters, last parameters first (the order backward finishes them).
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut filled = usize::MAX;
    for &i in present.iter().rev() {
        let len = params[i].1.elem_count();
        if filled.saturating_add(len) > BUCKET_VALUES {
            buckets.push(Vec::new());
            filled = 0;
        }
        buckets.last_mut().expect("pushed").push(i);
        filled += len;
    }
    let pack = |bucket: &[usize]| -> crate::Result<Vec<f32>> {
        let mut flat = Vec::with_capacity(bucket.iter().map(|&i| params[i].1.elem_count()).sum());
        for &i in bucket {
            match &grads.grads[i] {
                Some(g) => flat.extend(g.flatten_all()?.to_vec1::<f32>()?),
                None => flat.resize(flat.len() + params[i].1.elem_count(), 0.0),
            }
        }
        Ok(flat)
    };
    // One thread reduces while this one packs the next bucket: a pipeline of two.
    let (reduced, packed) = std::thread::scope(|scope| {
        let (to_reduce, incoming) = std::sync::mpsc::sync_channel::<Vec<f32>>(1);
        let reducer = scope.spawn(move || {
            let reduce = |mut flat: Vec<f32>| -> crate::Result<Vec<f32>> {
                collective.all_reduce_sum(&mut flat)?;
                Ok(flat)
            };
            incoming.into_iter().map(reduce).collect::<Vec<_>>()
        });
        let packed = buckets.iter().try_for_each(|bucket| {
            // A closed channel means the reducer stopped; its error is reported below.
            let _ = to_reduce.send(pack(bucket)?);
            Ok::<_, TrainError>(())
        });
        drop(to_reduce);
        let reduced: Vec<crate::Result<Vec<f32>>> = reducer.join().unwrap_or_else(|_| {
            vec![Err(TrainError::Input(
                "the all-reduce thread panicked".into(),
            ))]
        });
        (reduced, packed)
    });
    packed?;
    if reduced.len() != buckets.len() {
        return Err(TrainError::Input(
            "a gradient bucket was not reduced".into(),
        ));
    }
    for (bucket, flat) in buckets.iter().zip(reduced) {
        let flat = flat?;
        let mut at = 0;
        for &i in bucket {
            let var = &params[i].1;
            let len = var.elem_count();
            let value = Tensor::from_slice(&flat[at..at + len], var.dims(), var.device())?;
            grads.grads[i] = Some(value);
            at += len;
        }
    }
    Ok(())
}

/// Trains on `world` ranks that are threads of this process ([`InProcess`]): rank `r` runs
/// `trainer` with its own task from `make_task(r)`. The way to check a distributed run against a
/// single one without a launcher; every rank's result, in rank order.
pub fn train_in_process<T: TrainTask>(
    world: usize,
    trainer: &Trainer,
    resume: bool,
    make_task: impl Fn(usize) -> crate::Result<T> + Sync,
) -> Vec<crate::Result<TrainReport>> {
    std::thread::scope(|scope| {
        let ranks: Vec<_> = InProcess::group(world)
            .into_iter()
            .enumerate()
            .map(|(rank, collective)| {
                let make_task = &make_task;
                scope.spawn(move || {
                    let mut trainer = trainer.clone();
                    trainer.collective = Arc::new(collective);
                    trainer.run(&mut make_task(rank)?, resume)
                })
            })
            .collect();
        ranks
            .into_iter()
            .map(|rank| {
                rank.join()
                    .unwrap_or_else(|_| Err(TrainError::Input("a rank panicked".into())))
            })
            .collect()
    })
}
