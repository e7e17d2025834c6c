//! `lingo quantize`: a model folder with int8 linear layers, which every Lingo command loads as
//! it is (see lingo_models::quantize), or a bfloat16 folder.

use clap::Args;
use lingo_models::auto::LoadOptions;
use lingo_models::Quantization;
use lingo_tasks::Pretrained;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct Quantize {
    /// The model folder (or Hugging Face Hub id) to quantize.
    model: String,
    /// Where to write the quantized folder (weights, config, tokenizer and the other files).
    #[arg(long)]
    out: PathBuf,
    /// `int8-dynamic`: int8 weights per output channel, int8 activations per row at run time.
    /// `bf16`: a bfloat16 folder (`transformers` loads it; `--dtype bf16` runs it in bf16).
    #[arg(long, default_value = "int8-dynamic")]
    scheme: Quantization,
    /// Never download (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
}

impl Quantize {
    pub fn run(self) -> anyhow::Result<()> {
        let start = Instant::now();
        let dir = lingo_models::hub::resolve_model(&self.model, self.offline)?;
        if same_folder(&dir, &self.out) {
            anyhow::bail!(
                "--out {} is the model folder itself: write the quantized model elsewhere",
                self.out.display()
            );
        }
        let options = LoadOptions {
            quantize: Some(self.scheme),
            ..LoadOptions::default()
        };
        let pretrained = Pretrained::open(&dir, &options)?;
        pretrained.save(&self.out)?;
        let copied = copy_other_files(&dir, &self.out)?;
        let layers = pretrained.store.packed_linears();
        let packed_params: usize = layers.iter().map(|(_, (o, i))| o * i).sum();
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "{} linear layers ({:.1}M weights) → {}; weights in memory {:.1} MB → {:.1} MB; \
             files {:.1} MB → {:.1} MB; {copied} other files copied; {:.1}s",
            layers.len(),
            packed_params as f64 / 1e6,
            self.scheme,
            mb(4 * pretrained.store.num_params() as u64),
            mb(pretrained.store.weight_bytes() as u64),
            mb(weights_size(&dir)),
            mb(weights_size(&self.out)),
            start.elapsed().as_secs_f64()
        );
        println!("wrote {}", self.out.display());
        Ok(())
    }
}

pub(crate) fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Weights in other formats, which the quantized folder must not carry as if they were its own.
fn is_other_weights(name: &str) -> bool {
    [
        ".safetensors",
        ".bin",
        ".h5",
        ".msgpack",
        ".onnx",
        ".ot",
        ".pt",
        ".pth",
        ".gguf",
    ]
    .iter()
    .any(|ext| name.ends_with(ext))
        || name == "model.safetensors.index.json"
        || name == "pytorch_model.bin.index.json"
        || name == "onnx"
        || name == "openvino"
}

/// Copies what the saved folder lacks from the source (a sentence-transformers pooling config,
/// a training recipe, a chat template, a README), recursively; never weights.
pub(crate) fn copy_other_files(from: &Path, to: &Path) -> anyhow::Result<usize> {
    let mut copied = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let target = to.join(&name);
        if is_other_weights(&name) || name.starts_with('.') || target.exists() {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copied += copy_other_files(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Bytes of the folder's safetensors weights (not a training run's checkpoint files).
pub(crate) fn weights_size(dir: &Path) -> u64 {
    let training = [
        lingo_train::checkpoint::CHECKPOINT_FILE,
        lingo_train::trainer::BEST_FILE,
    ];
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.ends_with(".safetensors") && !training.contains(&name.as_str())
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
