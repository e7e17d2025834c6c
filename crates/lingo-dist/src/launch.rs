//! How this process was started: alone, or as one rank of a world that `mpirun` (or `mpiexec`,
//! or a scheduler through PMI) launched. The launcher says so in the environment, so the same
//! `lingo train …` command runs alone or as rank `r` of `N` without a flag.

use crate::{Collective, CollectiveError, Result, SingleProcess};
use std::sync::Arc;
use std::time::Duration;

/// This process's place in a launched world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// Ranks on this machine (they share its cores).
    pub local_ranks: usize,
}

/// Environment variables naming (rank, world size, ranks on this machine), by launcher.
const LAUNCHERS: [(&str, &str, &str); 2] = [
    // Open MPI's mpirun.
    (
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    ),
    // MPICH's and Intel MPI's Hydra, and schedulers that speak PMI.
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"),
];

/// How long a collective waits for the other ranks when `LINGO_COLLECTIVE_TIMEOUT` (seconds)
/// does not say: long enough for rank 0 to evaluate and write a checkpoint while the others wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

impl Launch {
    /// The launcher's world, if a launcher started this process.
    pub fn detect() -> Option<Launch> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Launch> {
        let number = |name: &str| var(name)?.trim().parse::<usize>().ok();
        LAUNCHERS.iter().find_map(|&(rank, size, local)| {
            let (rank, world_size) = (number(rank)?, number(size)?);
            (rank < world_size).then(|| Launch {
                rank,
                world_size,
                local_ranks: number(local).unwrap_or(1).clamp(1, world_size),
            })
        })
    }

    /// The timeout of every collective: `LINGO_COLLECTIVE_TIMEOUT` seconds, else [`DEFAULT_TIMEOUT`].
    pub fn timeout() -> Result<Duration> {
        match std::env::var("LINGO_COLLECTIVE_TIMEOUT") {
            Err(_) => Ok(DEFAULT_TIMEOUT),
            Ok(text) => match text.trim().parse::<f64>() {
                Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
                _ => Err(CollectiveError::Invalid(format!(
                    "LINGO_COLLECTIVE_TIMEOUT must be a positive number of seconds, got `{text}`"
                ))),
            },
        }
    }
}

/// The collective this process should train with: MPI's world when a launcher started it with
/// more than one rank, else a world of one. A launched world needs a build with the `mpi` feature;
/// without it the error says how to get one rather than training N unconnected copies.
pub fn from_environment() -> Result<Arc<dyn Collective>> {
    match Launch::detect() {
        Some(launch) if launch.world_size > 1 => connect(launch),
        _ => Ok(Arc::new(SingleProcess)),
    }
}

/// MPI, or NCCL over it when `LINGO_COLLECTIVE=nccl` (a build with the `nccl` feature).
#[cfg(feature = "mpi")]
fn connect(_: Launch) -> Result<Arc<dyn Collective>> {
    let mpi = crate::Mpi::init(Launch::timeout()?)?;
    match std::env::var("LINGO_COLLECTIVE").as_deref() {
        Err(_) | Ok("mpi") => Ok(Arc::new(mpi)),
        #[cfg(feature = "nccl")]
        Ok("nccl") => Ok(Arc::new(crate::Nccl::init(mpi, None)?)),
        Ok(other) => Err(CollectiveError::Invalid(format!(
            "LINGO_COLLECTIVE={other}: this build offers {}",
            if cfg!(feature = "nccl") {
                "mpi or nccl"
            } else {
                "mpi (nccl needs the nccl feature)"
            }
        ))),
    }
}

#[cfg(not(feature = "mpi"))]
fn connect(launch: Launch) -> Result<Arc<dyn Collective>> {
    Err(CollectiveError::Invalid(format!(
        "started as rank {} of {} by an MPI launcher, but this build has no MPI support: rebuild with `cargo build --release --features mpi` (needs libopenmpi-dev or MPICH, and libclang)",
        launch.rank, launch.world_size
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Option<Launch> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn reads_the_launchers_environment() {
        assert_eq!(launch(&[]), None);
        let open_mpi = [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ];
        assert_eq!(
            launch(&open_mpi),
            Some(Launch {
                rank: 1,
                world_size: 4,
                local_ranks: 2
            })
        );
        let hydra = [("PMI_RANK", "0"), ("PMI_SIZE", "3")];
        assert_eq!(
            launch(&hydra),
            Some(Launch {
                rank: 0,
                world_size: 3,
                local_ranks: 1
            })
        );
        // A rank outside its world, or garbage, is no launch.
        assert_eq!(launch(&[("PMI_RANK", "3"), ("PMI_SIZE", "3")]), None);
        assert_eq!(launch(&[("PMI_RANK", "x"), ("PMI_SIZE", "3")]), None);
    }
}
