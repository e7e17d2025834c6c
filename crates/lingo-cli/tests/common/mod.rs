//! What the CLI tests share: running `lingo`, writing input files, the fixture corpus.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `lingo` with `args`: its stdout if it succeeds, its stderr if not.
pub fn lingo(args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(args)
        .output()
        .expect("run lingo");
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// The small generated corpus of the tokenizer fixtures (blank-line-separated documents).
pub fn corpus() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tokenizers/corpus.txt")
        .display()
        .to_string()
}
