//! Mutation fuzzing of every parser of user files.
//!
//! Each [`Target`] is one reader (a model folder's `config.json` for each family, safetensors
//! weights and sharded indexes, checkpoints, `tokenizer.json`, recipes, the dataset formats) with
//! valid seed inputs. [`fuzz`] feeds it mutants of the seeds — byte-level edits in the manner of
//! AFL's havoc stage, and structure-aware edits of JSON (every config, recipe and tokenizer is JSON,
//! and so is a safetensors header) — and records every input that panics, or that makes the reader
//! ask for more memory in one allocation than [`ALLOCATION_LIMIT`] (a small file must not allocate
//! gigabytes on the strength of a header it has not validated). An error is the right answer to a
//! bad file; a panic or an outsized allocation is a finding.
//!
//! It runs on stable Rust with no instrumentation, so it is not coverage-guided: the seeds are
//! real files of every kind Lingo reads, and the JSON mutations reach the fields a byte flip
//! rarely would. Findings are kept in `corpus/<target>/` and replayed by the tests.

pub mod targets;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub use targets::all_targets;

/// One reader under test: seed inputs and a run that writes the input where the reader looks
/// (inside `dir`, a scratch folder of its own) and calls it.
pub struct Target {
    pub name: String,
    pub seeds: Vec<Vec<u8>>,
    /// Whether inputs are JSON (structure-aware mutations apply) or safetensors (its header is).
    pub format: Format,
    pub run: Reader,
}

/// Runs a reader on one input inside a scratch folder: `Err` when it refuses the input.
pub type Reader = Box<dyn Fn(&[u8], &Path) -> Result<(), String> + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Safetensors,
}

/// The most one allocation may ask for while a reader handles a fuzzed input.
pub const ALLOCATION_LIMIT: usize = 256 << 20;

/// The global allocator of the fuzzing binaries: the system allocator, noting the largest single
/// request since [`reset_largest_allocation`].
pub struct TrackingAllocator;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

pub fn reset_largest_allocation() {
    LARGEST.store(0, Ordering::Relaxed);
}

pub fn largest_allocation() -> usize {
    LARGEST.load(Ordering::Relaxed)
}

/// What went wrong with one input.
#[derive(Clone, Debug)]
pub struct Finding {
    pub input: Vec<u8>,
    pub problem: String,
}

/// A target's fuzzing run.
#[derive(Debug, Default)]
pub struct Report {
    pub tried: usize,
    /// Inputs the reader refused with an error (the expected answer to most mutants).
    pub rejected: usize,
    pub findings: Vec<Finding>,
}

static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

/// Runs `target` on one input: `Err` with the problem if it panicked or allocated too much.
/// `current` (if given) holds the input while it runs, so an abort (an allocation the system
/// refuses) leaves it behind.
pub fn check(
    target: &Target,
    input: &[u8],
    dir: &Path,
    current: Option<&Path>,
) -> std::result::Result<bool, String> {
    if let Some(path) = current {
        let _ = std::fs::write(path, input);
    }
    reset_largest_allocation();
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.run)(input, dir)));
    let largest = largest_allocation();
    let result = match outcome {
        Err(_) => Err(format!(
            "panic: {}",
            PANIC_MESSAGE
                .lock()
                .ok()
                .and_then(|mut m| m.take())
                .unwrap_or_default()
        )),
        Ok(_) if largest > ALLOCATION_LIMIT => Err(format!(
            "one allocation of {} MiB for a {}-byte input",
            largest >> 20,
            input.len()
        )),
        Ok(accepted) => Ok(accepted.is_ok()),
    };
    // Each run starts from an empty folder.
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::create_dir_all(dir);
    result
}

/// Silences panic messages while fuzzing (they are recorded as findings instead).
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = match info.payload().downcast_ref::<&str>() {
            Some(s) => s.to_string(),
            None => info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default(),
        };
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut m) = PANIC_MESSAGE.lock() {
            *m = Some(format!("{message}{at}"));
        }
    }));
}

/// Fuzzes `target` with `iterations` mutants drawn from `seed`.
pub fn fuzz(target: &Target, iterations: usize, seed: u64, scratch: &Path) -> Report {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = scratch.join(&target.name);
    let _ = std::fs::create_dir_all(&dir);
    let current = scratch.join(format!("{}.current", target.name));
    let mut report = Report::default();
    let mut pool: Vec<Vec<u8>> = target.seeds.clone();
    for seed_input in &target.seeds {
        record(&mut report, target, seed_input.clone(), &dir, &current);
    }
    for _ in 0..iterations {
        let base = &pool[rng.random_range(0..pool.len())];
        let input = mutate(base, &pool, target.format, &mut rng);
        let accepted = record(&mut report, target, input.clone(), &dir, &current);
        // Inputs the reader accepted are kept as bases: mutants of them go deeper.
        if accepted && pool.len() < 256 {
            pool.push(input);
        }
    }
    let _ = std::fs::remove_file(&current);
    report
}

fn record(
    report: &mut Report,
    target: &Target,
    input: Vec<u8>,
    dir: &Path,
    current: &Path,
) -> bool {
    report.tried += 1;
    match check(target, &input, dir, Some(current)) {
        Ok(true) => true,
        Ok(false) => {
            report.rejected += 1;
            false
        }
        Err(problem) => {
            report.findings.push(Finding { input, problem });
            false
        }
    }
}

/// Where a target's kept findings live.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target.replace(':', "-"))
}

/// One to eight stacked edits of `base`.
pub fn mutate(base: &[u8], pool: &[Vec<u8>], format: Format, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut data = base.to_vec();
    let structured = match format {
        Format::Json => rng.random_bool(0.6),
        Format::Safetensors => rng.random_bool(0.5),
        Format::Text => false,
    };
    if structured {
        data = match format {
            Format::Json => mutate_json_text(&data, rng).unwrap_or(data),
            _ => mutate_safetensors_header(&data, rng).unwrap_or(data),
        };
        if rng.random_bool(0.7) {
            return data;
        }
    }
    for _ in 0..rng.random_range(1..=8) {
        havoc(&mut data, pool, rng);
    }
    data
}

const INTERESTING_BYTES: &[u8] = b"\x00\xff\x7f\x80\"{}[],:\n\t\r-09.eE\\";
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "255",
    "65536",
    "2147483648",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "1e308",
    "-1e308",
    "1e-320",
    "0.5",
    "NaN",
];

/// A byte-level edit in the manner of AFL's havoc stage.
fn havoc(data: &mut Vec<u8>, pool: &[Vec<u8>], rng: &mut ChaCha8Rng) {
    let len = data.len();
    match rng.random_range(0..9) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] = INTERESTING_BYTES[rng.random_range(0..INTERESTING_BYTES.len())];
        }
        2 => {
            let i = rng.random_range(0..=len);
            let n = rng.random_range(1..16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(i..i, bytes);
        }
        3 if len > 1 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(64));
            data.drain(i..i + n);
        }
        4 if len > 1 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(64));
            let copy = data[i..i + n].to_vec();
            let at = rng.random_range(0..=len);
            data.splice(at..at, copy);
        }
        5 if len > 0 => data.truncate(rng.random_range(0..len)),
        6 => {
            // Splice the tail of another input onto a head of this one.
            let other = &pool[rng.random_range(0..pool.len())];
            if !other.is_empty() && len > 0 {
                let cut = rng.random_range(0..len);
                let from = rng.random_range(0..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
        }
        7 => replace_number(data, rng),
        _ if len >= 8 => {
            // An interesting little-endian u64 or u32 over existing bytes (lengths, offsets).
            let values = [
                0u64,
                1,
                u32::MAX as u64,
                u64::MAX,
                1 << 40,
                (len as u64) * 2,
            ];
            let v = values[rng.random_range(0..values.len())];
            let i = rng.random_range(0..=len - 8);
            let width = if rng.random_bool(0.5) { 8 } else { 4 };
            data[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
        }
        _ => data.push(rng.random()),
    }
}

/// Replaces one run of ASCII digits with an interesting number.
fn replace_number(data: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        return;
    }
    let start = starts[rng.random_range(0..starts.len())];
    let end = (start..data.len())
        .find(|&i| !data[i].is_ascii_digit())
        .unwrap_or(data.len());
    let number = INTERESTING_NUMBERS[rng.random_range(0..INTERESTING_NUMBERS.len())];
    data.splice(start..end, number.bytes());
}

fn mutate_json_text(data: &[u8], rng: &mut ChaCha8Rng) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(data).ok()?;
    for _ in 0..rng.random_range(1..=3) {
        mutate_json(&mut value, rng);
    }
    serde_json::to_vec(&value).ok()
}

/// A safetensors file with its JSON header edited: the stated header length kept consistent or
/// (sometimes) not, the data left as it was.
fn mutate_safetensors_header(data: &[u8], rng: &mut ChaCha8Rng) -> Option<Vec<u8>> {
    let n = u64::from_le_bytes(data.get(..8)?.try_into().ok()?) as usize;
    let header = data.get(8..8usize.checked_add(n)?)?;
    let body = &data[8 + n..];
    let header = mutate_json_text(header, rng)?;
    let stated = if rng.random_bool(0.9) {
        header.len() as u64
    } else {
        rng.random()
    };
    let mut out = stated.to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    Some(out)
}

/// One structure-aware edit at a random node of `value`.
fn mutate_json(value: &mut Value, rng: &mut ChaCha8Rng) {
    let mut nodes = 0;
    count_nodes(value, &mut nodes);
    let pick = rng.random_range(0..nodes.max(1));
    let mut seen = 0;
    edit_node(value, pick, &mut seen, rng);
}

fn count_nodes(v: &Value, n: &mut usize) {
    *n += 1;
    match v {
        Value::Array(a) => a.iter().for_each(|x| count_nodes(x, n)),
        Value::Object(o) => o.values().for_each(|x| count_nodes(x, n)),
        _ => {}
    }
}

fn edit_node(v: &mut Value, pick: usize, seen: &mut usize, rng: &mut ChaCha8Rng) -> bool {
    if *seen == pick {
        replace_value(v, rng);
        return true;
    }
    *seen += 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| edit_node(x, pick, seen, rng)),
        Value::Object(o) => o.values_mut().any(|x| edit_node(x, pick, seen, rng)),
        _ => false,
    }
}

fn interesting_value(rng: &mut ChaCha8Rng) -> Value {
    match rng.random_range(0..12) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => Value::from(0),
        3 => Value::from(-1),
        4 => Value::from(u32::MAX),
        5 => Value::from(u64::MAX),
        6 => Value::from(1u64 << 40),
        7 => Value::from(1e308),
        8 => Value::from(-0.5),
        9 => Value::String(String::new()),
        10 => Value::String("ÿ\u{0}\u{202e}".repeat(rng.random_range(1..4))),
        _ => Value::Array(vec![]),
    }
}

fn replace_value(v: &mut Value, rng: &mut ChaCha8Rng) {
    match v {
        Value::Object(o) if !o.is_empty() && rng.random_bool(0.5) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            let key = &keys[rng.random_range(0..keys.len())];
            match rng.random_range(0..3) {
                0 => {
                    o.remove(key);
                }
                1 => {
                    o.insert(format!("{key}_unknown"), interesting_value(rng));
                }
                _ => {
                    o.insert(key.clone(), interesting_value(rng));
                }
            }
        }
        Value::Array(a) if !a.is_empty() && rng.random_bool(0.5) => {
            let i = rng.random_range(0..a.len());
            match rng.random_range(0..3) {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let copy = a[i].clone();
                    a.insert(i, copy);
                }
                _ => a[i] = interesting_value(rng),
            }
        }
        Value::Number(n) => {
            let scaled =
                n.as_f64().unwrap_or(1.0) * [2.0, 1000.0, -1.0, 0.0, 1e12][rng.random_range(0..5)];
            *v = if rng.random_bool(0.5) {
                interesting_value(rng)
            } else {
                serde_json::Number::from_f64(scaled).map_or(Value::Null, Value::Number)
            };
        }
        Value::String(s) if rng.random_bool(0.5) => {
            // Deep nesting, a long string, or a different kind of value.
            *s = match rng.random_range(0..3) {
                0 => s.repeat(rng.random_range(2..50)),
                1 => s.chars().rev().collect(),
                _ => String::new(),
            };
        }
        _ => {
            *v = if rng.random_bool(0.2) {
                let mut deep = Value::Null;
                for _ in 0..rng.random_range(10..200) {
                    deep = Value::Array(vec![deep]);
                }
                deep
            } else {
                interesting_value(rng)
            };
        }
    }
}
