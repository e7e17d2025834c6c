//! Every reader against the inputs that once broke it (`corpus/`), then a short fuzzing run of
//! each (`LINGO_FUZZ_ITERATIONS`, default 150 mutants per target; the long runs use the
//! `lingo-fuzz` binary). Any panic or outsized allocation fails the test and is printed.

use lingo_fuzz::{all_targets, check, corpus_dir, fuzz, quiet_panics, TrackingAllocator};

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator;

#[test]
fn no_reader_panics_or_overallocates() {
    let iterations = std::env::var("LINGO_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let scratch = tempfile::tempdir().expect("temp dir");
    quiet_panics();
    let mut problems = Vec::new();
    let (mut replayed, mut tried) = (0, 0);
    for target in all_targets() {
        let dir = scratch.path().join(&target.name);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        if let Ok(entries) = std::fs::read_dir(corpus_dir(&target.name)) {
            for entry in entries.flatten() {
                let input = std::fs::read(entry.path()).expect("corpus file");
                replayed += 1;
                if let Err(problem) = check(&target, &input, &dir, None) {
                    problems.push(format!(
                        "{} corpus {:?}: {problem}",
                        target.name,
                        entry.file_name()
                    ));
                }
            }
        }
        let report = fuzz(&target, iterations, 7, scratch.path());
        tried += report.tried;
        for f in report.findings {
            problems.push(format!(
                "{} (input of {} bytes): {}",
                target.name,
                f.input.len(),
                f.problem
            ));
        }
    }
    let _ = std::panic::take_hook();
    eprintln!("replayed {replayed} corpus inputs, fuzzed {tried} inputs");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
