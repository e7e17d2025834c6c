//! The server's counters and histograms, rendered in Prometheus' text format for `GET /metrics`.
//! Hand-written (a few dozen lines) rather than the `metrics` crate family, whose Prometheus
//! exporter brings its own HTTP stack; the series are fixed and few.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// Cumulative-bucket histogram with fixed upper bounds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Debug)]
struct Series {
    /// `(route, status)` → requests answered.
    requests: BTreeMap<(String, u16), u64>,
    /// route → seconds from request to the end of the response body.
    latency: BTreeMap<String, Histogram>,
    /// Seconds between consecutive generated tokens of one sequence.
    token_latency: Histogram,
    /// Seconds from a generation request to its first token.
    first_token: Histogram,
    /// Rows of each encoder batch or generation step.
    batch_size: BTreeMap<&'static str, Histogram>,
    tokens_in: u64,
    tokens_out: u64,
}

/// All series; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    series: Mutex<Series>,
    /// Requests admitted and not yet answered (waiting for a model or running).
    pub in_flight: AtomicI64,
    /// Sequences waiting for a slot in a generation engine.
    pub queued: AtomicI64,
    /// Sequences being generated (in a running batch).
    pub running: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            series: Mutex::new(Series {
                requests: BTreeMap::new(),
                latency: BTreeMap::new(),
                token_latency: Histogram::new(SECONDS),
                first_token: Histogram::new(SECONDS),
                batch_size: BTreeMap::new(),
                tokens_in: 0,
                tokens_out: 0,
            }),
            in_flight: AtomicI64::new(0),
            queued: AtomicI64::new(0),
            running: AtomicI64::new(0),
        }
    }
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Series) -> R) -> R {
        let mut s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    pub fn request(&self, route: &str, status: u16) {
        self.with(|s| *s.requests.entry((route.to_string(), status)).or_default() += 1);
    }

    pub fn request_latency(&self, route: &str, seconds: f64) {
        self.with(|s| {
            s.latency
                .entry(route.to_string())
                .or_insert_with(|| Histogram::new(SECONDS))
                .observe(seconds)
        });
    }

    pub fn token_latency(&self, seconds: f64) {
        self.with(|s| s.token_latency.observe(seconds));
    }

    pub fn first_token(&self, seconds: f64) {
        self.with(|s| s.first_token.observe(seconds));
    }

    /// `kind`: `encoder`, `generation` or `seq2seq`.
    pub fn batch(&self, kind: &'static str, rows: usize) {
        self.with(|s| {
            s.batch_size
                .entry(kind)
                .or_insert_with(|| Histogram::new(SIZES))
                .observe(rows as f64)
        });
    }

    pub fn tokens(&self, input: usize, output: usize) {
        self.with(|s| {
            s.tokens_in += input as u64;
            s.tokens_out += output as u64;
        });
    }

    /// Requests answered with `status` so far, over all routes.
    pub fn count_status(&self, status: u16) -> u64 {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|((_, st), _)| *st == status)
                .map(|(_, n)| n)
                .sum()
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let queued = self.queued.load(Ordering::Relaxed);
        let running = self.running.load(Ordering::Relaxed);
        self.with(|s| {
            out.push_str("# HELP lingo_requests_total Requests answered, by route and status.\n");
            out.push_str("# TYPE lingo_requests_total counter\n");
            for ((route, status), n) in &s.requests {
                let _ = writeln!(
                    out,
                    "lingo_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
            out.push_str("# HELP lingo_request_duration_seconds From request to the end of the response.\n");
            out.push_str("# TYPE lingo_request_duration_seconds histogram\n");
            for (route, h) in &s.latency {
                h.render(
                    &mut out,
                    "lingo_request_duration_seconds",
                    &format!("route=\"{route}\""),
                );
            }
            out.push_str("# HELP lingo_time_per_output_token_seconds Between consecutive generated tokens.\n");
            out.push_str("# TYPE lingo_time_per_output_token_seconds histogram\n");
            s.token_latency
                .render(&mut out, "lingo_time_per_output_token_seconds", "");
            out.push_str("# HELP lingo_time_to_first_token_seconds From a generation request to its first token.\n");
            out.push_str("# TYPE lingo_time_to_first_token_seconds histogram\n");
            s.first_token
                .render(&mut out, "lingo_time_to_first_token_seconds", "");
            out.push_str("# HELP lingo_batch_size Rows per encoder batch or generation step.\n");
            out.push_str("# TYPE lingo_batch_size histogram\n");
            for (kind, h) in &s.batch_size {
                h.render(&mut out, "lingo_batch_size", &format!("kind=\"{kind}\""));
            }
            out.push_str("# TYPE lingo_input_tokens_total counter\n");
            let _ = writeln!(out, "lingo_input_tokens_total {}", s.tokens_in);
            out.push_str("# TYPE lingo_output_tokens_total counter\n");
            let _ = writeln!(out, "lingo_output_tokens_total {}", s.tokens_out);
        });
        out.push_str("# HELP lingo_in_flight_requests Requests admitted and not yet answered.\n");
        out.push_str("# TYPE lingo_in_flight_requests gauge\n");
        let _ = writeln!(out, "lingo_in_flight_requests {in_flight}");
        out.push_str("# HELP lingo_queue_size Sequences waiting for a generation slot.\n");
        out.push_str("# TYPE lingo_queue_size gauge\n");
        let _ = writeln!(out, "lingo_queue_size {queued}");
        out.push_str("# HELP lingo_running_sequences Sequences in a running generation batch.\n");
        out.push_str("# TYPE lingo_running_sequences gauge\n");
        let _ = writeln!(out, "lingo_running_sequences {running}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_text_is_prometheus() {
        let m = Metrics::default();
        m.request("/v1/completions", 200);
        m.request("/v1/completions", 429);
        m.request_latency("/v1/completions", 0.003);
        m.request_latency("/v1/completions", 0.2);
        m.batch("encoder", 3);
        let text = m.render();
        assert!(text.contains("lingo_requests_total{route=\"/v1/completions\",status=\"429\"} 1"));
        assert!(text.contains(
            "lingo_request_duration_seconds_bucket{route=\"/v1/completions\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "lingo_request_duration_seconds_bucket{route=\"/v1/completions\",le=\"0.25\"} 2"
        ));
        assert!(text.contains("lingo_batch_size_bucket{kind=\"encoder\",le=\"2\"} 0"));
        assert!(text.contains("lingo_batch_size_bucket{kind=\"encoder\",le=\"4\"} 1"));
        assert!(text.contains("lingo_time_to_first_token_seconds_count 0"));
        assert_eq!(m.count_status(429), 1);
    }
}
