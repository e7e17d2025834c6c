//! The in-process backend against the definitions: deterministic rank-order sums, broadcast,
//! gather, barriers across many rounds, and the failures a distributed run must report instead of
//! hanging — a rank that calls another collective, one that never comes, one that leaves.

use lingo_dist::{Collective, CollectiveError, InProcess, SingleProcess};
use std::thread;
use std::time::Duration;

/// Runs `f` on every rank of a group, one thread each, and returns the ranks' results in order.
fn on_ranks<T: Send>(group: Vec<InProcess>, f: impl Fn(&InProcess) -> T + Sync) -> Vec<T> {
    thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|rank| {
                let f = &f;
                s.spawn(move || f(&rank))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank panicked"))
            .collect()
    })
}

/// Values whose sum depends on the order they are added in.
fn values(rank: usize, round: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((rank * 7919 + round * 104_729 + i * 31) as f32).sin()
                * 10f32.powi((rank % 4) as i32 * 3)
        })
        .collect()
}

#[test]
fn sums_broadcasts_and_gathers_match_their_definitions_round_after_round() {
    for world in [1, 2, 3, 5] {
        let results = on_ranks(InProcess::group(world), |c| {
            let mut out = Vec::new();
            for round in 0..50 {
                let mut buf = values(c.rank(), round, 37);
                c.all_reduce_sum(&mut buf).unwrap();
                out.push(buf);
                let root = round % world;
                let mut b = if c.rank() == root {
                    values(99, round, 5)
                } else {
                    vec![0.0; 5]
                };
                c.broadcast(&mut b, root).unwrap();
                out.push(b);
                let mut all = vec![0.0; 3 * world];
                c.all_gather(&values(c.rank(), round, 3), &mut all).unwrap();
                out.push(all);
                c.barrier().unwrap();
                let mut mean = vec![c.rank() as f32; 2];
                c.all_reduce_mean(&mut mean).unwrap();
                out.push(mean);
            }
            out
        });
        for (round, chunk) in results[0].chunks(4).enumerate() {
            // The sum is taken in rank order: bit for bit the sequential one.
            let mut sum = values(0, round, 37);
            for r in 1..world {
                sum.iter_mut()
                    .zip(values(r, round, 37))
                    .for_each(|(s, x)| *s += x);
            }
            assert_eq!(chunk[0], sum, "world {world} round {round}");
            assert_eq!(chunk[1], values(99, round, 5));
            let gathered: Vec<f32> = (0..world).flat_map(|r| values(r, round, 3)).collect();
            assert_eq!(chunk[2], gathered);
            let mean = (0..world).sum::<usize>() as f32 / world as f32;
            assert_eq!(chunk[3], vec![mean; 2]);
        }
        // Every rank got the same bits.
        assert!(results.iter().all(|r| *r == results[0]), "world {world}");
    }
}

#[test]
fn a_rank_calling_another_collective_is_a_mismatch_everywhere() {
    let results = on_ranks(InProcess::group(2), |c| {
        if c.rank() == 0 {
            c.all_reduce_sum(&mut [1.0, 2.0])
        } else {
            c.all_reduce_sum(&mut [1.0, 2.0, 3.0])
        }
    });
    for r in &results {
        let err = r.as_ref().unwrap_err();
        assert!(matches!(err, CollectiveError::Mismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("2 values") && text.contains("3 values"),
            "{text}"
        );
    }
}

#[test]
fn a_rank_that_never_comes_times_out_naming_it() {
    let results = on_ranks(
        InProcess::group_with_timeout(3, Duration::from_millis(200)),
        |c| {
            if c.rank() == 2 {
                // Stuck elsewhere; long enough for the others to give up, short enough for a test.
                thread::sleep(Duration::from_millis(600));
                return None;
            }
            Some(c.barrier())
        },
    );
    for r in results.iter().take(2) {
        match r {
            Some(Err(CollectiveError::Timeout { missing, op, .. })) => {
                assert_eq!(missing, &[2]);
                assert_eq!(*op, "barrier");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
}

#[test]
fn a_rank_that_leaves_makes_the_others_fail_not_hang() {
    let mut group = InProcess::group(3);
    drop(group.pop()); // rank 2 is gone before the first collective
    let results = on_ranks(group, |c| c.all_reduce_sum(&mut [1.0]));
    for r in results {
        assert_eq!(
            r.unwrap_err(),
            CollectiveError::PeerGone {
                op: "all_reduce",
                rank: 2
            }
        );
    }
    // A rank that finishes its collectives and exits does not disturb the ones still taking
    // the last result.
    for _ in 0..200 {
        let results = on_ranks(InProcess::group(4), |c| {
            let mut x = [c.rank() as f32];
            c.all_reduce_sum(&mut x).map(|_| x[0])
        });
        assert!(results.iter().all(|r| r == &Ok(6.0)), "{results:?}");
    }
}

#[test]
fn bad_arguments_are_errors_and_one_process_is_the_identity() {
    let one = SingleProcess;
    let mut buf = [1.0, 2.0];
    one.all_reduce_mean(&mut buf).unwrap();
    assert_eq!(buf, [1.0, 2.0]);
    assert!(one.broadcast(&mut buf, 1).is_err());
    let mut recv = [0.0; 2];
    one.all_gather(&buf, &mut recv).unwrap();
    assert_eq!(recv, buf);
    assert!(one.is_root() && one.world_size() == 1);

    let results = on_ranks(InProcess::group(2), |c| {
        let mut short = [0.0; 3];
        (
            c.all_gather(&[1.0, 2.0], &mut short).is_err(),
            c.broadcast(&mut [0.0], 2).is_err(),
        )
    });
    assert!(results.iter().all(|&(a, b)| a && b));
}

#[test]
fn bytes_travel_whole_and_disagreement_names_the_rank() {
    // Every length modulo 4, and bytes whose 4-byte words are NaN patterns, arrive unchanged.
    let message: Vec<u8> = (0..1027u32).map(|i| (i * 37 % 256) as u8).collect();
    for len in [0, 1, 2, 3, 4, 5, 1027] {
        let nan_words = [0xff, 0xff, 0xff, 0x7f].repeat(3);
        let results = on_ranks(InProcess::group(3), |c| {
            let mut bytes = match c.rank() {
                1 => [message[..len].to_vec(), nan_words.clone()].concat(),
                _ => vec![9; 11],
            };
            c.broadcast_bytes(&mut bytes, 1).map(|()| bytes)
        });
        for got in results {
            assert_eq!(got.unwrap(), [&message[..len], &nan_words[..]].concat());
        }
    }
    // The same bytes agree; different ones are an error on every rank, naming the odd ones.
    let results = on_ranks(InProcess::group(4), |c| c.agree("configs", b"same"));
    assert!(results.iter().all(Result::is_ok));
    let results = on_ranks(InProcess::group(4), |c| {
        let config: &[u8] = if c.rank() % 2 == 1 { b"other" } else { b"same" };
        c.agree("configs", config)
    });
    for r in results {
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("different configs") && e.contains("[1, 3]"),
            "{e}"
        );
    }
    assert!(SingleProcess.agree("configs", b"anything").is_ok());
}

#[test]
fn messages_pass_between_pairs_in_order() {
    // A ring: each rank sends three messages to the next and receives the previous one's.
    let results = on_ranks(
        InProcess::group(3),
        |c| -> lingo_dist::Result<Vec<Vec<f32>>> {
            let (next, previous) = ((c.rank() + 1) % 3, (c.rank() + 2) % 3);
            for k in 0..3 {
                c.send(&values(c.rank(), k, 4 + k), next)?;
            }
            (0..3)
                .map(|k| {
                    let mut buf = vec![0.0; 4 + k];
                    c.recv(&mut buf, previous).map(|()| buf)
                })
                .collect()
        },
    );
    for (rank, got) in results.into_iter().enumerate() {
        let previous = (rank + 2) % 3;
        let want: Vec<Vec<f32>> = (0..3).map(|k| values(previous, k, 4 + k)).collect();
        assert_eq!(got.unwrap(), want);
    }
    // A message of another length, oneself, or a rank that has left: errors.
    let results = on_ranks(InProcess::group(2), |c| {
        if c.rank() == 0 {
            c.send(&[1.0, 2.0], 1)?;
            return c.send(&[1.0], 0);
        }
        c.recv(&mut [0.0; 3], 0)
    });
    let e = results[0].as_ref().unwrap_err().to_string();
    assert!(e.contains("cannot exchange with rank 0"), "{e}");
    let e = results[1].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("a message of 3 values") && e.contains("one of 2"),
        "{e}"
    );
    let mut group = InProcess::group(2);
    let second = group.pop().unwrap();
    drop(group);
    let e = second.recv(&mut [0.0], 0).unwrap_err().to_string();
    assert!(e.contains("rank 0 left"), "{e}");
    assert!(SingleProcess.send(&[1.0], 0).is_err());
}
