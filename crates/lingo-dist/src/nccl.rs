//! The NCCL backend (cargo feature `nccl`): GPUs, one rank per GPU, through cudarc's NCCL bindings
//! (loaded at run time, so it builds on machines without CUDA). `mpirun` launches the ranks and
//! MPI carries NCCL's unique id from rank 0 to the others; the data then moves GPU to GPU.
//!
//! The trait works on host buffers (the trainer's gradients are CPU tensors), so each collective
//! copies the buffer to the GPU, runs there and copies the result back. The sum is exact and in rank
//! order as in the other backends — NCCL's own all-reduce adds in ring order, which depends on
//! the topology: each rank sends every other rank its slice of the buffer (grouped `ncclSend` /
//! `ncclRecv`, an all-to-all), adds the copies of its own slice in rank order, and the slices are
//! gathered back (`ncclAllGather`). A collective that waits past the timeout ends the process,
//! as with MPI.

use crate::{
    check_gather, check_peer, check_root, Collective, CollectiveError, Launch, Mpi, Result,
};
use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};
use std::sync::{Arc, Mutex};

/// One rank of a world of GPUs.
pub struct Nccl {
    rank: usize,
    world_size: usize,
    comm: Mutex<Device>,
    /// Bootstraps the world, supplies the barrier and the watchdog.
    mpi: Mpi,
}

/// The communicator and the stream its collectives run on.
struct Device {
    comm: Comm,
    stream: Arc<CudaStream>,
}

// SAFETY: NCCL communicators may be used from any thread as long as calls on one do not overlap,
// which the mutex around `Device` guarantees.
unsafe impl Send for Device {}

fn failed(what: &str, e: impl std::fmt::Debug) -> CollectiveError {
    CollectiveError::Invalid(format!("NCCL: {what} failed: {e:?}"))
}

impl Nccl {
    /// Joins the world `mpi` belongs to on this machine's GPU number `local rank` (or `device`).
    pub fn init(mpi: Mpi, device: Option<usize>) -> Result<Nccl> {
        let (rank, world_size) = (mpi.rank(), mpi.world_size());
        let ordinal = device.unwrap_or_else(local_rank);
        // cudarc loads the libraries on first use, and panics when one is missing.
        // SAFETY: the checks only try to load the libraries.
        let present = unsafe {
            (
                cudarc::driver::sys::is_culib_present(),
                cudarc::nccl::sys::is_culib_present(),
            )
        };
        if present != (true, true) {
            return Err(CollectiveError::Invalid(format!(
                "NCCL: this machine has no {} (libcuda.so / libnccl.so could not be loaded)",
                if present.0 { "NCCL" } else { "CUDA driver" }
            )));
        }
        let ctx =
            CudaContext::new(ordinal).map_err(|e| failed(&format!("opening GPU {ordinal}"), e))?;
        let stream = ctx.default_stream();
        // Rank 0 makes the id; MPI carries its bytes to the others.
        let mut bytes: Vec<u8> = match rank {
            0 => {
                let id = Id::new().map_err(|e| failed("ncclGetUniqueId", e))?;
                id.internal().iter().map(|&c| c as u8).collect()
            }
            _ => Vec::new(),
        };
        mpi.broadcast_bytes(&mut bytes, 0)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        if bytes.len() != internal.len() {
            return Err(CollectiveError::Invalid(format!(
                "NCCL: rank 0 sent a unique id of {} bytes",
                bytes.len()
            )));
        }
        for (c, b) in internal.iter_mut().zip(&bytes) {
            *c = *b as std::ffi::c_char;
        }
        let comm = Comm::from_rank(stream.clone(), rank, world_size, Id::uninit(internal))
            .map_err(|e| failed("ncclCommInitRank", e))?;
        Ok(Nccl {
            rank,
            world_size,
            comm: Mutex::new(Device { comm, stream }),
            mpi,
        })
    }

    /// Runs `f` on the communicator with MPI's watchdog armed.
    fn on_device<T>(&self, op: &'static str, f: impl FnOnce(&Device) -> Result<T>) -> Result<T> {
        let device = self.comm.lock().unwrap_or_else(|p| p.into_inner());
        self.mpi.watched(op, || f(&device))
    }
}

/// This process's index among the ranks on its machine, from the launcher.
fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or_else(|| Launch::detect().map_or(0, |l| l.rank % l.local_ranks))
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let n = self.world_size;
        if n == 1 || buf.is_empty() {
            return Ok(());
        }
        let slice = buf.len().div_ceil(n);
        let mut padded = buf.to_vec();
        padded.resize(slice * n, 0.0);
        let summed = self.on_device("all_reduce", |d| {
            let copy = |e| failed("a copy between host and GPU", e);
            let send = d.stream.clone_htod(&padded).map_err(copy)?;
            let mut pieces = (0..n)
                .map(|_| d.stream.alloc_zeros::<f32>(slice))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(copy)?;
            {
                // All-to-all: slice r of every rank's buffer goes to rank r.
                let mut group = d.comm.group();
                for peer in 0..n {
                    let range = peer * slice..(peer + 1) * slice;
                    group
                        .send(send.slice(range), peer as i32)
                        .map_err(|e| failed("ncclSend", e))?;
                }
                for (peer, piece) in pieces.iter_mut().enumerate() {
                    group
                        .recv(piece.slice_mut(..), peer as i32)
                        .map_err(|e| failed("ncclRecv", e))?;
                }
            }
            // Rank 0's copy of my slice, plus rank 1's, plus …
            let mut mine = vec![0f32; slice];
            for piece in &pieces {
                let piece = d.stream.clone_dtoh(piece).map_err(copy)?;
                mine.iter_mut().zip(&piece).for_each(|(s, x)| *s += x);
            }
            let mine = d.stream.clone_htod(&mine).map_err(copy)?;
            let mut all = d.stream.alloc_zeros::<f32>(slice * n).map_err(copy)?;
            d.comm
                .all_gather(&mine, &mut all)
                .map_err(|e| failed("ncclAllGather", e))?;
            d.stream.clone_dtoh(&all).map_err(copy)
        })?;
        buf.copy_from_slice(&summed[..buf.len()]);
        Ok(())
    }

    fn native_all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let out = self.on_device("ncclAllReduce", |d| {
            let copy = |e| failed("a copy between host and GPU", e);
            let mut data = d.stream.clone_htod(buf).map_err(copy)?;
            d.comm
                .all_reduce_in_place(&mut data, &ReduceOp::Sum)
                .map_err(|e| failed("ncclAllReduce", e))?;
            d.stream.clone_dtoh(&data).map_err(copy)
        })?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, self.world_size)?;
        let out = self.on_device("broadcast", |d| {
            let copy = |e| failed("a copy between host and GPU", e);
            let mut data = d.stream.clone_htod(buf).map_err(copy)?;
            d.comm
                .broadcast_in_place(&mut data, root as i32)
                .map_err(|e| failed("ncclBroadcast", e))?;
            d.stream.clone_dtoh(&data).map_err(copy)
        })?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }

    fn send(&self, buf: &[f32], to: usize) -> Result<()> {
        check_peer(self.rank, to, self.world_size)?;
        self.on_device("send", |d| {
            let data = (d.stream.clone_htod(buf)).map_err(|e| failed("a copy to the GPU", e))?;
            d.comm
                .send(&data, to as i32)
                .map_err(|e| failed("ncclSend", e))?;
            d.stream.synchronize().map_err(|e| failed("ncclSend", e))
        })
    }

    fn recv(&self, buf: &mut [f32], from: usize) -> Result<()> {
        check_peer(self.rank, from, self.world_size)?;
        let out = self.on_device("recv", |d| {
            let copy = |e| failed("a copy between host and GPU", e);
            let mut data = d.stream.alloc_zeros::<f32>(buf.len()).map_err(copy)?;
            d.comm
                .recv(&mut data, from as i32)
                .map_err(|e| failed("ncclRecv", e))?;
            d.stream.clone_dtoh(&data).map_err(copy)
        })?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_gather(send.len(), recv.len(), self.world_size)?;
        let out = self.on_device("all_gather", |d| {
            let copy = |e| failed("a copy between host and GPU", e);
            let mine = d.stream.clone_htod(send).map_err(copy)?;
            let mut all = d.stream.alloc_zeros::<f32>(recv.len()).map_err(copy)?;
            d.comm
                .all_gather(&mine, &mut all)
                .map_err(|e| failed("ncclAllGather", e))?;
            d.stream.clone_dtoh(&all).map_err(copy)
        })?;
        recv.copy_from_slice(&out);
        Ok(())
    }
}
