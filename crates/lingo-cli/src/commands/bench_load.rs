//! `lingo bench load`: the memory and time it takes to load a Hugging Face folder — BERT-base and
//! GPT-2 small, random weights written here as `transformers` lays them out — beside
//! `transformers`' `from_pretrained` of the same folders (tools/bench_load.py).
//!
//! Each load runs in a fresh process (this binary, with the hidden `--load-probe`), so that no
//! earlier allocation is reused: the figure is the process's peak resident memory during the
//! load minus its resident memory just before, from /proc (Linux); and the same after a first
//! forward pass of 8 tokens, since `transformers` leaves its parameters as views of the mapped
//! file, read only when first used.

use super::bench::json_output;
use anyhow::Context;
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::ModelInputs;
use lingo_nn::Ctx;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const SCRIPT: &str = include_str!("../../../../tools/bench_load.py");

/// What one load cost.
#[derive(Serialize, Deserialize)]
pub struct Probe {
    /// Resident memory before the load, MiB.
    pub before_mib: f64,
    /// Peak resident memory during the load, MiB.
    pub peak_mib: f64,
    /// Peak resident memory after a first forward pass (8 tokens), MiB: what a usable model
    /// costs, also where a loader leaves weights in the file until they are first read.
    pub first_forward_peak_mib: f64,
    pub seconds: f64,
}

impl Probe {
    fn added_mib(&self) -> f64 {
        self.peak_mib - self.before_mib
    }

    fn added_in_use_mib(&self) -> f64 {
        self.first_forward_peak_mib - self.before_mib
    }
}

/// A `/proc/self/status` field in MiB.
fn status_mib(field: &str) -> anyhow::Result<f64> {
    lingo_serve::load::memory_mb(std::process::id(), field).with_context(|| {
        format!("no {field} in /proc/self/status (peak memory is read on Linux only)")
    })
}

/// Loads `dir` as `lingo` does and prints the [`Probe`] as JSON: the child side of the benchmark.
pub fn probe(dir: &Path) -> anyhow::Result<()> {
    // Resetting the peak makes it start from here (best effort: needs Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before_mib = status_mib("VmRSS:")?;
    let start = Instant::now();
    let loaded = AutoModel::load(dir, &LoadOptions::default())?;
    let seconds = start.elapsed().as_secs_f64();
    let peak_mib = status_mib("VmHWM:")?;
    let ids = candle_core::Tensor::new(
        &[[101u32, 2023, 2003, 1037, 3231, 1012, 2009, 102]],
        &candle_core::Device::Cpu,
    )?;
    loaded
        .model
        .forward(&ModelInputs::new(ids), &mut Ctx::eval())?;
    let first_forward_peak_mib = status_mib("VmHWM:")?;
    let probe = Probe {
        before_mib,
        peak_mib,
        first_forward_peak_mib,
        seconds,
    };
    println!("{}", serde_json::to_string(&probe)?);
    Ok(())
}

/// The models: their `config.json`, as `transformers`' defaults write them.
fn models() -> [(&'static str, serde_json::Value); 2] {
    [
        (
            "BERT-base",
            serde_json::json!({
                "model_type": "bert", "architectures": ["BertModel"], "vocab_size": 30522,
                "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2,
                "pad_token_id": 0, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
            }),
        ),
        (
            "GPT-2",
            serde_json::json!({
                "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257,
                "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
                "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            }),
        ),
    ]
}

pub fn run(python: Option<&str>, json: Option<&Path>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let script = tmp.path().join("bench_load.py");
    std::fs::write(&script, SCRIPT)?;
    let exe = std::env::current_exe()?;
    println!("Loading a model folder (random weights, f32 safetensors): peak resident memory added by the load, and its time; each load in a fresh process");
    println!(
        "{:<10} {:>9} {:>22} {:>7} {:>22} {:>7}",
        "model", "file MiB", "Lingo MiB (+forward)", "s", "transformers (+fwd)", "s"
    );
    let mut rows = Vec::new();
    for (name, config) in models() {
        let dir = tmp.path().join(name);
        AutoModel::init(&dir, config, &LoadOptions::default())?.save(&dir)?;
        let file_mib = std::fs::metadata(dir.join("model.safetensors"))?.len() as f64 / 1048576.0;
        let mut lingo = Command::new(&exe);
        lingo.args(["bench", "load", "--load-probe"]).arg(&dir);
        let ours: Probe = json_output(&mut lingo, "lingo")?;
        let theirs = match python {
            Some(python) => {
                let mut py = Command::new(python);
                py.arg(&script).arg(&dir);
                match json_output::<Probe>(&mut py, "tools/bench_load.py") {
                    Ok(p) => Some(p),
                    Err(e) => {
                        println!("transformers side unavailable ({e})");
                        None
                    }
                }
            }
            None => None,
        };
        let mib = |p: &Probe| format!("{:.0} ({:.0})", p.added_mib(), p.added_in_use_mib());
        let (py_mib, py_s) = match &theirs {
            Some(p) => (mib(p), format!("{:.2}", p.seconds)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{name:<10} {file_mib:>9.0} {:>22} {:>7.2} {py_mib:>22} {py_s:>7}",
            mib(&ours),
            ours.seconds
        );
        rows.push(serde_json::json!({
            "model": name, "file_mib": file_mib, "lingo": ours, "transformers": theirs,
        }));
    }
    if let Some(path) = json {
        let value = serde_json::json!({ "benchmark": "load", "rows": rows });
        lingo_nn::io::write_atomic(path, serde_json::to_string_pretty(&value)?.as_bytes())?;
    }
    Ok(())
}
