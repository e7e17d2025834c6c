//! Data parallelism over a [`Collective`]: what the trainer exchanges between ranks. Every rank
//! starts from rank 0's weights, computes its shards of each batch, and takes part in one
//! all-reduce of the gradients per step, so every rank applies the same update to the same
//! weights and they never drift apart.

use crate::grads::Gradients;
use crate::{TrainError, TrainReport, TrainTask, Trainer};
use candle_core::{Tensor, TensorId, Var};
use lingo_dist::{Collective, InProcess};
use lingo_nn::ParamStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Gradients are all-reduced in buckets of about this many values (1 MiB; a larger parameter
/// is a bucket of its own). Small enough that the first buckets are on their way while backward
/// is still working through the lower layers, and the size this machine's shared-memory transport
/// moves fastest (docs/distributed.md); large enough that per-call latency stays a small part.
pub const BUCKET_VALUES: usize = 1 << 18;

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

/// Sums every rank's gradients in rank order, leaving the same sums on every rank (the exchange
/// of [`all_reduce_during`] after the fact, for gradients computed without reporting).
pub fn all_reduce_gradients(
    collective: &dyn Collective,
    grads: Gradients,
    params: &[(String, Var)],
) -> crate::Result<Gradients> {
    let ((), total, _) = all_reduce_during(collective, params, None, 1, |sink| {
        sink.finish(0, &grads);
        Ok(())
    })?;
    Ok(total)
}

/// The gradient all-reduce of a step, overlapped with the backward passes that produce it.
/// `backward` runs this rank's `shards` backward passes of the step's last micro-batch; each
/// reports every parameter's gradient to the [`GradientSink`] the moment it is final (candle's
/// `backward_with`). Parameters are cut into buckets of whole parameters, last created first —
/// the order backward finishes them — and a bucket is summed over the ranks as soon as every
/// shard has reported all of its parameters, while backward goes on with the layers below.
///
/// Each parameter's gradient is `earlier` (the step's other micro-batches) plus the shards' in
/// shard order, summed over ranks in rank order: the same bits as summing after backward. A
/// parameter with a gradient on no rank (its shards' losses do not reach it) stays `None`. Also
/// returns the seconds the all-reduce ran on after `backward` had returned: the part of it that
/// the backward pass did not hide.
pub fn all_reduce_during<R>(
    collective: &dyn Collective,
    params: &[(String, Var)],
    earlier: Option<Gradients>,
    shards: usize,
    backward: impl FnOnce(&GradientSink) -> crate::Result<R>,
) -> crate::Result<(R, Gradients, f64)> {
    let (to_reduce, incoming) = std::sync::mpsc::channel::<(usize, Vec<f32>)>();
    let sink = GradientSink::new(params, buckets(params), earlier, shards, to_reduce);
    let buckets = &sink.buckets;
    let (result, reduced, waited) = std::thread::scope(|scope| {
        // Buckets arrive in the order backward finishes them, which may differ between ranks;
        // they are reduced in bucket order, the same collective sequence on every rank.
        let reducer = scope.spawn(|| -> crate::Result<Vec<Vec<f32>>> {
            let mut ready = std::collections::BTreeMap::new();
            let mut reduced = Vec::with_capacity(buckets.len());
            for (k, flat) in incoming {
                ready.insert(k, flat);
                while let Some(mut flat) = ready.remove(&reduced.len()) {
                    collective.all_reduce_sum(&mut flat)?;
                    reduced.push(flat);
                    sink.reduced.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(reduced)
        });
        // Every bucket was sent once every shard has finished; the sink closes even if
        // `backward` panics, so the reducer never waits for a bucket that will not come.
        let result = {
            let _closing = Closing(&sink);
            backward(&sink)
        };
        let waited = Instant::now();
        let reduced = reducer
            .join()
            .unwrap_or_else(|_| Err(TrainError::Input("the all-reduce thread panicked".into())));
        (result, reduced, waited.elapsed().as_secs_f64())
    });
    let result = result?;
    let reduced = reduced?;
    if reduced.len() != buckets.len() {
        let state = sink.state.lock().unwrap_or_else(|e| e.into_inner());
        return Err(TrainError::Input(format!(
            "a gradient bucket was not reduced: {}",
            state
                .failure
                .as_deref()
                .unwrap_or("a backward pass did not finish")
        )));
    }
    let mut total = Gradients {
        grads: vec![None; params.len()],
    };
    for (bucket, flat) in buckets.iter().zip(reduced) {
        let (values, present) = flat.split_at(flat.len() - bucket.len());
        let mut at = 0;
        for (&i, &present) in bucket.iter().zip(present) {
            let var = &params[i].1;
            let len = var.elem_count();
            if present > 0.0 {
                let value = Tensor::from_slice(&values[at..at + len], var.dims(), var.device())?;
                total.grads[i] = Some(value);
            }
            at += len;
        }
    }
    Ok((result, total, waited))
}

/// Every parameter's index in buckets of about [`BUCKET_VALUES`] values, last parameters first.
fn buckets(params: &[(String, Var)]) -> Vec<Vec<usize>> {
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut filled = usize::MAX;
    for (i, (_, var)) in params.iter().enumerate().rev() {
        let len = var.elem_count();
        if filled.saturating_add(len) > BUCKET_VALUES {
            buckets.push(Vec::new());
            filled = 0;
        }
        buckets.last_mut().expect("pushed").push(i);
        filled += len;
    }
    buckets
}

/// Closes a sink when dropped.
struct Closing<'a>(&'a GradientSink);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Where a rank's backward passes report final gradients during [`all_reduce_during`]; it hands
/// each bucket to the all-reduce the moment its last gradient arrives.
pub struct GradientSink {
    index: HashMap<TensorId, usize>,
    /// The bucket each parameter is in, and its number of values.
    place: Vec<usize>,
    sizes: Vec<usize>,
    buckets: Vec<Vec<usize>>,
    state: Mutex<Reports>,
    reduced: AtomicUsize,
}

struct Reports {
    earlier: Vec<Option<Tensor>>,
    /// Per parameter, per shard: reported (`Some`), with a gradient or without.
    grads: Vec<Vec<Option<Option<Tensor>>>>,
    /// Per bucket: reports still to come.
    waiting: Vec<usize>,
    send: Option<Sender<(usize, Vec<f32>)>>,
    /// Why a bucket could not be packed.
    failure: Option<String>,
}

impl GradientSink {
    fn new(
        params: &[(String, Var)],
        buckets: Vec<Vec<usize>>,
        earlier: Option<Gradients>,
        shards: usize,
        send: Sender<(usize, Vec<f32>)>,
    ) -> Self {
        let mut place = vec![0; params.len()];
        for (k, bucket) in buckets.iter().enumerate() {
            bucket.iter().for_each(|&i| place[i] = k);
        }
        GradientSink {
            index: (params.iter().enumerate())
                .map(|(i, (_, var))| (var.as_tensor().id(), i))
                .collect(),
            place,
            sizes: params.iter().map(|(_, var)| var.elem_count()).collect(),
            state: Mutex::new(Reports {
                earlier: earlier.map_or_else(|| vec![None; params.len()], |g| g.grads),
                grads: vec![vec![None; shards]; params.len()],
                waiting: buckets.iter().map(|b| b.len() * shards).collect(),
                send: Some(send),
                failure: None,
            }),
            buckets,
            reduced: AtomicUsize::new(0),
        }
    }

    /// Buckets summed over the ranks so far (of this step's).
    pub fn buckets_reduced(&self) -> usize {
        self.reduced.load(Ordering::Relaxed)
    }

    /// Shard `shard`'s gradient of `var` is final (`None`: its loss does not reach `var`).
    /// Tensors that are not parameters are ignored.
    pub fn report(&self, shard: usize, var: &Tensor, grad: Option<&Tensor>) {
        if let Some(&i) = self.index.get(&var.id()) {
            self.report_param(shard, i, grad.cloned());
        }
    }

    /// Shard `shard`'s backward pass is over and `grads` are all its gradients: those it has not
    /// reported (all of them, for a pass that did not report) are final now.
    pub fn finish(&self, shard: usize, grads: &Gradients) {
        for (i, grad) in grads.grads.iter().enumerate() {
            self.report_param(shard, i, grad.clone());
        }
    }

    fn report_param(&self, shard: usize, i: usize, grad: Option<Tensor>) {
        let k = self.place[i];
        let (terms, send) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let slot = &mut state.grads[i][shard];
            if slot.is_some() {
                return;
            }
            *slot = Some(grad);
            state.waiting[k] -= 1;
            let send = match (state.waiting[k], &state.send) {
                (0, Some(send)) => send.clone(),
                _ => return,
            };
            let state = &mut *state;
            let terms: Vec<_> = (self.buckets[k].iter())
                .map(|&i| {
                    // Taken, still marked reported.
                    let shards = state.grads[i].iter_mut().map(|g| g.as_mut()?.take());
                    (state.earlier[i].take(), shards.collect::<Vec<_>>())
                })
                .collect();
            (terms, send)
        };
        // Packed outside the lock, so other shards keep reporting meanwhile.
        match self.pack(k, terms) {
            Ok(flat) => {
                let _ = send.send((k, flat));
            }
            // The bucket is missing from the reduction, which then ends in this error.
            Err(e) => {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.failure = Some(e.to_string());
                state.send = None;
            }
        }
    }

    /// Bucket `k`'s gradients, each `earlier + Σ shards` in shard order, flat, then one
    /// presence flag per parameter (1 where some term has a gradient).
    fn pack(
        &self,
        k: usize,
        terms: Vec<(Option<Tensor>, Vec<Option<Tensor>>)>,
    ) -> candle_core::Result<Vec<f32>> {
        let bucket = &self.buckets[k];
        let mut flat =
            Vec::with_capacity(bucket.iter().map(|&i| self.sizes[i]).sum::<usize>() + bucket.len());
        let mut present = Vec::with_capacity(bucket.len());
        for (&i, (earlier, shards)) in bucket.iter().zip(terms) {
            let sum = shards.into_iter().try_fold(None, crate::grads::add)?;
            let total = crate::grads::add(earlier, sum)?;
            present.push(total.is_some() as u8 as f32);
            match total {
                Some(g) => flat.extend(g.flatten_all()?.to_vec1::<f32>()?),
                None => flat.resize(flat.len() + self.sizes[i], 0.0),
            }
        }
        flat.extend(present);
        Ok(flat)
    }

    /// No more buckets: the reducer ends once it has reduced those it was sent (every bucket,
    /// after backward passes that all finished; fewer after a failure, which is then an error).
    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).send = None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Result};

    fn var(name: &str, dims: &[usize], seed: u64) -> Result<(String, Var)> {
        let n: usize = dims.iter().product();
        let values = (0..n).map(|i| ((i as u64 * 7919 + seed) % 101) as f32 / 101.0 - 0.5);
        let t = Tensor::from_iter(values, &Device::Cpu)?.reshape(dims)?;
        Ok((name.to_string(), Var::from_tensor(&t)?))
    }

    /// Two ranks' losses over `first` (created first, so backward finishes it last), `second`,
    /// `one_rank` (reached by rank 1 only) and `nowhere`.
    fn loss(params: &[(String, Var)], rank: usize) -> Result<Tensor> {
        let x = Tensor::from_iter(
            (0..2 * 640).map(|i| ((i + rank) % 13) as f32 / 13.0),
            &Device::Cpu,
        )?
        .reshape((2, 640))?;
        let hidden = x.matmul(params[0].1.as_tensor())?.tanh()?;
        let mut out = hidden.matmul(params[3].1.as_tensor())?.sum_all()?;
        if rank == 1 {
            out = (out + params[1].1.as_tensor().sqr()?.sum_all()?)?;
        }
        Ok(out)
    }

    #[test]
    fn buckets_are_reduced_during_backward_and_equal_the_sum_after_it() -> anyhow::Result<()> {
        // `first` and `second` are larger than a bucket: each is one of its own.
        let params = vec![
            var("first", &[640, 480], 1)?,
            var("one_rank", &[3], 2)?,
            var("nowhere", &[5], 3)?,
            var("second", &[480, 600], 4)?,
        ];
        assert!(params[3].1.elem_count() > BUCKET_VALUES);
        let each: Vec<Gradients> = (0..2)
            .map(|rank| {
                Ok(Gradients::from_store(
                    &params,
                    &loss(&params, rank)?.backward()?,
                ))
            })
            .collect::<Result<_>>()?;
        let results: Vec<crate::Result<(usize, Gradients, f64)>> = std::thread::scope(|scope| {
            let ranks: Vec<_> = (InProcess::group(2).into_iter().enumerate())
                .map(|(rank, world)| {
                    let params = &params;
                    scope.spawn(move || {
                        all_reduce_during(&world, params, None, 1, |sink| {
                            let mut reduced_before_first = 0;
                            let loss = loss(params, rank)?;
                            let store = loss.backward_with(&mut |var, grad| {
                                if var.id() == params[0].1.as_tensor().id() {
                                    // `second`'s bucket was complete long before: wait for it.
                                    let start = Instant::now();
                                    while sink.buckets_reduced() == 0
                                        && start.elapsed().as_secs() < 20
                                    {
                                        std::thread::yield_now();
                                    }
                                    reduced_before_first = sink.buckets_reduced();
                                }
                                sink.report(0, var, grad);
                                Ok(())
                            })?;
                            sink.finish(0, &Gradients::from_store(params, &store));
                            Ok(reduced_before_first)
                        })
                    })
                })
                .collect();
            ranks.into_iter().map(|r| r.join().expect("rank")).collect()
        });
        // Rank order, as the collective sums; `None` only where no rank has a gradient.
        let expected: Vec<Option<Vec<f32>>> = (0..params.len())
            .map(|i| {
                let sum = match (&each[0].grads[i], &each[1].grads[i]) {
                    (Some(a), Some(b)) => Some((a + b)?),
                    (a, b) => a.clone().or(b.clone()),
                };
                sum.map(|g| g.flatten_all()?.to_vec1::<f32>()).transpose()
            })
            .collect::<Result<_>>()?;
        assert!(expected[1].is_some() && expected[2].is_none());
        let check = |total: &Gradients| -> Result<()> {
            for (i, want) in expected.iter().enumerate() {
                let got = (total.grads[i].as_ref())
                    .map(|g| g.flatten_all()?.to_vec1::<f32>())
                    .transpose()?;
                assert_eq!(&got, want, "{}", params[i].0);
            }
            Ok(())
        };
        for result in results {
            let (reduced_before_first, total, _) = result?;
            assert!(
                reduced_before_first >= 1,
                "no bucket was reduced during backward"
            );
            check(&total)?;
        }
        // The same sums when the gradients are reduced after the fact.
        let after: Vec<crate::Result<Gradients>> = std::thread::scope(|scope| {
            let ranks: Vec<_> = (InProcess::group(2).into_iter().enumerate())
                .map(|(rank, world)| {
                    let (params, each) = (&params, &each);
                    scope.spawn(move || {
                        let grads = Gradients {
                            grads: each[rank].grads.clone(),
                        };
                        all_reduce_gradients(&world, grads, params)
                    })
                })
                .collect();
            ranks.into_iter().map(|r| r.join().expect("rank")).collect()
        });
        for total in after {
            check(&total?)?;
        }
        Ok(())
    }
}
