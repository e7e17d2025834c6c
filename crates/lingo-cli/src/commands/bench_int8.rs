//! `lingo bench int8` (also `lingo bench bf16`): reduced-precision inference measured beside the
//! tools a user would pick instead, in the same run on this machine — PyTorch's `quantize_dynamic`
//! and bf16 weights, and ONNX Runtime's `quantize_dynamic` (tools/bench_int8.py) — on BERT-base's
//! forward and GPT-2's decoding; the decoding rate as weight bandwidth against the machine's own;
//! and Lingo's int8 and bf16 products per BERT-base layer shape beside candle's Q8_0 quantized
//! matmul (whose 32-wide blocks fit these shapes; its k-quants need inputs in multiples of 256,
//! which MiniLM's 384 is not).

use super::bench::{bench_bert, bench_gpt2, bench_pytorch, median, time_ms, PyResult};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use lingo_kernels::{Bf16Matrix, Int8Kernel, Int8Matrix};
use lingo_nn::LinearPrecision;
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const SCRIPT: &str = include_str!("../../../../tools/bench_int8.py");
const NEW_TOKENS: f64 = 128.0;
const PRECISIONS: [LinearPrecision; 3] = [
    LinearPrecision::F32,
    LinearPrecision::Int8,
    LinearPrecision::Bf16,
];

/// One model timed in each precision: milliseconds per iteration, bytes of weights held, and
/// (GPT-2) bytes of linear weights read per token.
#[derive(Default)]
struct ByPrecision {
    ms: [Vec<f64>; 3],
    held: [usize; 3],
    streamed: [usize; 3],
}

impl ByPrecision {
    fn median(&self, i: usize) -> f64 {
        median(&self.ms[i])
    }
}

pub fn run(iters: usize, python: Option<&str>, json: Option<&Path>) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    let kernel = Int8Kernel::detect();
    let bf16_kernels: Vec<_> = (lingo_kernels::bf16::Kernel::available().iter())
        .map(|k| k.name())
        .collect();
    println!(
        "Reduced-precision inference: {threads} threads, int8 kernel `{}`{} (of {:?}), bf16 \
         kernels {bf16_kernels:?} (AMX from 32 rows)",
        kernel.name(),
        if lingo_kernels::amx::available() {
            " with AMX tiles from 32 rows"
        } else {
            ""
        },
        Int8Kernel::available()
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>(),
    );
    println!("timing Lingo: BERT-base ({iters} iterations after warm-up) ...");
    let mut bert = ByPrecision::default();
    for (i, &p) in PRECISIONS.iter().enumerate() {
        (bert.ms[i], bert.held[i]) = bench_bert(iters, p)?;
    }
    let gpt_iters = (iters / 2).max(2);
    println!("timing Lingo: GPT-2 ({gpt_iters} generations after warm-up) ...");
    let mut gpt = ByPrecision::default();
    for (i, &p) in PRECISIONS.iter().enumerate() {
        (gpt.ms[i], gpt.streamed[i], gpt.held[i]) = bench_gpt2(gpt_iters, p)?;
    }
    println!("timing the int8 and bf16 products per layer shape ...");
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
    let cell = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.1}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}×", a / b),
        _ => "—".to_string(),
    };
    let header = || {
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>10} {:>10}",
            "", "f32", "int8", "bf16", "int8 ×", "bf16 ×"
        )
    };

    println!(
        "\nBERT-base forward, 1 × 128 tokens, random weights (median ms; × = speed-up on f32)"
    );
    header();
    let lingo = |m: &ByPrecision| [0, 1, 2].map(|i| Some(m.median(i)));
    let rows = [
        ("Lingo".to_string(), lingo(&bert)),
        (
            versions[0].clone(),
            [
                other("bert_torch_f32"),
                other("bert_torch_int8"),
                other("bert_torch_bf16"),
            ],
        ),
        (
            versions[1].clone(),
            [other("bert_ort_f32"), other("bert_ort_int8"), None],
        ),
    ];
    for (name, [f, q, b]) in &rows {
        if f.is_some() {
            println!(
                "{name:<22} {:>9} {:>9} {:>9} {:>10} {:>10}",
                cell(*f),
                cell(*q),
                cell(*b),
                ratio(*f, *q),
                ratio(*f, *b)
            );
        }
    }
    for (name, [_, q, b]) in &rows[1..] {
        for (label, theirs, ours) in [("int8", q, bert.median(1)), ("bf16", b, bert.median(2))] {
            if let Some(t) = theirs {
                println!(
                    "Lingo {label} against {name} {label}: {:.2}× faster",
                    t / ours
                );
            }
        }
    }
    let mb = |b: usize| b as f64 / 1e6;
    println!(
        "weights in memory: f32 {:.0} MB, int8 {:.0} MB, bf16 {:.0} MB (embeddings: f32 in int8, \
         bf16 in bf16)",
        mb(bert.held[0]),
        mb(bert.held[1]),
        mb(bert.held[2])
    );
    if let Some(e) = reference
        .as_ref()
        .and_then(|r| r.timings.get("onnxruntime_error"))
    {
        println!("(ONNX Runtime unavailable: {e})");
    }

    println!("\nGPT-2 124M greedy decoding, 128 new tokens after 32, random weights (tokens/s)");
    header();
    let rate = |ms: f64| NEW_TOKENS / ms * 1e3;
    let gpt_rows = [
        ("Lingo".to_string(), lingo(&gpt)),
        (
            versions[0].clone(),
            [
                other("gpt2_torch_f32"),
                other("gpt2_torch_int8"),
                other("gpt2_torch_bf16"),
            ],
        ),
    ];
    for (name, [f, q, b]) in &gpt_rows {
        if f.is_some() {
            println!(
                "{name:<22} {:>9} {:>9} {:>9} {:>10} {:>10}",
                cell(f.map(rate)),
                cell(q.map(rate)),
                cell(b.map(rate)),
                ratio(*f, *q),
                ratio(*f, *b)
            );
        }
    }
    println!(
        "weights in memory: f32 {:.0} MB, int8 {:.0} MB, bf16 {:.0} MB (the token and position \
         tables: f32 in int8, bf16 in bf16; the tied head is an int8 copy, or reads the bf16 table)",
        mb(gpt.held[0]),
        mb(gpt.held[1]),
        mb(gpt.held[2])
    );
    let streamed = |i: usize| gpt.streamed[i] as f64 * rate(gpt.median(i)) / 1e9;
    println!(
        "linear weights read per token: f32 {:.0} MB, int8 {:.0} MB, bf16 {:.0} MB → {:.1}, \
         {:.1} and {:.1} GB/s against this machine's {bandwidth:.1} GB/s read bandwidth \
         ({threads} threads)",
        mb(gpt.streamed[0]),
        mb(gpt.streamed[1]),
        mb(gpt.streamed[2]),
        streamed(0),
        streamed(1),
        streamed(2),
    );

    println!("\nOne linear layer, 128 rows (median ms)");
    println!(
        "{:<22} {:>10} {:>11} {:>11} {:>12} {:>16}",
        "in → out", "Lingo f32", "Lingo int8", "Lingo bf16", "candle Q8_0", "Q8_0 / int8"
    );
    for s in &shapes {
        println!(
            "{:<22} {:>10.3} {:>11.3} {:>11.3} {:>12.3} {:>15.2}×",
            format!("{} → {}", s.inp, s.out),
            s.f32_ms,
            s.int8_ms,
            s.bf16_ms,
            s.q8_0_ms,
            s.q8_0_ms / s.int8_ms
        );
    }

    if let Some(path) = json {
        let value = serde_json::json!({
            "threads": threads,
            "kernel": kernel.name(),
            "bf16_kernels": bf16_kernels,
            "read_bandwidth_gb_s": bandwidth,
            "lingo": {
                "bert_f32": bert.ms[0], "bert_int8": bert.ms[1], "bert_bf16": bert.ms[2],
                "gpt2_f32": gpt.ms[0], "gpt2_int8": gpt.ms[1], "gpt2_bf16": gpt.ms[2],
                "gpt2_linear_bytes_f32": gpt.streamed[0], "gpt2_linear_bytes_int8": gpt.streamed[1],
                "gpt2_linear_bytes_bf16": gpt.streamed[2],
                "bert_weight_bytes_f32": bert.held[0], "bert_weight_bytes_int8": bert.held[1],
                "bert_weight_bytes_bf16": bert.held[2],
                "gpt2_weight_bytes_f32": gpt.held[0], "gpt2_weight_bytes_int8": gpt.held[1],
                "gpt2_weight_bytes_bf16": gpt.held[2],
                "layers": shapes.iter().map(|s| serde_json::json!({
                    "in": s.inp, "out": s.out, "f32_ms": s.f32_ms, "int8_ms": s.int8_ms,
                    "bf16_ms": s.bf16_ms, "candle_q8_0_ms": s.q8_0_ms,
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
    bf16_ms: f64,
    q8_0_ms: f64,
}

/// BERT-base's three linear shapes at 128 rows: Lingo's f32 product (the `[in, out]` copy it
/// keeps for inference), Lingo's int8 and bf16 products, candle's Q8_0 `QMatMul`.
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
        let bf16 = Arc::new(Bf16Matrix::from_f32(
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
            bf16_ms: time(&|| lingo_kernels::linear_bf16(&x, &bf16, None))?,
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
