//! A load generator for `lingo bench serve`: requests to a server on this machine at a fixed
//! concurrency or a constant arrival rate, bounded in requests and in time, measuring what
//! serving papers report — requests/s, time to first token, time per output token and
//! inter-token latency (p50/p99), errors by status — while a prober times `/health` and the
//! server's peak memory is read from `/proc`. It speaks plain HTTP/1.1 over loopback only.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How requests arrive.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// This many clients, each sending its next request when the last is answered.
    Concurrency(usize),
    /// Requests sent at this many per second, whatever the answers (an open loop).
    Rate(f64),
}

/// What each request asks.
#[derive(Clone, Debug)]
pub struct Workload {
    pub path: String,
    pub body: String,
    /// A server-sent event stream: each `data:` event with text is one output token.
    pub streaming: bool,
}

#[derive(Clone, Debug)]
pub struct Load {
    pub shape: Shape,
    pub requests: usize,
    pub max_duration: Duration,
}

/// One request's timings.
#[derive(Debug, Default)]
struct Sample {
    status: u16,
    latency: f64,
    first_token: Option<f64>,
    token_gaps: Vec<f64>,
    tokens: usize,
}

/// Percentiles of a set of seconds, reported in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn quantiles(mut xs: Vec<f64>) -> Quantiles {
    if xs.is_empty() {
        return Quantiles::default();
    }
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize] * 1e3;
    Quantiles {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub requests: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    /// Output tokens per second over the run (streaming workloads).
    pub tokens_per_second: f64,
    pub latency: Quantiles,
    pub time_to_first_token: Quantiles,
    /// (last token − first token) / (tokens − 1), per request.
    pub time_per_output_token: Quantiles,
    pub inter_token_latency: Quantiles,
    /// Answers by status (0: no answer — the connection failed).
    pub statuses: BTreeMap<u16, usize>,
    /// The slowest `/health` answer while the load ran.
    pub health_max_ms: f64,
    /// The server's peak resident memory (`VmHWM`), if its process is known.
    pub peak_memory_mb: Option<f64>,
}

/// Sends one request and reads the whole answer, timing the stream's events.
async fn one_request(addr: SocketAddr, workload: &Workload) -> Sample {
    let started = Instant::now();
    let mut sample = Sample::default();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return sample;
    };
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        workload.path,
        workload.body.len(),
        workload.body
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return sample;
    }
    let mut seen = Vec::new();
    let mut scanned = 0;
    let mut last_token: Option<Instant> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.extend_from_slice(&buf[..n]);
        if sample.status == 0 && seen.len() >= 12 {
            sample.status = std::str::from_utf8(&seen[9..12])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        if !workload.streaming {
            continue;
        }
        // Count the events that completed in this read: each with text is a token.
        let now = Instant::now();
        while let Some(end) = find(&seen[scanned..], b"\n\n") {
            let event = &seen[scanned..scanned + end];
            scanned += end + 2;
            let text = String::from_utf8_lossy(event);
            if text.contains("data: {") && has_text(&text) {
                sample.tokens += 1;
                match last_token {
                    None => sample.first_token = Some((now - started).as_secs_f64()),
                    Some(t) => sample.token_gaps.push((now - t).as_secs_f64()),
                }
                last_token = Some(now);
            }
        }
    }
    sample.latency = started.elapsed().as_secs_f64();
    sample
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether an event's JSON carries generated text (not only a finish reason or usage).
fn has_text(event: &str) -> bool {
    let Some(json) = event.split("data: ").nth(1) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json.trim()) else {
        return false;
    };
    let choice = &v["choices"][0];
    let text = choice["text"]
        .as_str()
        .or_else(|| choice["delta"]["content"].as_str())
        .unwrap_or_default();
    !text.is_empty()
}

/// The peak resident memory of process `pid`, in MB (Linux).
pub fn peak_memory_mb(pid: u32) -> Option<f64> {
    memory_mb(pid, "VmHWM:")
}

/// A memory field of process `pid`'s `/proc/PID/status` (`VmHWM:`, `VmRSS:`, …) in MB (Linux).
pub fn memory_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `GET /health`'s status and how long it took.
pub async fn health(addr: SocketAddr) -> Option<(u16, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let status = std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()?;
    Some((status, started.elapsed()))
}

/// Runs `load` against the server at `addr` (a loopback address), whose process is `pid`.
pub async fn run(
    addr: SocketAddr,
    pid: Option<u32>,
    workload: Workload,
    load: Load,
) -> Result<Report, String> {
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr}: the load generator only targets this machine (127.0.0.1 or ::1)"
        ));
    }
    let samples = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = started + load.max_duration;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((_, took)) = health(addr).await {
                    worst = worst.max(took);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            worst
        })
    };
    let workload = Arc::new(workload);
    let mut tasks = Vec::new();
    match load.shape {
        Shape::Concurrency(clients) => {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for _ in 0..clients.max(1) {
                let (next, samples, workload) = (next.clone(), samples.clone(), workload.clone());
                let requests = load.requests;
                tasks.push(tokio::spawn(async move {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests
                        && Instant::now() < deadline
                    {
                        let s = one_request(addr, &workload).await;
                        samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                    }
                }));
            }
        }
        Shape::Rate(per_second) => {
            let gap = Duration::from_secs_f64(1.0 / per_second.max(1e-3));
            for i in 0..load.requests {
                let at = started + gap * i as u32;
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let (samples, workload) = (samples.clone(), workload.clone());
                tasks.push(tokio::spawn(async move {
                    let s = one_request(addr, &workload).await;
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                }));
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let health_max = prober.await.unwrap_or_default();
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    let mut statuses = BTreeMap::new();
    for s in &samples {
        *statuses.entry(s.status).or_insert(0) += 1;
    }
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.status == 200).collect();
    let tokens: usize = ok.iter().map(|s| s.tokens).sum();
    Ok(Report {
        requests: samples.len(),
        seconds,
        requests_per_second: ok.len() as f64 / seconds,
        tokens_per_second: tokens as f64 / seconds,
        latency: quantiles(ok.iter().map(|s| s.latency).collect()),
        time_to_first_token: quantiles(ok.iter().filter_map(|s| s.first_token).collect()),
        time_per_output_token: quantiles(
            ok.iter()
                .filter(|s| s.token_gaps.len() > 1)
                .map(|s| s.token_gaps.iter().sum::<f64>() / s.token_gaps.len() as f64)
                .collect(),
        ),
        inter_token_latency: quantiles(ok.iter().flat_map(|s| s.token_gaps.clone()).collect()),
        statuses,
        health_max_ms: health_max.as_secs_f64() * 1e3,
        peak_memory_mb: pid.and_then(peak_memory_mb),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_text_events() {
        let q = quantiles((1..=100).map(|i| i as f64 / 1000.0).collect());
        assert!(
            (q.p50_ms - 51.0).abs() < 1e-9 && (q.p99_ms - 99.0).abs() < 1e-9,
            "{q:?}"
        );
        assert!(has_text(r#"data: {"choices":[{"text":" w5"}]}"#));
        assert!(has_text(r#"data: {"choices":[{"delta":{"content":"x"}}]}"#));
        assert!(!has_text(
            r#"data: {"choices":[{"text":"","finish_reason":"length"}]}"#
        ));
        assert!(!has_text(r#"data: {"choices":[],"usage":{}}"#));
    }
}
