//! `lingo bench attention`: self-attention over long sequences — Lingo's dense fused kernel, its
//! sliding-window kernel, Linformer (projected to `--window` rows; not causal) and Reformer's LSH
//! (a bucket per 64 positions, chunks of 64, 2 rounds) beside PyTorch's SDPA (dense, and with a
//! band mask) — forward and forward+backward time and the peak memory each adds, every
//! measurement in a fresh process.
//! Writes a log–log plot of both against the sequence length.

use super::bench::{bench_pytorch, median, time_ms};
use candle_core::{Tensor, Var};
use clap::Args;
use lingo_kernels::window_attention::{window_attention, Window};
use lingo_kernels::AttentionMask;
use lingo_nn::{Linformer, Lsh, Pattern};
use lingo_viz::{scaling_plot, Panel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = include_str!("../../../../tools/bench_attention.py");

/// Lingo's attentions, by their config names.
const KINDS: [&str; 4] = ["dense", "window", "linformer", "lsh"];

#[derive(Args, Clone)]
pub struct AttentionBench {
    /// Sequence lengths.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "512,1024,2048,4096,8192,16384",
        help_heading = "lingo bench attention"
    )]
    lengths: Vec<usize>,
    /// Heads × head width of the attention (batch 1).
    #[arg(long, default_value_t = 4, help_heading = "lingo bench attention")]
    heads: usize,
    #[arg(long, default_value_t = 64, help_heading = "lingo bench attention")]
    head_dim: usize,
    /// Keys each query sees in the windowed runs.
    #[arg(long, default_value_t = 256, help_heading = "lingo bench attention")]
    window: usize,
    /// Where to draw the log–log plot.
    #[arg(
        long,
        default_value = "attention-scaling.png",
        help_heading = "lingo bench attention"
    )]
    plot: PathBuf,
    /// Redraw the tables and the plot from the `--json` of an earlier run instead of measuring.
    #[arg(long, help_heading = "lingo bench attention")]
    from_json: Option<PathBuf>,
    /// One measurement, `KIND:LENGTH` (what the benchmark runs in a child process).
    #[arg(long, hide = true)]
    one: Option<String>,
}

/// A measured method's name and its result at a length.
type Method<'a> = (String, Box<dyn Fn(usize) -> Option<Measured> + 'a>);

/// One measurement: median milliseconds and the peak resident memory it added.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Measured {
    forward_ms: f64,
    forward_backward_ms: f64,
    peak_mb: f64,
}

/// A memory field of this process's /proc/self/status in MB.
fn status_mb(field: &str) -> f64 {
    lingo_serve::load::memory_mb(std::process::id(), field).unwrap_or(f64::NAN)
}

impl AttentionBench {
    pub fn run(
        &self,
        iters: usize,
        python: Option<&str>,
        json: Option<&Path>,
    ) -> anyhow::Result<()> {
        if let Some(one) = &self.one {
            let (kind, t) = one
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--one KIND:LENGTH"))?;
            let m = self.measure(kind, t.parse()?, iters)?;
            println!("{}", serde_json::to_string(&m)?);
            return Ok(());
        }
        let threads = rayon::current_num_threads();
        println!(
            "Causal self-attention, batch 1, {} heads × {}, window {}, {threads} threads; \
             median ms, each measurement in its own process",
            self.heads, self.head_dim, self.window
        );
        let (lingo, reference) = match &self.from_json {
            Some(path) => Self::read_results(path)?,
            None => (
                self.measure_lingo(iters)?,
                self.measure_pytorch(python, iters, threads),
            ),
        };
        let torch = |key: &str| -> Option<Measured> {
            serde_json::from_value(reference.as_ref()?.get("timings")?.get(key)?.clone()).ok()
        };
        let methods: Vec<Method> = vec![
            (
                "Lingo dense".into(),
                Box::new(|t| lingo.get(&format!("dense:{t}")).cloned()),
            ),
            (
                "Lingo window".into(),
                Box::new(|t| lingo.get(&format!("window:{t}")).cloned()),
            ),
            (
                "Lingo Linformer (not causal)".into(),
                Box::new(|t| lingo.get(&format!("linformer:{t}")).cloned()),
            ),
            (
                "Lingo LSH".into(),
                Box::new(|t| lingo.get(&format!("lsh:{t}")).cloned()),
            ),
            (
                "PyTorch SDPA".into(),
                Box::new(move |t| torch(&format!("sdpa:{t}"))),
            ),
            (
                "PyTorch SDPA + band mask".into(),
                Box::new(move |t| torch(&format!("sdpa_window:{t}"))),
            ),
        ];
        let available: Vec<&Method> = methods
            .iter()
            .filter(|(_, m)| self.lengths.iter().any(|&t| m(t).is_some()))
            .collect();
        let table = |title: &str, value: &dyn Fn(&Measured) -> f64, unit: &str| {
            println!("\n{title} ({unit})");
            print!("{:<30}", "length");
            for t in &self.lengths {
                print!("{t:>10}");
            }
            println!();
            for (name, m) in &available {
                print!("{name:<30}");
                for &t in &self.lengths {
                    match m(t) {
                        Some(x) => print!("{:>10.1}", value(&x)),
                        None => print!("{:>10}", "—"),
                    }
                }
                println!();
            }
        };
        table("forward", &|m| m.forward_ms, "ms");
        table("forward + backward", &|m| m.forward_backward_ms, "ms");
        table(
            "peak memory added by forward + backward",
            &|m| m.peak_mb,
            "MB",
        );
        if let (Some(first), Some(last)) = (self.lengths.first(), self.lengths.last()) {
            println!("\nslopes of log time and log memory against log length, {first} → {last}:");
            for (name, m) in &available {
                if let (Some(a), Some(b)) = (m(*first), m(*last)) {
                    let x = (*last as f64 / *first as f64).ln();
                    println!(
                        "{name:<30} time {:.2}, memory {:.2}",
                        (b.forward_backward_ms / a.forward_backward_ms).ln() / x,
                        (b.peak_mb.max(1e-3) / a.peak_mb.max(1e-3)).ln() / x
                    );
                }
            }
            let window = |t| lingo.get(&format!("window:{t}"));
            if let (Some(w), Some(p)) = (window(*last), torch(&format!("sdpa:{last}"))) {
                println!(
                    "at {last}: Lingo window {:.1}× faster than PyTorch SDPA (forward + backward)",
                    p.forward_backward_ms / w.forward_backward_ms
                );
            }
        }
        let series = |value: fn(&Measured) -> f64| {
            available
                .iter()
                .map(|(name, m)| {
                    let pts = self
                        .lengths
                        .iter()
                        .filter_map(|&t| m(t).map(|x| (t as f64, value(&x))))
                        .collect();
                    (name.clone(), pts)
                })
                .collect()
        };
        let panels = [
            Panel {
                caption: "forward + backward".into(),
                y_label: "ms".into(),
                series: series(|m| m.forward_backward_ms),
            },
            Panel {
                caption: "peak memory added".into(),
                y_label: "MB".into(),
                series: series(|m| m.peak_mb),
            },
        ];
        scaling_plot(
            &panels,
            "sequence length",
            &self.plot,
            "Causal self-attention",
        )?;
        println!("plot: {}", self.plot.display());
        if let Some(path) = json {
            let value = serde_json::json!({
                "lingo": lingo,
                "reference": reference,
                "heads": self.heads, "head_dim": self.head_dim, "window": self.window,
            });
            std::fs::write(path, serde_json::to_string_pretty(&value)?)?;
        }
        Ok(())
    }

    /// Lingo's measurements, each in a child process.
    fn measure_lingo(&self, iters: usize) -> anyhow::Result<BTreeMap<String, Measured>> {
        let mut lingo = BTreeMap::new();
        for kind in KINDS {
            for &t in &self.lengths {
                println!("timing Lingo {kind} at {t} ...");
                lingo.insert(format!("{kind}:{t}"), self.child(kind, t, iters)?);
            }
        }
        Ok(lingo)
    }

    /// PyTorch's (tools/bench_attention.py), `None` without Python or torch.
    fn measure_pytorch(
        &self,
        python: Option<&str>,
        iters: usize,
        threads: usize,
    ) -> Option<serde_json::Value> {
        match python {
            None => None,
            Some(python) => {
                println!("timing PyTorch with {python} ...");
                let lengths: Vec<String> = self.lengths.iter().map(|t| t.to_string()).collect();
                let args = [
                    "--lengths".to_string(),
                    lengths.join(","),
                    "--heads".into(),
                    self.heads.to_string(),
                    "--dim".into(),
                    self.head_dim.to_string(),
                    "--window".into(),
                    self.window.to_string(),
                ];
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                match bench_pytorch(python, SCRIPT, &args, iters, threads) {
                    Ok(r) => Some(serde_json::json!({"torch": r.torch, "timings": r.timings})),
                    Err(e) => {
                        println!("the PyTorch side is unavailable ({e}); Lingo's figures only");
                        None
                    }
                }
            }
        }
    }

    /// A `--json` file an earlier run wrote: Lingo's measurements and the reference's.
    fn read_results(
        path: &Path,
    ) -> anyhow::Result<(BTreeMap<String, Measured>, Option<serde_json::Value>)> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not valid JSON ({e})", path.display()))?;
        let lingo = serde_json::from_value(json["lingo"].clone())
            .map_err(|e| anyhow::anyhow!("{}: field `lingo`: {e}", path.display()))?;
        Ok((
            lingo,
            json.get("reference").filter(|r| !r.is_null()).cloned(),
        ))
    }

    /// Runs one measurement in a child process, so its peak memory is its own.
    fn child(&self, kind: &str, t: usize, iters: usize) -> anyhow::Result<Measured> {
        let out = Command::new(std::env::current_exe()?)
            .args([
                "bench",
                "attention",
                "--no-python",
                "--one",
                &format!("{kind}:{t}"),
            ])
            .args([
                "--iters",
                &iters.to_string(),
                "--window",
                &self.window.to_string(),
            ])
            .args([
                "--heads",
                &self.heads.to_string(),
                "--head-dim",
                &self.head_dim.to_string(),
            ])
            .output()?;
        if !out.status.success() {
            anyhow::bail!("{kind} at {t}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(serde_json::from_str(
            stdout.lines().last().unwrap_or_default(),
        )?)
    }

    /// Times `kind` (dense or window) at length `t` in this process.
    fn measure(&self, kind: &str, t: usize, iters: usize) -> anyhow::Result<Measured> {
        let shape = (1, t, self.heads, self.head_dim);
        let dev = candle_core::Device::Cpu;
        let [q, k, v] = [1u64, 2, 3].map(|seed| {
            let values =
                lingo_kernels::gradcheck::pseudo_random(t * self.heads * self.head_dim, seed);
            Tensor::from_vec(values, shape, &dev).and_then(|x| Var::from_tensor(&x))
        });
        let (q, k, v) = (q?, k?, v?);
        let window = Window::causal(self.window);
        let causal = AttentionMask {
            causal: true,
            ..Default::default()
        };
        // Linformer projects to `--window` rows (it cannot be causal); LSH hashes into one bucket
        // per 64 positions and attends in chunks of 64, twice.
        let projection = |seed| {
            let values = lingo_kernels::gradcheck::pseudo_random(self.window * t, seed);
            Tensor::from_vec(values, (self.window, t), &dev).and_then(|x| Var::from_tensor(&x))
        };
        let pattern = match kind {
            "linformer" => Pattern::Linformer(Linformer {
                e: projection(4)?.as_tensor().clone(),
                f: projection(5)?.as_tensor().clone(),
            }),
            "lsh" => {
                let buckets = (t / 64).max(2).next_multiple_of(2);
                Pattern::Lsh(Lsh::new(self.head_dim, buckets, 2, 64, 1, &dev)?)
            }
            _ => Pattern::Dense,
        };
        let attend = || -> candle_core::Result<Tensor> {
            match kind {
                "dense" => lingo_kernels::attention(&q, &k, &v, &causal),
                "window" => window_attention(&q, &k, &v, window, &AttentionMask::default()),
                "linformer" => Ok(pattern
                    .attend(&q, &k, &v, &AttentionMask::default(), false)?
                    .0),
                _ => Ok(pattern.attend(&q, &k, &v, &causal, false)?.0),
            }
        };
        let iters = if t > 4096 { 1 } else { iters.max(1) };
        let base = status_mb("VmRSS:");
        let forward = time_ms(iters, 1, || {
            attend()?;
            Ok(())
        })?;
        let both = time_ms(iters, 1, || {
            let grads = attend()?.sum_all()?.backward()?;
            drop(grads);
            Ok(())
        })?;
        Ok(Measured {
            forward_ms: median(&forward),
            forward_backward_ms: median(&both),
            peak_mb: status_mb("VmHWM:") - base,
        })
    }
}
