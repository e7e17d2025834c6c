//! The threads that run encoders and encoder–decoders, off the async runtime. Each owns its model
//! and groups what arrives together: concurrent embedding or classification requests to an encoder
//! become one padded forward, and concurrent translations one batched beam search — up to
//! `max_batch_tokens` (padded) and after waiting at most `batch_wait` for company.

use crate::error::ApiError;
use crate::metrics::Metrics;
use lingo_generate::BeamConfig;
use lingo_tasks::encoder::{EncoderPipeline, LabelScore, Pooling};
use lingo_tasks::Translator;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// How a worker groups requests.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    /// Rows × longest row of one batch, at most (a larger single request runs alone).
    pub max_batch_tokens: usize,
    /// How long the first request of a batch waits for others.
    pub batch_wait: Duration,
}

/// Texts with their token counts (with special tokens), which bound the batch.
pub struct Texts {
    pub texts: Vec<String>,
    pub longest: usize,
}

/// Work for an encoder.
pub enum EncoderJob {
    Embed(Texts, Reply<Vec<Vec<f32>>>),
    Classify(Texts, Reply<Vec<Vec<LabelScore>>>),
    /// Anything else (fill-mask, NER, QA, attention), run on its own.
    Single(Box<dyn FnOnce(&EncoderPipeline) + Send>),
}

impl EncoderJob {
    fn texts(&self) -> Option<&Texts> {
        match self {
            EncoderJob::Embed(t, _) | EncoderJob::Classify(t, _) => Some(t),
            EncoderJob::Single(_) => None,
        }
    }
}

/// Collects one batch: the first job, then whatever arrives within the wait while the padded size
/// stays under the bound. A job that does not fit is handed back for the next batch.
fn gather<J>(
    first: J,
    jobs: &mpsc::Receiver<J>,
    batching: Batching,
    size: impl Fn(&J, &J) -> Option<(usize, usize)>,
) -> (Vec<J>, Option<J>) {
    let Some((mut rows, mut longest)) = size(&first, &first) else {
        return (vec![first], None);
    };
    let mut batch = vec![first];
    let deadline = Instant::now() + batching.batch_wait;
    loop {
        let now = Instant::now();
        let next = if now >= deadline {
            jobs.try_recv().ok()
        } else {
            jobs.recv_timeout(deadline - now).ok()
        };
        let Some(job) = next else {
            return (batch, None);
        };
        match size(&batch[0], &job) {
            Some((r, l))
                if (rows + r) * longest.max(l) <= batching.max_batch_tokens.max(rows * longest) =>
            {
                rows += r;
                longest = longest.max(l);
                batch.push(job);
            }
            _ => return (batch, Some(job)),
        }
    }
}

/// Starts a worker thread named `name` that gathers the jobs sent to it into batches and runs
/// each; it ends when every sender is dropped. `size(first, job)` is a job's (rows, longest row)
/// in a batch begun by `first`, or `None` if it cannot join it.
fn spawn_batches<J: Send + 'static>(
    name: String,
    batching: Batching,
    size: impl Fn(&J, &J) -> Option<(usize, usize)> + Send + 'static,
    mut run: impl FnMut(Vec<J>) + Send + 'static,
) -> mpsc::Sender<J> {
    let (tx, jobs) = mpsc::channel::<J>();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut carried = None;
            loop {
                let first = match carried.take() {
                    Some(job) => job,
                    None => match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    },
                };
                let (batch, rest) = gather(first, &jobs, batching, &size);
                carried = rest;
                run(batch);
            }
        })
        .expect("spawning a thread");
    tx
}

/// Starts an encoder's thread; it ends when every sender is dropped.
pub fn spawn_encoder(
    pipeline: EncoderPipeline,
    pooling: Pooling,
    name: &str,
    batching: Batching,
    metrics: Arc<Metrics>,
) -> mpsc::Sender<EncoderJob> {
    spawn_batches(
        format!("encode-{name}"),
        batching,
        |_, j: &EncoderJob| j.texts().map(|t| (t.texts.len(), t.longest)),
        move |batch| run_encoder_batch(&pipeline, pooling, batch, &metrics),
    )
}

fn run_encoder_batch(
    pipeline: &EncoderPipeline,
    pooling: Pooling,
    batch: Vec<EncoderJob>,
    metrics: &Metrics,
) {
    let mut embeds = Vec::new();
    let mut classifies = Vec::new();
    for job in batch {
        match job {
            EncoderJob::Embed(t, reply) => embeds.push((t.texts, reply)),
            EncoderJob::Classify(t, reply) => classifies.push((t.texts, reply)),
            EncoderJob::Single(f) => {
                metrics.batch("encoder", 1);
                f(pipeline)
            }
        }
    }
    run_grouped(embeds, metrics, |texts| {
        pipeline.embed(texts, pooling).map_err(ApiError::from)
    });
    run_grouped(classifies, metrics, |texts| {
        pipeline.classify_batch(texts).map_err(ApiError::from)
    });
}

/// Runs every request's texts as one batch and hands each its rows; if the batch fails, each
/// request runs alone so one bad input fails only its own request.
fn run_grouped<T>(
    requests: Vec<(Vec<String>, Reply<Vec<T>>)>,
    metrics: &Metrics,
    run: impl Fn(&[&str]) -> Result<Vec<T>, ApiError>,
) {
    if requests.is_empty() {
        return;
    }
    let all: Vec<&str> = requests
        .iter()
        .flat_map(|(texts, _)| texts.iter().map(String::as_str))
        .collect();
    metrics.batch("encoder", all.len());
    match run(&all) {
        Ok(mut rows) => {
            for (texts, reply) in requests.into_iter().rev() {
                let mine = rows.split_off(rows.len() - texts.len());
                let _ = reply.send(Ok(mine));
            }
        }
        Err(_) if requests.len() > 1 => {
            for (texts, reply) in requests {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let _ = reply.send(run(&refs));
            }
        }
        Err(e) => {
            if let Some((_, reply)) = requests.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// Work for an encoder–decoder: encoded sources, decoded with `beam`.
pub struct Seq2SeqJob {
    pub sources: Vec<Vec<u32>>,
    pub beam: BeamConfig,
    pub reply: Reply<Vec<String>>,
}

/// Starts an encoder–decoder's thread; it ends when every sender is dropped.
pub fn spawn_seq2seq(
    translator: Arc<Translator>,
    name: &str,
    batching: Batching,
    metrics: Arc<Metrics>,
) -> mpsc::Sender<Seq2SeqJob> {
    // Only requests with the same decoding settings share a beam search.
    let size = |first: &Seq2SeqJob, j: &Seq2SeqJob| {
        (j.beam == first.beam).then(|| {
            let longest = j.sources.iter().map(Vec::len).max().unwrap_or(1);
            (j.sources.len() * j.beam.beam_size.max(1), longest)
        })
    };
    spawn_batches(format!("seq2seq-{name}"), batching, size, move |batch| {
        let beam = batch[0].beam.clone();
        run_seq2seq_batch(&translator, &beam, batch, &metrics)
    })
}

fn run_seq2seq_batch(
    translator: &Translator,
    beam: &BeamConfig,
    batch: Vec<Seq2SeqJob>,
    metrics: &Metrics,
) {
    let all: Vec<Vec<u32>> = batch.iter().flat_map(|j| j.sources.clone()).collect();
    metrics.batch("seq2seq", all.len());
    let decode = |sources: &[Vec<u32>]| -> Result<Vec<String>, ApiError> {
        let out = translator.translate_ids(sources, beam, sources.len().max(1))?;
        Ok(out.into_iter().map(|t| t.text).collect())
    };
    match decode(&all) {
        Ok(mut texts) => {
            for job in batch.into_iter().rev() {
                let mine = texts.split_off(texts.len() - job.sources.len());
                let _ = job.reply.send(Ok(mine));
            }
        }
        // One bad request fails alone: the others are decoded again without it.
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
        }
        Err(_) => {
            for job in batch {
                let _ = job.reply.send(decode(&job.sources));
            }
        }
    }
}
