//! The MPI backend under a real `mpirun` on loopback (cargo feature `mpi`): the collectives equal
//! their definitions on 2 and 3 ranks, and a stuck rank ends the job with a message instead of
//! hanging it. Skips, saying so, when `mpirun` is not installed.
#![cfg(feature = "mpi")]

use std::process::Command;
use std::time::{Duration, Instant};

fn mpirun(ranks: usize, args: &[&str]) -> Option<std::process::Output> {
    let mut command = Command::new("mpirun");
    command
        .args(["-np", &ranks.to_string(), "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_lingo-mpi-check"))
        .args(args)
        // CI runs as root, which Open MPI refuses unless told.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    match command.output() {
        Ok(out) => Some(out),
        Err(e) => {
            eprintln!("skipping the MPI tests: cannot run mpirun ({e}); install openmpi-bin");
            None
        }
    }
}

#[test]
fn collectives_match_their_definitions_under_mpirun() {
    for ranks in [2, 3] {
        let Some(out) = mpirun(ranks, &[]) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{ranks} ranks: {stdout}\n{stderr}");
        assert_eq!(
            stdout
                .matches("collectives match their definitions")
                .count(),
            ranks,
            "{stdout}"
        );
    }
}

#[test]
fn a_stuck_rank_ends_the_job_with_a_message() {
    let start = Instant::now();
    let Some(out) = mpirun(2, &["--stall-rank", "1"]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("barrier waited more than"), "{stderr}");
    // The stalled rank sleeps 30 s; the job must end long before that.
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "{:?}",
        start.elapsed()
    );
}

/// With a GPU per rank the NCCL backend passes the same checks; without one (CI) it must stop
/// with a clear error, not a panic.
#[cfg(feature = "nccl")]
#[test]
fn the_nccl_backend_checks_out_or_says_why_it_cannot_run() {
    let Some(out) = mpirun(2, &["--nccl"]) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert_eq!(stdout.matches("collectives match").count(), 2, "{stdout}");
    } else {
        assert!(stderr.contains("NCCL: this machine has no"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
