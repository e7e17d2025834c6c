//! `cargo run --release -p lingo-fuzz -- [--iterations N] [--seed S] [TARGET…]`: fuzzes the
//! readers (all, or those named), prints inputs tried, rejected and findings per target, and
//! writes each finding to `corpus/<target>/` for the regression tests to replay.

use clap::Parser;
use lingo_fuzz::{all_targets, corpus_dir, fuzz, quiet_panics, TrackingAllocator};

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator;

#[derive(Parser)]
struct Args {
    /// Mutants per target.
    #[arg(long, default_value_t = 10_000)]
    iterations: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only these targets (names as listed; e.g. `config:bert`, `safetensors`, `data:conll`).
    targets: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let targets: Vec<_> = all_targets()
        .into_iter()
        .filter(|t| args.targets.is_empty() || args.targets.contains(&t.name))
        .collect();
    anyhow::ensure!(!targets.is_empty(), "no target matches {:?}", args.targets);
    let scratch = tempfile::tempdir()?;
    quiet_panics();
    println!(
        "{:<24} {:>9} {:>9} {:>9}",
        "target", "tried", "rejected", "findings"
    );
    let (mut tried, mut found) = (0, 0);
    for target in &targets {
        let report = fuzz(target, args.iterations, args.seed, scratch.path());
        println!(
            "{:<24} {:>9} {:>9} {:>9}",
            target.name,
            report.tried,
            report.rejected,
            report.findings.len()
        );
        tried += report.tried;
        found += report.findings.len();
        let dir = corpus_dir(&target.name);
        for finding in &report.findings {
            std::fs::create_dir_all(&dir)?;
            let name = format!("{:016x}", fxhash(&finding.input));
            std::fs::write(dir.join(&name), &finding.input)?;
            println!("  {name}: {}", finding.problem.lines().next().unwrap_or(""));
        }
    }
    println!("{tried} inputs, {found} findings");
    Ok(())
}

/// A stable name for an input (FNV-1a).
fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
