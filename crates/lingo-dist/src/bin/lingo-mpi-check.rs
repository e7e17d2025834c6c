//! Run under `mpirun -np N`: checks the MPI backend's collectives against their definitions
//! (every rank can compute every rank's values) and exits non-zero on any difference. With
//! `--stall-rank R`, rank R sleeps past the others' timeout before its barrier, to show a stuck
//! rank ends the job instead of hanging it. With `--nccl` (a build with the `nccl` feature), the
//! same checks run over NCCL, one GPU per rank.

use lingo_dist::{Collective, Mpi};
use std::time::Duration;

fn values(rank: usize, round: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((rank * 7919 + round * 104_729 + i * 31) as f32).sin()
                * 10f32.powi((rank % 4) as i32 * 3)
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let stall = args
        .iter()
        .position(|a| a == "--stall-rank")
        .and_then(|i| args.get(i + 1)?.parse::<usize>().ok());
    let timeout = if stall.is_some() { 2 } else { 60 };
    let mpi = Mpi::init(Duration::from_secs(timeout)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let c: Box<dyn Collective> = match args.iter().any(|a| a == "--nccl") {
        false => Box::new(mpi),
        #[cfg(feature = "nccl")]
        true => Box::new(lingo_dist::Nccl::init(mpi, None).unwrap_or_else(|e| {
            eprintln!(
                "rank {}: {e}",
                std::env::var("OMPI_COMM_WORLD_RANK").unwrap_or_default()
            );
            std::process::exit(2)
        })),
        #[cfg(not(feature = "nccl"))]
        true => {
            eprintln!("--nccl: this build has no NCCL backend (cargo feature nccl)");
            std::process::exit(2)
        }
    };
    let (rank, world) = (c.rank(), c.world_size());
    if let Some(stalled) = stall {
        if rank == stalled {
            std::thread::sleep(Duration::from_secs(30));
        }
        c.barrier().expect("barrier");
        return;
    }
    let fail = |what: String| -> ! {
        eprintln!("rank {rank}: {what}");
        std::process::exit(1)
    };
    for round in 0..20 {
        for n in [0, 1, world - 1, 37, 1000 + round] {
            let mut buf = values(rank, round, n);
            c.all_reduce_sum(&mut buf).expect("all_reduce");
            let mut sum = values(0, round, n);
            for r in 1..world {
                sum.iter_mut()
                    .zip(values(r, round, n))
                    .for_each(|(s, x)| *s += x);
            }
            if buf != sum {
                fail(format!(
                    "round {round}: the sum of {n} values is not the rank-order sum"
                ));
            }
        }
        let root = round % world;
        let mut b = if rank == root {
            values(99, round, 5)
        } else {
            vec![0.0; 5]
        };
        c.broadcast(&mut b, root).expect("broadcast");
        if b != values(99, round, 5) {
            fail(format!("round {round}: broadcast from {root} differs"));
        }
        let mut all = vec![0.0; 3 * world];
        c.all_gather(&values(rank, round, 3), &mut all)
            .expect("all_gather");
        let want: Vec<f32> = (0..world).flat_map(|r| values(r, round, 3)).collect();
        if all != want {
            fail(format!("round {round}: all_gather differs"));
        }
        // Point to point, around a ring (even ranks send first, odd ones receive first).
        let (next, previous) = ((rank + 1) % world, (rank + world - 1) % world);
        let mut got = vec![0.0; 7 + round];
        let send = || c.send(&values(rank, round, 7 + round), next).expect("send");
        if rank % 2 == 0 {
            send();
            c.recv(&mut got, previous).expect("recv");
        } else {
            c.recv(&mut got, previous).expect("recv");
            send();
        }
        if got != values(previous, round, 7 + round) {
            fail(format!(
                "round {round}: the message from rank {previous} differs"
            ));
        }
        c.barrier().expect("barrier");
    }
    println!("rank {rank} of {world}: collectives match their definitions");
}
