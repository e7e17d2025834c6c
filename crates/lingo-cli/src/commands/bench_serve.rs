//! `lingo bench serve`: load on `lingo serve`, beside the server a Python user would write
//! (`tools/serve_reference.py`: FastAPI, uvicorn, `transformers`) under the same load, in the same
//! run. Each server runs as its own process on a loopback port, so its peak memory is its own.
//!
//! Models: a GPT-2-small-shaped decoder (12 layers, 768 wide, 50,257 tokens, random weights) and
//! an embedding encoder (all-MiniLM-L6-v2 with `--embedding-model`, else its shape with random
//! weights). Their tokenizer is synthetic — 50,257 (or 30,522) words `w0 w1 …` — so every token
//! is one word: a prompt of 32 words is 32 tokens and each streamed event is one token, on both
//! servers alike.

use anyhow::{bail, Context};
use clap::Args;
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_serve::load::{self, Load, Report, Shape, Workload};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REFERENCE: &str = include_str!("../../../../tools/serve_reference.py");

#[derive(Args, Clone)]
pub struct ServeLoad {
    /// Concurrent clients of the generation and encoder runs.
    #[arg(long, default_value_t = 8, help_heading = "lingo bench serve")]
    concurrency: usize,
    /// Requests of each generation run.
    #[arg(long, default_value_t = 32, help_heading = "lingo bench serve")]
    requests: usize,
    /// Arrival rate of the constant-rate run, requests per second.
    #[arg(long, default_value_t = 2.0, help_heading = "lingo bench serve")]
    rate: f64,
    /// Tokens per prompt and generated tokens per request.
    #[arg(long, default_value_t = 32, help_heading = "lingo bench serve")]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 32, help_heading = "lingo bench serve")]
    output_tokens: usize,
    /// The overload run: --max-concurrent-requests of the server (clients are 4×).
    #[arg(long, default_value_t = 4, help_heading = "lingo bench serve")]
    overload_limit: usize,
    /// Requests of each embedding run.
    #[arg(long, default_value_t = 256, help_heading = "lingo bench serve")]
    embed_requests: usize,
    /// A sentence-transformers folder for the embedding runs (all-MiniLM-L6-v2); default: its
    /// shape with random weights.
    #[arg(long, help_heading = "lingo bench serve")]
    embedding_model: Option<PathBuf>,
    /// Each run stops after this many seconds, whatever is left.
    #[arg(long, default_value_t = 300, help_heading = "lingo bench serve")]
    max_seconds: u64,
}

/// A server process on a loopback port.
struct Served {
    child: Child,
    addr: SocketAddr,
    name: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn started(mut child: Child, port: u16, name: &str) -> anyhow::Result<Served> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some((200, _)) = load::health(addr).await {
            return Ok(Served {
                child,
                addr,
                name: name.into(),
            });
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited ({status}) before answering /health");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{name} did not become healthy within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lingo_server(
    models: &[(&str, &Path)],
    extra: &[String],
    name: &str,
) -> anyhow::Result<Served> {
    let port = free_port()?;
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("serve").arg("--port").arg(port.to_string());
    for (n, dir) in models {
        command.arg("--model").arg(format!("{n}={}", dir.display()));
    }
    command
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    started(command.spawn().context("starting lingo serve")?, port, name).await
}

async fn python_server(
    python: &str,
    script: &Path,
    dir: &Path,
    kind: &str,
) -> anyhow::Result<Served> {
    let port = free_port()?;
    let child = Command::new(python)
        .arg(script)
        .args(["--model", &dir.display().to_string(), "--kind", kind])
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {python} {}", script.display()))?;
    started(child, port, "python").await
}

/// A tokenizer of `n` words `w0 … w{n-1}`, split on whitespace, `w0` standing for unknown words.
fn synthetic_tokenizer(n: usize) -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..n).map(|i| (format!("w{i}"), json!(i))).collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    })
}

fn write_folder(dir: &Path, config: serde_json::Value, vocab: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let loaded = AutoModel::init(dir, config, &LoadOptions::default())?;
    lingo_models::hf::save_folder(dir, &loaded.config, &loaded.store, &loaded.names)?;
    std::fs::write(
        dir.join("tokenizer.json"),
        synthetic_tokenizer(vocab).to_string(),
    )?;
    Ok(())
}

fn gpt2_small(dir: &Path) -> anyhow::Result<()> {
    let config = json!({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257,
        "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "bos_token_id": 50256, "eos_token_id": 50256, "tie_word_embeddings": true,
    });
    write_folder(dir, config, 50257)
}

fn minilm_shaped(dir: &Path) -> anyhow::Result<()> {
    let config = json!({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": 30522,
        "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
        "intermediate_size": 1536, "max_position_embeddings": 512, "type_vocab_size": 2,
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02,
        "pad_token_id": 0,
    });
    write_folder(dir, config, 30522)
}

fn words(n: usize, offset: usize) -> String {
    (0..n)
        .map(|i| format!("w{}", 1000 + (offset * 7919 + i * 104_729) % 29_000))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One measured run of one server.
struct Run {
    scenario: &'static str,
    server: String,
    report: Report,
}

fn print_report(r: &Run) {
    let s = &r.report;
    let statuses: Vec<String> = s
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!(
        "  {:<28} {:<16} {:>7.2} req/s  latency p50/p99 {:>7.1}/{:>7.1} ms  /health max {:>5.1} ms  peak {:>5.0} MB  [{}]",
        r.scenario,
        r.server,
        s.requests_per_second,
        s.latency.p50_ms,
        s.latency.p99_ms,
        s.health_max_ms,
        s.peak_memory_mb.unwrap_or(f64::NAN),
        statuses.join(", ")
    );
    if s.tokens_per_second > 0.0 {
        println!(
            "  {:<45} {:>7.1} tok/s  TTFT p50/p99 {:.1}/{:.1} ms  TPOT p50/p99 {:.1}/{:.1} ms  ITL p50/p99 {:.1}/{:.1} ms",
            "",
            s.tokens_per_second,
            s.time_to_first_token.p50_ms,
            s.time_to_first_token.p99_ms,
            s.time_per_output_token.p50_ms,
            s.time_per_output_token.p99_ms,
            s.inter_token_latency.p50_ms,
            s.inter_token_latency.p99_ms,
        );
    }
}

impl ServeLoad {
    fn generation(&self, i: usize, stream: bool, max_tokens: usize) -> Workload {
        let body = json!({
            "model": "gpt", "prompt": words(self.prompt_tokens, i), "max_tokens": max_tokens,
            "temperature": 1.0, "seed": i, "ignore_eos": true, "stream": stream,
        });
        Workload {
            path: "/v1/completions".into(),
            body: body.to_string(),
            streaming: stream,
        }
    }

    fn embedding(&self) -> Workload {
        let sentence =
            "The quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat.";
        let body = json!({"model": "minilm", "input": sentence});
        Workload {
            path: "/v1/embeddings".into(),
            body: body.to_string(),
            streaming: false,
        }
    }

    fn bounded(&self, shape: Shape, requests: usize) -> Load {
        Load {
            shape,
            requests,
            max_duration: Duration::from_secs(self.max_seconds),
        }
    }

    async fn measure(
        &self,
        scenario: &'static str,
        server: &Served,
        workload: Workload,
        load: Load,
        runs: &mut Vec<Run>,
    ) -> anyhow::Result<()> {
        let report = load::run(server.addr, Some(server.child.id()), workload, load)
            .await
            .map_err(anyhow::Error::msg)?;
        let run = Run {
            scenario,
            server: server.name.clone(),
            report,
        };
        print_report(&run);
        runs.push(run);
        Ok(())
    }

    /// Embeddings at twice the generation runs' concurrency, after a warm-up.
    async fn embedding_run(&self, server: &Served, runs: &mut Vec<Run>) -> anyhow::Result<()> {
        load::run(
            server.addr,
            None,
            self.embedding(),
            self.bounded(Shape::Concurrency(1), 4),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        self.measure(
            "embeddings, concurrency",
            server,
            self.embedding(),
            self.bounded(
                Shape::Concurrency(self.concurrency * 2),
                self.embed_requests,
            ),
            runs,
        )
        .await
    }

    /// Generation at fixed concurrency and at a constant rate, then embeddings.
    async fn standard_runs(
        &self,
        server: &Served,
        embed: Option<&Served>,
        runs: &mut Vec<Run>,
    ) -> anyhow::Result<()> {
        let c = self.concurrency;
        // Warm-up: the first request pays for page faults and thread start-up.
        load::run(
            server.addr,
            None,
            self.generation(0, true, 4),
            self.bounded(Shape::Concurrency(1), 2),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let gen = self.generation(1, true, self.output_tokens);
        self.measure(
            "generation, concurrency",
            server,
            gen.clone(),
            self.bounded(Shape::Concurrency(c), self.requests),
            runs,
        )
        .await?;
        self.measure(
            "generation, constant rate",
            server,
            gen,
            self.bounded(Shape::Rate(self.rate), self.requests),
            runs,
        )
        .await?;
        if let Some(embed) = embed {
            self.embedding_run(embed, runs).await?;
        }
        Ok(())
    }

    pub async fn run(&self, python: Option<&str>, json_out: Option<&Path>) -> anyhow::Result<()> {
        let work = tempfile::tempdir()?;
        let gpt = work.path().join("gpt2-small");
        println!(
            "writing a GPT-2-small-shaped model (random weights) to {} ...",
            gpt.display()
        );
        gpt2_small(&gpt)?;
        let minilm = match &self.embedding_model {
            Some(dir) => dir.clone(),
            None => {
                let dir = work.path().join("minilm");
                minilm_shaped(&dir)?;
                dir
            }
        };
        let c = self.concurrency;
        println!(
            "load: {} requests per run; prompts of {} tokens, {} generated (sampled, ignore_eos); concurrency {c}; rate {}/s; {} embedding requests at concurrency {}",
            self.requests,
            self.prompt_tokens,
            self.output_tokens,
            self.rate,
            self.embed_requests,
            c * 2
        );
        let mut runs = Vec::new();
        let models = [("gpt", gpt.as_path()), ("minilm", minilm.as_path())];
        {
            // One process per model, as the reference runs them, so each peak memory is one model's.
            let lingo = lingo_server(&models[..1], &[], "lingo").await?;
            let embed = lingo_server(&models[1..], &[], "lingo").await?;
            self.standard_runs(&lingo, Some(&embed), &mut runs).await?;
        }
        {
            let one_at_a_time = ["--max-batch-tokens".to_string(), "1".into()];
            let lingo = lingo_server(&models[1..], &one_at_a_time, "lingo unbatched").await?;
            self.embedding_run(&lingo, &mut runs).await?;
        }
        {
            let limit = self.overload_limit.max(1);
            let extra = ["--max-concurrent-requests".to_string(), limit.to_string()];
            let lingo = lingo_server(&models[..1], &extra, "lingo").await?;
            let gen = self.generation(2, true, self.output_tokens);
            self.measure(
                "overload: 4x the limit",
                &lingo,
                gen,
                self.bounded(Shape::Concurrency(4 * limit), self.requests * 2),
                &mut runs,
            )
            .await?;
            let overload = &runs[runs.len() - 1].report;
            let unexpected: usize = overload
                .statuses
                .iter()
                .filter(|(s, _)| **s != 200 && **s != 429)
                .map(|(_, n)| n)
                .sum();
            println!(
                "  overload: {} answered, {} refused with 429, {unexpected} other failures; /health at most {:.1} ms",
                overload.statuses.get(&200).unwrap_or(&0),
                overload.statuses.get(&429).unwrap_or(&0),
                overload.health_max_ms
            );
        }
        if let Some(python) = python {
            let script = work.path().join("serve_reference.py");
            std::fs::write(&script, REFERENCE)?;
            let reference = python_server(python, &script, &gpt, "generate").await?;
            let embed = python_server(python, &script, &minilm, "embed").await?;
            self.standard_runs(&reference, Some(&embed), &mut runs)
                .await?;
            println!("\nLingo beside transformers + FastAPI (same load, same machine):");
            for scenario in [
                "generation, concurrency",
                "generation, constant rate",
                "embeddings, concurrency",
            ] {
                let find = |server: &str| {
                    runs.iter()
                        .find(|r| r.scenario == scenario && r.server == server)
                };
                if let (Some(l), Some(p)) = (find("lingo"), find("python")) {
                    println!(
                        "  {scenario:<28} requests/s {:.2}x   p99 latency {:.2}x lower   peak memory {:.0} vs {:.0} MB",
                        l.report.requests_per_second / p.report.requests_per_second,
                        p.report.latency.p99_ms / l.report.latency.p99_ms,
                        l.report.peak_memory_mb.unwrap_or(f64::NAN),
                        p.report.peak_memory_mb.unwrap_or(f64::NAN),
                    );
                }
            }
        }
        let batched = runs
            .iter()
            .find(|r| r.scenario == "embeddings, concurrency" && r.server == "lingo");
        let single = runs.iter().find(|r| r.server == "lingo unbatched");
        if let (Some(b), Some(s)) = (batched, single) {
            println!(
                "  encoder batching: {:.2}x the requests/s of one at a time",
                b.report.requests_per_second / s.report.requests_per_second
            );
        }
        if let Some(path) = json_out {
            let rows: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| json!({"scenario": r.scenario, "server": r.server, "report": r.report}))
                .collect();
            std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
        }
        Ok(())
    }
}
