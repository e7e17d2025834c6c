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
#[cfg(feature = "mpi")]
mod mpi;

pub use in_process::InProcess;
#[cfg(feature = "mpi")]
pub use mpi::Mpi;
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

    /// The element-wise mean of every rank's `buf` (the sum in rank order, then divided).
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(buf)?;
        let n = self.world_size() as f32;
        buf.iter_mut().for_each(|x| *x /= n);
        Ok(())
    }

    /// Whether this rank logs, evaluates and writes checkpoints.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
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
