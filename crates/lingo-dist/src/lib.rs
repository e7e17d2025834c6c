//! Collective communication for data- and model-parallel training: the operations every backend
//! offers ([`Collective`]) and the backends that run without a cluster.
//!
//! - [`SingleProcess`]: a world of one; every collective is the identity.
//! - [`InProcess`]: a world of threads in one process, for tests and for checking that a
//!   distributed run equals a single one without launching anything.
//! - `Mpi` (cargo feature `mpi`): a world of processes launched by `mpirun`, on one machine or
//!   many.
//!
//! Reductions are deterministic: a sum adds the ranks' buffers in rank order, whatever order they
//! arrive in, so every rank gets bit-identical results and a run is reproducible. Every wait has a
//! timeout, and a rank that leaves the group (or calls a different collective) makes the others
//! fail with an error that says so instead of waiting forever.

mod in_process;
pub mod launch;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;

pub use in_process::InProcess;
pub use launch::{from_environment, Launch};
#[cfg(feature = "mpi")]
pub use mpi::Mpi;
#[cfg(feature = "nccl")]
pub use nccl::Nccl;
use std::time::Duration;

/// What can go wrong in a collective.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CollectiveError {
    #[error("{op} timed out after {waited:?}: rank(s) {missing:?} never joined (a rank died or is stuck)")]
    Timeout {
        op: &'static str,
        waited: Duration,
        missing: Vec<usize>,
    },
    #[error("rank {rank} left the group during or before {op}")]
    PeerGone { op: &'static str, rank: usize },
    #[error("ranks disagree: rank {rank} called {got} while the others called {expected} (different code paths or configs)")]
    Mismatch {
        rank: usize,
        expected: String,
        got: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, CollectiveError>;

/// The collective operations training needs, over `f32` buffers.
pub trait Collective: Send + Sync {
    /// This process's (or thread's) index, `0..world_size()`.
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Every rank's `buf` summed element-wise, in rank order, written back into `buf` on every
    /// rank.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// `root`'s `buf` copied into every rank's `buf`.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Every rank's `send` (all the same length), concatenated in rank order into `recv`, which
    /// holds `world_size() · send.len()` values.
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Sends `buf` to rank `to` alone (point to point: a pipeline stage's activations).
    fn send(&self, buf: &[f32], to: usize) -> Result<()>;
    /// Receives into `buf` what rank `from` sent; `buf` must be as long as what it sent.
    fn recv(&self, buf: &mut [f32], from: usize) -> Result<()>;

    /// The element-wise mean of every rank's `buf` (the sum in rank order, then divided).
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(buf)?;
        let n = self.world_size() as f32;
        buf.iter_mut().for_each(|x| *x /= n);
        Ok(())
    }

    /// The transport's own all-reduce (MPI's `MPI_Allreduce`), whose order of addition is
    /// unspecified: not for training, but what a benchmark holds the exact sum against. Backends
    /// without one of their own sum as [`Collective::all_reduce_sum`] does.
    fn native_all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(buf)
    }

    /// Whether this rank logs, evaluates and writes checkpoints.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// `root`'s bytes copied into every rank's `bytes` (whatever length the others held). The
    /// bytes travel as the bit patterns of `f32`s, which every backend copies without arithmetic.
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let len = bytes.len() as u64;
        let mut header = [
            f32::from_bits(len as u32),
            f32::from_bits((len >> 32) as u32),
        ];
        self.broadcast(&mut header, root)?;
        let len = header[0].to_bits() as u64 | (header[1].to_bits() as u64) << 32;
        let len = usize::try_from(len)
            .map_err(|_| CollectiveError::Invalid(format!("broadcast of {len} bytes")))?;
        bytes.resize(len, 0);
        let mut words: Vec<f32> = bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                f32::from_bits(u32::from_le_bytes(w))
            })
            .collect();
        self.broadcast(&mut words, root)?;
        for (chunk, word) in bytes.chunks_mut(4).zip(&words) {
            chunk.copy_from_slice(&word.to_bits().to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }

    /// Checks that every rank holds the same `bytes` (a config, say), comparing 64-bit hashes:
    /// an error naming the ranks that differ from rank 0, on every rank.
    fn agree(&self, what: &str, bytes: &[u8]) -> Result<()> {
        let hash = fnv1a(bytes);
        let mine = [
            f32::from_bits(hash as u32),
            f32::from_bits((hash >> 32) as u32),
        ];
        let mut all = vec![0f32; 2 * self.world_size()];
        self.all_gather(&mine, &mut all)?;
        let bits: Vec<u64> = all
            .chunks_exact(2)
            .map(|w| w[0].to_bits() as u64 | (w[1].to_bits() as u64) << 32)
            .collect();
        let differ: Vec<usize> = (0..bits.len()).filter(|&r| bits[r] != bits[0]).collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(CollectiveError::Invalid(format!(
            "the ranks were started with different {what}: rank(s) {differ:?} differ from rank 0 (hashes {:016x} vs {:016x}); start every rank with the same command and files",
            bits[differ[0]], bits[0]
        )))
    }
}

/// 64-bit FNV-1a: enough to tell two configs apart, and the same on every machine.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A world of one process: every collective leaves its buffers as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _: &mut [f32], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_gather(send.len(), recv.len(), 1)?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn send(&self, _: &[f32], to: usize) -> Result<()> {
        check_peer(0, to, 1)
    }
    fn recv(&self, _: &mut [f32], from: usize) -> Result<()> {
        check_peer(0, from, 1)
    }
}

fn check_peer(rank: usize, peer: usize, world: usize) -> Result<()> {
    if peer >= world || peer == rank {
        return Err(CollectiveError::Invalid(format!(
            "rank {rank} cannot exchange with rank {peer} in a world of {world}"
        )));
    }
    Ok(())
}

fn check_root(root: usize, world: usize) -> Result<()> {
    if root >= world {
        return Err(CollectiveError::Invalid(format!(
            "broadcast root {root} is not a rank of a world of {world}"
        )));
    }
    Ok(())
}

fn check_gather(send: usize, recv: usize, world: usize) -> Result<()> {
    if recv != send * world {
        return Err(CollectiveError::Invalid(format!(
            "all_gather of {send} values over {world} ranks needs {} values to receive into, got {recv}",
            send * world
        )));
    }
    Ok(())
}
