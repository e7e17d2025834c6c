//! Continuous batching for a decoder-only model: one OS thread owns the model and interleaves every
//! sequence it is given token by token. A new sequence is prefilled alone (its prompt in one
//! forward), then joins the running batch, whose step is one [`CausalLm::forward_rows`] call — one
//! new token for every sequence, each against its own KV cache. A sequence leaves the batch when it
//! stops, reaches its length, or its client has gone (its event receiver was dropped), which frees
//! its slot at once.

use crate::metrics::Metrics;
use candle_core::DType;
use lingo_generate::{last_logits, penalize_repetition, sample, SamplingConfig};
use lingo_models::CausalLm;
use lingo_nn::{KvCache, LingoRng};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Sequences decoded together at most; later ones wait in the queue.
pub const MAX_BATCH_SEQUENCES: usize = 64;

/// One sequence to generate.
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    /// Temperature, top-k/top-p, `max_new_tokens` and the stop tokens (the model's end of text).
    pub sampling: SamplingConfig,
    pub seed: u64,
    pub events: UnboundedSender<Event>,
}

/// What the engine tells a sequence's owner.
#[derive(Debug)]
pub enum Event {
    Token(u32),
    Finished(FinishReason),
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token (or, decided by the caller, a stop string).
    Stop,
    /// `max_new_tokens` or the model's context.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The handle requests are submitted through; the thread ends when every handle is dropped.
#[derive(Clone)]
pub struct Engine {
    queue: mpsc::Sender<(GenerationRequest, Instant)>,
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn spawn(model: Box<dyn CausalLm + Send>, name: &str, metrics: Arc<Metrics>) -> Engine {
        let (queue, requests) = mpsc::channel();
        let thread_metrics = metrics.clone();
        std::thread::Builder::new()
            .name(format!("generate-{name}"))
            .spawn(move || run(&*model, requests, &thread_metrics))
            .expect("spawning a thread");
        Engine { queue, metrics }
    }

    /// Queues a sequence; its tokens arrive on `request.events`.
    pub fn submit(&self, request: GenerationRequest) {
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::SendError((request, _))) = self.queue.send((request, Instant::now())) {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            let _ = request
                .events
                .send(Event::Failed("the generation engine has stopped".into()));
        }
    }
}

/// A sequence in the running batch.
struct Row {
    request: GenerationRequest,
    cache: Vec<KvCache>,
    /// Prompt and generated tokens (for the repetition penalty and the context limit).
    tokens: Vec<u32>,
    generated: usize,
    rng: LingoRng,
}

impl Row {
    /// Samples the next token from `logits` and reports it; false once the row is done.
    fn advance(&mut self, mut logits: Vec<f32>, context: usize) -> bool {
        let cfg = &self.request.sampling;
        penalize_repetition(&mut logits, &self.tokens, cfg.repetition_penalty);
        let next = sample(&logits, cfg, &mut self.rng);
        self.generated += 1;
        self.tokens.push(next);
        let _ = self.request.events.send(Event::Token(next));
        let finish = if cfg.stop_tokens.contains(&next) {
            Some(FinishReason::Stop)
        } else if self.generated >= cfg.max_new_tokens || self.tokens.len() >= context {
            Some(FinishReason::Length)
        } else {
            None
        };
        match finish {
            Some(reason) => {
                let _ = self.request.events.send(Event::Finished(reason));
                false
            }
            None => true,
        }
    }
}

fn run(
    model: &dyn CausalLm,
    requests: mpsc::Receiver<(GenerationRequest, Instant)>,
    metrics: &Metrics,
) {
    let context = model.context_length();
    let mut rows: Vec<Row> = Vec::new();
    // Keeps this engine's share of the running gauge at `n` sequences.
    let mut reported = 0i64;
    let mut report = |n: usize| {
        metrics
            .running
            .fetch_add(n as i64 - reported, Ordering::Relaxed);
        reported = n as i64;
    };
    loop {
        report(rows.len());
        // Idle: sleep until a request comes (or every handle is gone).
        if rows.is_empty() {
            match requests.recv() {
                Ok(next) => admit(model, next, &mut rows, context, metrics),
                Err(_) => return,
            }
        }
        while rows.len() < MAX_BATCH_SEQUENCES {
            match requests.try_recv() {
                Ok(next) => admit(model, next, &mut rows, context, metrics),
                Err(_) => break,
            }
        }
        // Clients that have gone free their slot before the step is paid for.
        rows.retain(|r| !r.request.events.is_closed());
        report(rows.len());
        if rows.is_empty() {
            continue;
        }
        let started = Instant::now();
        let last: Vec<u32> = rows.iter().map(|r| r.tokens[r.tokens.len() - 1]).collect();
        let mut caches: Vec<&mut [KvCache]> = rows.iter_mut().map(|r| &mut r.cache[..]).collect();
        let logits = model
            .forward_rows(&last, &mut caches)
            .and_then(|l| l.to_dtype(DType::F32)?.to_vec2::<f32>());
        match logits {
            Ok(logits) => {
                metrics.batch("generation", rows.len());
                let mut keep = Vec::with_capacity(rows.len());
                for (mut row, logits) in rows.drain(..).zip(logits) {
                    if row.advance(logits, context) {
                        keep.push(row);
                    }
                }
                rows = keep;
                let seconds = started.elapsed().as_secs_f64();
                for _ in 0..last.len() {
                    metrics.token_latency(seconds);
                }
            }
            Err(e) => {
                for row in rows.drain(..) {
                    let _ = row.request.events.send(Event::Failed(e.to_string()));
                }
            }
        }
    }
}

/// Prefills a new sequence's prompt and samples its first token; it joins `rows` unless already done.
fn admit(
    model: &dyn CausalLm,
    (request, submitted): (GenerationRequest, Instant),
    rows: &mut Vec<Row>,
    context: usize,
    metrics: &Metrics,
) {
    metrics.queued.fetch_sub(1, Ordering::Relaxed);
    if request.events.is_closed() {
        return;
    }
    let mut cache = model.new_cache();
    let logits = prefill(model, &request.prompt, &mut cache);
    match logits {
        Ok(logits) => {
            metrics.first_token(submitted.elapsed().as_secs_f64());
            let mut row = Row {
                rng: LingoRng::new(request.seed),
                tokens: request.prompt.clone(),
                request,
                cache,
                generated: 0,
            };
            if row.advance(logits, context) {
                rows.push(row);
            }
        }
        Err(e) => {
            let _ = request.events.send(Event::Failed(e.to_string()));
        }
    }
}

/// The logits after the last prompt token, filling `cache` with the prompt.
fn prefill(
    model: &dyn CausalLm,
    prompt: &[u32],
    cache: &mut [KvCache],
) -> candle_core::Result<Vec<f32>> {
    if prompt.is_empty() || prompt.len() >= model.context_length() {
        candle_core::bail!(
            "a prompt of {} tokens does not fit a context of {}",
            prompt.len(),
            model.context_length()
        );
    }
    last_logits(model, prompt, cache)
}
