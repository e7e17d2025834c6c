//! Times the linear layer's three products at bert-mini's shapes in f32 and in bf16.
use candle_core::{Device, Tensor, Var};
use lingo_kernels::mixed_precision::{set_precision, Precision};
use std::time::Instant;

fn time(f: &mut dyn FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    best
}

fn main() -> candle_core::Result<()> {
    for &(rows, inp, out) in &[
        (4096, 256, 256),
        (4096, 256, 1024),
        (4096, 1024, 256),
        (600, 256, 16000),
    ] {
        let x = Tensor::randn(0f32, 1.0, (rows, inp), &Device::Cpu)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.05, (out, inp), &Device::Cpu)?)?;
        let x = Var::from_tensor(&x)?;
        let mut row = format!("{rows}×{inp}→{out}:");
        for p in [Precision::F32, Precision::Bf16] {
            set_precision(p);
            let fwd = time(&mut || {
                lingo_kernels::linear(&x, &w, None).unwrap();
            });
            let both = time(&mut || {
                let y = lingo_kernels::linear(&x, &w, None).unwrap();
                y.sum_all().unwrap().backward().unwrap();
            });
            row += &format!("  {p:?} fwd {fwd:.2} ms, fwd+bwd {both:.2} ms");
        }
        println!("{row}");
    }
    Ok(())
}
