//! A world of threads in one process. Each collective is a rendezvous: every rank deposits its
//! buffer, the last to arrive combines them (in rank order), and each rank takes the result; the
//! next collective starts once all have taken it.

use crate::{check_gather, check_peer, check_root, Collective, CollectiveError, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a rank waits for the others before giving up, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Sum,
    Broadcast(usize),
    Barrier,
    Gather,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Sum => "all_reduce",
            Op::Broadcast(_) => "broadcast",
            Op::Barrier => "barrier",
            Op::Gather => "all_gather",
        }
    }

    fn describe(self, len: usize) -> String {
        match self {
            Op::Broadcast(root) => format!("broadcast from rank {root} of {len} values"),
            Op::Barrier => "barrier".into(),
            other => format!("{} of {len} values", other.name()),
        }
    }

    /// The ranks' deposits combined, in rank order.
    fn combine(self, parts: &[Option<Vec<f32>>]) -> Vec<f32> {
        let mut parts = parts.iter().map(|p| p.as_deref().unwrap_or_default());
        match self {
            Op::Sum => {
                let mut sum = parts.next().unwrap_or_default().to_vec();
                for part in parts {
                    sum.iter_mut().zip(part).for_each(|(s, x)| *s += x);
                }
                sum
            }
            Op::Broadcast(root) => parts.nth(root).unwrap_or_default().to_vec(),
            Op::Barrier => Vec::new(),
            Op::Gather => parts.flatten().copied().collect(),
        }
    }
}

/// The collective in progress.
struct Round {
    /// The operation and buffer length the first rank to arrive asked for.
    op: Option<(Op, usize)>,
    parts: Vec<Option<Vec<f32>>>,
    arrived: usize,
    result: Option<Arc<Vec<f32>>>,
    taken: usize,
}

impl Round {
    fn new(world: usize) -> Self {
        Round {
            op: None,
            parts: vec![None; world],
            arrived: 0,
            result: None,
            taken: 0,
        }
    }
}

struct State {
    round: Round,
    /// A rank that has left the group: no later collective can complete.
    gone: Option<usize>,
    /// A failure every rank reports from then on (a mismatch, a timeout).
    failure: Option<CollectiveError>,
    /// Point-to-point messages sent and not yet received, by (from, to), in order.
    mail: HashMap<(usize, usize), VecDeque<Vec<f32>>>,
}

struct Shared {
    world: usize,
    timeout: Duration,
    state: Mutex<State>,
    changed: Condvar,
}

/// One rank of a group of threads; [`InProcess::group`] makes all of them.
pub struct InProcess {
    rank: usize,
    shared: Arc<Shared>,
}

impl InProcess {
    /// `world` ranks that talk to each other, to be moved to one thread each.
    pub fn group(world: usize) -> Vec<InProcess> {
        Self::group_with_timeout(world, DEFAULT_TIMEOUT)
    }

    /// [`InProcess::group`] whose ranks give up waiting for each other after `timeout`.
    pub fn group_with_timeout(world: usize, timeout: Duration) -> Vec<InProcess> {
        let shared = Arc::new(Shared {
            world,
            timeout,
            state: Mutex::new(State {
                round: Round::new(world),
                gone: None,
                failure: None,
                mail: HashMap::new(),
            }),
            changed: Condvar::new(),
        });
        (0..world)
            .map(|rank| InProcess {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock left the state consistent (every update is
        // a few assignments), so the others carry on and report its absence.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits on the condition variable until `done` or the deadline; errors when the group has
    /// failed or lost a rank first.
    fn wait_until<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        op: Op,
        deadline: Instant,
        done: impl Fn(&State) -> bool,
    ) -> Result<MutexGuard<'a, State>> {
        loop {
            if done(&state) {
                return Ok(state);
            }
            if let Some(failure) = &state.failure {
                return Err(failure.clone());
            }
            if let Some(rank) = state.gone {
                return Err(CollectiveError::PeerGone {
                    op: op.name(),
                    rank,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                let missing = (0..self.shared.world)
                    .filter(|&r| state.round.parts[r].is_none())
                    .collect();
                let error = CollectiveError::Timeout {
                    op: op.name(),
                    waited: self.shared.timeout,
                    missing,
                };
                state.failure = Some(error.clone());
                self.shared.changed.notify_all();
                return Err(error);
            }
            state = (self.shared.changed)
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Deposits `data` for `op` over buffers of `len` values and returns the combined result.
    fn rendezvous(&self, op: Op, len: usize, data: Vec<f32>) -> Result<Arc<Vec<f32>>> {
        let deadline = Instant::now() + self.shared.timeout;
        let state = self.lock();
        // The previous collective is over once every rank has taken its result.
        let mut state = self.wait_until(state, op, deadline, |s| s.round.result.is_none())?;
        match state.round.op {
            None => state.round.op = Some((op, len)),
            Some((expected, expected_len)) if (expected, expected_len) != (op, len) => {
                let error = CollectiveError::Mismatch {
                    rank: self.rank,
                    expected: expected.describe(expected_len),
                    got: op.describe(len),
                };
                state.failure = Some(error.clone());
                self.shared.changed.notify_all();
                return Err(error);
            }
            Some(_) => {}
        }
        state.round.parts[self.rank] = Some(data);
        state.round.arrived += 1;
        if state.round.arrived == self.shared.world {
            let result = op.combine(&state.round.parts);
            state.round.result = Some(Arc::new(result));
            self.shared.changed.notify_all();
        }
        let mut state = self.wait_until(state, op, deadline, |s| s.round.result.is_some())?;
        let result = state.round.result.clone().expect("waited for it");
        state.round.taken += 1;
        if state.round.taken == self.shared.world {
            state.round = Round::new(self.shared.world);
            self.shared.changed.notify_all();
        }
        Ok(result)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let mut state = self.lock();
        state.gone.get_or_insert(self.rank);
        self.shared.changed.notify_all();
    }
}

impl Collective for InProcess {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let sum = self.rendezvous(Op::Sum, buf.len(), buf.to_vec())?;
        buf.copy_from_slice(&sum);
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, self.shared.world)?;
        let mine = if self.rank == root {
            buf.to_vec()
        } else {
            Vec::new()
        };
        let value = self.rendezvous(Op::Broadcast(root), buf.len(), mine)?;
        buf.copy_from_slice(&value);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.rendezvous(Op::Barrier, 0, Vec::new()).map(drop)
    }

    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_gather(send.len(), recv.len(), self.shared.world)?;
        let all = self.rendezvous(Op::Gather, send.len(), send.to_vec())?;
        recv.copy_from_slice(&all);
        Ok(())
    }

    /// Leaves the message in the receiver's mailbox and returns at once.
    fn send(&self, buf: &[f32], to: usize) -> Result<()> {
        check_peer(self.rank, to, self.shared.world)?;
        let mut state = self.lock();
        if let Some(failure) = &state.failure {
            return Err(failure.clone());
        }
        let mailbox = state.mail.entry((self.rank, to)).or_default();
        mailbox.push_back(buf.to_vec());
        self.shared.changed.notify_all();
        Ok(())
    }

    fn recv(&self, buf: &mut [f32], from: usize) -> Result<()> {
        check_peer(self.rank, from, self.shared.world)?;
        let deadline = Instant::now() + self.shared.timeout;
        let key = (from, self.rank);
        let mut state = self.lock();
        loop {
            if let Some(message) = state.mail.get_mut(&key).and_then(VecDeque::pop_front) {
                if message.len() != buf.len() {
                    return Err(CollectiveError::Mismatch {
                        rank: from,
                        expected: format!("a message of {} values", buf.len()),
                        got: format!("one of {}", message.len()),
                    });
                }
                buf.copy_from_slice(&message);
                return Ok(());
            }
            if let Some(failure) = &state.failure {
                return Err(failure.clone());
            }
            if state.gone == Some(from) {
                return Err(CollectiveError::PeerGone {
                    op: "recv",
                    rank: from,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CollectiveError::Timeout {
                    op: "recv",
                    waited: self.shared.timeout,
                    missing: vec![from],
                });
            }
            state = (self.shared.changed)
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}
