//! `lingo bench int8`: dynamic int8 quantization measured beside the tools a user would pick
//! instead, in the same run on this machine — PyTorch's `quantize_dynamic` and ONNX Runtime's
//! `quantize_dynamic` (tools/bench_int8.py) — on BERT-base's forward and GPT-2's decoding; the
//! decoding rate as weight bandwidth against the machine's own; and Lingo's int8 product per
//! BERT-base layer shape beside candle's Q8_0 quantized matmul (whose 32-wide blocks fit these
//! shapes; its k-quants need inputs in multiples of 256, which MiniLM's 384 is not).

use super::bench::{bench_bert, bench_gpt2, bench_pytorch, median, time_ms, PyResult};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use lingo_kernels::{Int8Kernel, Int8Matrix};
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const SCRIPT: &str = include_str!("../../../../tools/bench_int8.py");
const NEW_TOKENS: f64 = 128.0;

pub fn run(iters: usize, python: Option<&str>, json: Option<&Path>) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    let kernel = Int8Kernel::detect();
    println!(
        "Int8 dynamic quantization: {threads} threads, int8 kernel `{}` (of {:?})",
        kernel.name(),
        Int8Kernel::available()
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
    );
    println!("timing Lingo: BERT-base ({iters} iterations after warm-up) ...");
    let (bert_f32, bert_f32_held) = bench_bert(iters, false)?;
    let (bert_int8, bert_int8_held) = bench_bert(iters, true)?;
    let gpt_iters = (iters / 2).max(2);
    println!("timing Lingo: GPT-2 ({gpt_iters} generations after warm-up) ...");
    let (gpt_f32, f32_bytes, gpt_f32_held) = bench_gpt2(gpt_iters, false)?;
    let (gpt_int8, int8_bytes, gpt_int8_held) = bench_gpt2(gpt_iters, true)?;
    println!("timing the int8 product per layer shape ...");
    let shapes = layer_shapes(iters)?;
    let bandwidth = read_bandwidth();
    let reference = match python {
        None => None,
        Some(python) => {
            println!("timing PyTorch and ONNX Runtime with {python} ...");
            match bench_pytorch(python, SCRIPT, &[], iters, threads) {
                Ok(r) => Some(r),
                Err(e) => {
                    println!("the reference side is unavailable ({e}); Lingo's figures only");
                    None
                }
            }
        }
    };
    let other = |key: &str| {
        reference
            .as_ref()
            .and_then(|r| r.ms(key))
            .map(|t| median(&t))
    };
    let versions = reference.as_ref().map(versions).unwrap_or_default();

    println!("\nBERT-base forward, 1 × 128 tokens, random weights (median ms)");
    println!(
        "{:<22} {:>9} {:>9} {:>14}",
        "", "f32", "int8", "int8 speed-up"
    );
    let rows = [
        ("Lingo", Some(median(&bert_f32)), Some(median(&bert_int8))),
        (
            versions[0].as_str(),
            other("bert_torch_f32"),
            other("bert_torch_int8"),
        ),
        (
            versions[1].as_str(),
            other("bert_ort_f32"),
            other("bert_ort_int8"),
        ),
    ];
    for (name, f, q) in &rows {
        if let (Some(f), Some(q)) = (f, q) {
            println!("{name:<22} {f:>9.1} {q:>9.1} {:>13.2}×", f / q);
        }
    }
    let lingo_int8 = median(&bert_int8);
    for (name, _, q) in &rows[1..] {
        if let Some(q) = q {
            println!(
                "Lingo int8 against {name} int8: {:.2}× faster",
                q / lingo_int8
            );
        }
    }
    let mb = |b: usize| b as f64 / 1e6;
    println!(
        "weights in memory: f32 {:.0} MB, int8 {:.0} MB (embeddings stay f32)",
        mb(bert_f32_held),
        mb(bert_int8_held)
    );
    if let Some(e) = reference
        .as_ref()
        .and_then(|r| r.timings.get("onnxruntime_error"))
    {
        println!("(ONNX Runtime unavailable: {e})");
    }

    println!("\nGPT-2 124M greedy decoding, 128 new tokens after 32, random weights (tokens/s)");
    println!(
        "{:<22} {:>9} {:>9} {:>14}",
        "", "f32", "int8", "int8 speed-up"
    );
    let rate = |ms: f64| NEW_TOKENS / ms * 1e3;
    let gpt_rows = [
        ("Lingo", Some(median(&gpt_f32)), Some(median(&gpt_int8))),
        (
            versions[0].as_str(),
            other("gpt2_torch_f32"),
            other("gpt2_torch_int8"),
        ),
    ];
    for (name, f, q) in &gpt_rows {
        if let (Some(f), Some(q)) = (f, q) {
            println!(
                "{name:<22} {:>9.1} {:>9.1} {:>13.2}×",
                rate(*f),
                rate(*q),
                f / q
            );
        }
    }
    println!(
        "weights in memory: f32 {:.0} MB, int8 {:.0} MB (the token and position tables stay f32; \
         the tied head is an int8 copy)",
        mb(gpt_f32_held),
        mb(gpt_int8_held)
    );
    let streamed = |bytes: usize, ms: f64| bytes as f64 * rate(ms) / 1e9;
    println!(
        "linear weights read per token: f32 {:.0} MB, int8 {:.0} MB → {:.1} GB/s and {:.1} GB/s \
         against this machine's {bandwidth:.1} GB/s read bandwidth ({threads} threads)",
        f32_bytes as f64 / 1e6,
        int8_bytes as f64 / 1e6,
        streamed(f32_bytes, median(&gpt_f32)),
        streamed(int8_bytes, median(&gpt_int8)),
    );

    println!("\nOne linear layer, 128 rows (median ms)");
    println!(
        "{:<22} {:>10} {:>11} {:>12} {:>16}",
        "in → out", "Lingo f32", "Lingo int8", "candle Q8_0", "Q8_0 / int8"
    );
    for s in &shapes {
        println!(
            "{:<22} {:>10.3} {:>11.3} {:>12.3} {:>15.2}×",
            format!("{} → {}", s.inp, s.out),
            s.f32_ms,
            s.int8_ms,
            s.q8_0_ms,
            s.q8_0_ms / s.int8_ms
        );
    }

    if let Some(path) = json {
        let value = serde_json::json!({
            "threads": threads,
            "kernel": kernel.name(),
            "read_bandwidth_gb_s": bandwidth,
            "lingo": {
                "bert_f32": bert_f32, "bert_int8": bert_int8,
                "gpt2_f32": gpt_f32, "gpt2_int8": gpt_int8,
                "gpt2_linear_bytes_f32": f32_bytes, "gpt2_linear_bytes_int8": int8_bytes,
                "bert_weight_bytes_f32": bert_f32_held, "bert_weight_bytes_int8": bert_int8_held,
                "gpt2_weight_bytes_f32": gpt_f32_held, "gpt2_weight_bytes_int8": gpt_int8_held,
                "layers": shapes.iter().map(|s| serde_json::json!({
                    "in": s.inp, "out": s.out, "f32_ms": s.f32_ms, "int8_ms": s.int8_ms,
                    "candle_q8_0_ms": s.q8_0_ms,
                })).collect::<Vec<_>>(),
            },
            "reference": reference.as_ref().map(|r| serde_json::json!({ "torch": r.torch, "timings": r.timings })),
        });
        std::fs::write(path, serde_json::to_string_pretty(&value)?)?;
    }
    Ok(())
}

/// Row labels for the reference tools, with their versions.
fn versions(r: &PyResult) -> [String; 2] {
    let ort = r
        .timings
        .get("onnxruntime")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    [
        format!("PyTorch {}", r.torch),
        format!("ONNX Runtime {ort}"),
    ]
}

struct LayerTiming {
    inp: usize,
    out: usize,
    f32_ms: f64,
    int8_ms: f64,
    q8_0_ms: f64,
}

/// BERT-base's three linear shapes at 128 rows: Lingo's f32 product (the `[in, out]` copy it
/// keeps for inference), Lingo's int8 product, candle's Q8_0 `QMatMul`.
fn layer_shapes(iters: usize) -> anyhow::Result<Vec<LayerTiming>> {
    let dev = Device::Cpu;
    let rows = 128;
    let mut out = Vec::new();
    for (inp, outp) in [(768, 768), (768, 3072), (3072, 768)] {
        let w = Tensor::randn(0f32, 0.05, (outp, inp), &dev)?;
        let wt = w.t()?.contiguous()?;
        let x = Tensor::randn(0f32, 1.0, (rows, inp), &dev)?;
        let int8 = Arc::new(Int8Matrix::quantize(
            &w.flatten_all()?.to_vec1()?,
            outp,
            inp,
        )?);
        let q8 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
        let reps = iters.max(5) * 4;
        let time = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> anyhow::Result<f64> {
            Ok(median(&time_ms(reps, 1, || Ok(f().map(drop)?))?))
        };
        out.push(LayerTiming {
            inp,
            out: outp,
            f32_ms: time(&|| lingo_kernels::linear_transposed(&x, &w, &wt, None))?,
            int8_ms: time(&|| lingo_kernels::linear_int8(&x, &int8, None))?,
            q8_0_ms: time(&|| q8.forward(&x))?,
        });
    }
    Ok(out)
}

/// The machine's read bandwidth with every worker thread: the best of five parallel sums over
/// 512 MiB (far beyond the caches), in GB/s.
fn read_bandwidth() -> f64 {
    let data = vec![1u64; 64 << 20];
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let sum: u64 = data
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .sum();
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((data.len() * 8) as f64 / secs / 1e9);
    }
    best
}
