//! The MPI backend (cargo feature `mpi`): Open MPI or MPICH through rsmpi, for CPU clusters. Ranks
//! come from MPI's environment, so `mpirun -np N lingo …` (or a hostfile across machines) launches
//! a world.
//!
//! The sum is exact and deterministic, as in the other backends: MPI's own `Allreduce` may add
//! the ranks' values in any order (it depends on the algorithm the library picks for the size), so
//! instead each rank owns a slice of the buffer, receives every rank's copy of that slice
//! (`Alltoall`), adds them in rank order, and the summed slices are gathered back (`Allgather`) —
//! the same traffic as a ring all-reduce, 2·(N−1)/N of the buffer per rank.
//!
//! MPI collectives block without a timeout. A watchdog thread ends this process, naming the
//! collective, when one has waited longer than the timeout; `mpirun` then stops the other ranks.

use crate::{check_gather, check_peer, check_root, Collective, CollectiveError, Result};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One rank of an MPI world.
pub struct Mpi {
    rank: usize,
    world_size: usize,
    inner: Mutex<Inner>,
    watchdog: Arc<Watchdog>,
}

/// The communicator, buffers the all-reduce reuses (allocating and zeroing tens of MB per call
/// cost more than the transfer), then the universe, which finalizes MPI when dropped.
struct Inner {
    world: SimpleCommunicator,
    scratch: Vec<f32>,
    _universe: Universe,
}

// SAFETY: MPI was initialised with at least `Threading::Serialized`, so any thread may call it as
// long as calls do not overlap, which the mutex around `Inner` guarantees.
unsafe impl Send for Inner {}

/// What the watchdog watches: when the current collective started (ms since `epoch`, 0 = none)
/// and which it is.
struct Watchdog {
    epoch: Instant,
    since_ms: AtomicU64,
    op: Mutex<&'static str>,
}

impl Mpi {
    /// Initialises MPI (once per process) and joins its world. Fails when MPI was already
    /// initialised or offers no thread support beyond the main thread.
    pub fn init(timeout: Duration) -> Result<Mpi> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| CollectiveError::Invalid("MPI is already initialised".into()))?;
        if threading < Threading::Serialized {
            return Err(CollectiveError::Invalid(format!(
                "this MPI library offers thread support {threading:?}; Lingo needs Serialized"
            )));
        }
        let world = universe.world();
        let (rank, world_size) = (world.rank() as usize, world.size() as usize);
        let watchdog = Arc::new(Watchdog {
            epoch: Instant::now(),
            since_ms: AtomicU64::new(0),
            op: Mutex::new(""),
        });
        let watched = Arc::downgrade(&watchdog);
        std::thread::Builder::new()
            .name("lingo-mpi-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200).min(timeout));
                let Some(w) = watched.upgrade() else { return };
                let since = w.since_ms.load(Ordering::Acquire);
                let now = w.epoch.elapsed().as_millis() as u64;
                if since != 0 && now.saturating_sub(since) > timeout.as_millis() as u64 {
                    let op = *w.op.lock().unwrap_or_else(|p| p.into_inner());
                    eprintln!(
                        "lingo: rank {rank}: {op} waited more than {timeout:?} for the other ranks (one died or is stuck); ending this process"
                    );
                    std::process::exit(3);
                }
            })
            .map_err(|e| CollectiveError::Invalid(format!("cannot start the MPI watchdog: {e}")))?;
        Ok(Mpi {
            rank,
            world_size,
            inner: Mutex::new(Inner {
                world,
                scratch: Vec::new(),
                _universe: universe,
            }),
            watchdog,
        })
    }

    /// Runs `f` on the communicator (and the scratch buffers) with the watchdog armed.
    fn collective<T>(&self, op: &'static str, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.watched(op, || f(&mut inner))
    }

    /// Runs `f` (a collective of this or another transport) with the watchdog armed: if it has
    /// not returned after the timeout, the process ends.
    pub(crate) fn watched<T>(&self, op: &'static str, f: impl FnOnce() -> T) -> T {
        *self.watchdog.op.lock().unwrap_or_else(|p| p.into_inner()) = op;
        let now = self.watchdog.epoch.elapsed().as_millis() as u64;
        self.watchdog.since_ms.store(now.max(1), Ordering::Release);
        let out = f();
        self.watchdog.since_ms.store(0, Ordering::Release);
        out
    }
}

impl Collective for Mpi {
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
        // Slice r of the buffer (padded to n equal slices) is summed by rank r.
        let slice = buf.len().div_ceil(n);
        let padded = slice * n;
        let aligned = padded == buf.len();
        self.collective("all_reduce", |inner| {
            let Inner { world, scratch, .. } = inner;
            // The pieces received, then (unless the buffer divides evenly) a padded copy of it.
            let need = if aligned { padded } else { 2 * padded };
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let (pieces, rest) = scratch.split_at_mut(padded);
            if aligned {
                world.all_to_all_into(&buf[..], pieces);
            } else {
                let send = &mut rest[..padded];
                send[..buf.len()].copy_from_slice(buf);
                send[buf.len()..].fill(0.0);
                world.all_to_all_into(&send[..], pieces);
            }
            // Rank 0's copy of my slice, plus rank 1's, plus …: the order every backend sums in.
            let (mine, others) = pieces.split_at_mut(slice);
            for piece in others.chunks_exact(slice) {
                mine.iter_mut().zip(piece).for_each(|(s, x)| *s += x);
            }
            if aligned {
                world.all_gather_into(&mine[..], buf);
            } else {
                let all = &mut rest[..padded];
                world.all_gather_into(&mine[..], &mut all[..]);
                buf.copy_from_slice(&all[..buf.len()]);
            }
        });
        Ok(())
    }

    fn native_all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        if self.world_size == 1 || buf.is_empty() {
            return Ok(());
        }
        let send = buf.to_vec();
        self.collective("MPI_Allreduce", |inner| {
            let op = mpi::collective::SystemOperation::sum();
            inner.world.all_reduce_into(&send[..], buf, op)
        });
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, self.world_size)?;
        self.collective("broadcast", |inner| {
            inner
                .world
                .process_at_rank(root as i32)
                .broadcast_into(&mut buf[..])
        });
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.collective("barrier", |inner| inner.world.barrier());
        Ok(())
    }

    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_gather(send.len(), recv.len(), self.world_size)?;
        self.collective("all_gather", |inner| {
            inner.world.all_gather_into(send, recv)
        });
        Ok(())
    }

    fn send(&self, buf: &[f32], to: usize) -> Result<()> {
        check_peer(self.rank, to, self.world_size)?;
        self.collective("send", |inner| {
            inner.world.process_at_rank(to as i32).send(buf)
        });
        Ok(())
    }

    fn recv(&self, buf: &mut [f32], from: usize) -> Result<()> {
        check_peer(self.rank, from, self.world_size)?;
        let got = self.collective("recv", |inner| {
            let status = inner.world.process_at_rank(from as i32).receive_into(buf);
            status.count(f32::equivalent_datatype()) as usize
        });
        if got != buf.len() {
            return Err(CollectiveError::Mismatch {
                rank: from,
                expected: format!("a message of {} values", buf.len()),
                got: format!("one of {got}"),
            });
        }
        Ok(())
    }
}
