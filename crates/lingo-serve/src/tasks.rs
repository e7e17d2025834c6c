//! One route per task pipeline, each taking one input or a batch (`"inputs": "…"` or `[…]`) and
//! answering with one result or a list: `/generate` (text-generation-inference's shape),
//! `/embed` (text-embeddings-inference's), `/classify`, `/fill-mask`, `/ner`, `/qa`,
//! `/translate`, `/summarize` (the `transformers` pipelines' shapes), `/tokenize`, and
//! `/attention` (one input's attention weights, for the playground's heat map).

use crate::error::{ApiError, ApiJson};
use crate::generation::{self, collect, OneOrMany, Params};
use crate::registry::{Runner, ServedModel, Task};
use crate::server::AppState;
use crate::workers::{EncoderJob, Seq2SeqJob, Texts};
use axum::extract::State;
use axum::Json;
use lingo_generate::BeamConfig;
use lingo_tasks::encoder::EncoderPipeline;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::oneshot;

/// TGI's default `max_new_tokens` for `/generate`.
const GENERATE_MAX_TOKENS: usize = 100;
/// Inputs of one batch request, at most.
const MAX_BATCH_INPUTS: usize = 256;

/// One result for one input, a list for a batch.
fn shaped<T: Serialize>(batch: bool, mut results: Vec<T>) -> Json<Value> {
    Json(if batch {
        json!(results)
    } else {
        json!(results.pop())
    })
}

fn inputs(given: OneOrMany<String>) -> Result<(bool, Vec<String>), ApiError> {
    let batch = given.is_batch();
    let texts = given.into_vec();
    if texts.is_empty() {
        return Err(ApiError::validation("field `inputs`: the list is empty"));
    }
    if texts.len() > MAX_BATCH_INPUTS {
        return Err(ApiError::validation(format!(
            "field `inputs`: at most {MAX_BATCH_INPUTS} inputs per request, got {}",
            texts.len()
        )));
    }
    Ok((batch, texts))
}

/// Each text's length in the model's tokens, checked against the limits.
fn check_lengths(
    state: &AppState,
    model: &ServedModel,
    texts: &[String],
) -> Result<Vec<usize>, ApiError> {
    texts
        .iter()
        .map(|t| {
            let n = model.encode(t)?.len();
            state.config.limits.check_input("the input is", n)?;
            if let Some(p) = model.max_positions.filter(|&p| n > p) {
                return Err(ApiError::validation(format!(
                    "the input is {n} tokens long; model `{}` takes at most {p}",
                    model.name
                )));
            }
            Ok(n)
        })
        .collect()
}

fn worker_gone() -> ApiError {
    ApiError::internal("the model's worker has stopped")
}

fn encoder_jobs(model: &ServedModel) -> Result<&std::sync::mpsc::Sender<EncoderJob>, ApiError> {
    match &model.runner {
        Runner::Encoder { jobs, .. } => Ok(jobs),
        _ => Err(ApiError::internal("not an encoder")),
    }
}

/// Runs `f` on the encoder's thread.
async fn on_encoder<T: Send + 'static>(
    model: &ServedModel,
    f: impl FnOnce(&EncoderPipeline) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    encoder_jobs(model)?
        .send(EncoderJob::Single(Box::new(move |p| {
            let _ = reply.send(f(p));
        })))
        .map_err(|_| worker_gone())?;
    answer.await.map_err(|_| worker_gone())?
}

/// Embeds `texts` in the encoder's next batch; also the tokens they took.
pub async fn embed_texts(
    state: &AppState,
    model: &ServedModel,
    texts: Vec<String>,
    normalize: Option<bool>,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let lengths = check_lengths(state, model, &texts)?;
    let Runner::Encoder {
        normalize: normalizes,
        ..
    } = &model.runner
    else {
        return Err(ApiError::internal("not an encoder"));
    };
    let tokens = lengths.iter().sum();
    state.metrics.tokens(tokens, 0);
    let (reply, answer) = oneshot::channel();
    let longest = lengths.iter().copied().max().unwrap_or(1);
    encoder_jobs(model)?
        .send(EncoderJob::Embed(Texts { texts, longest }, reply))
        .map_err(|_| worker_gone())?;
    let mut vectors = answer.await.map_err(|_| worker_gone())??;
    if normalize.unwrap_or(*normalizes) {
        for v in &mut vectors {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Ok((vectors, tokens))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextRequest {
    pub inputs: OneOrMany<String>,
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    pub inputs: OneOrMany<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// Scale to unit length; default: as the model folder says (sentence-transformers).
    #[serde(default)]
    pub normalize: Option<bool>,
}

pub async fn embed(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<EmbedRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = state
        .registry()?
        .pick(request.model.as_deref(), Task::Embed)?;
    let (_, texts) = inputs(request.inputs)?;
    let (vectors, _) = embed_texts(&state, &model, texts, request.normalize).await?;
    Ok(Json(json!(vectors)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    pub inputs: OneOrMany<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// Keep the `top_k` likeliest labels (default: all).
    #[serde(default)]
    pub top_k: Option<usize>,
}

pub async fn classify(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<ClassifyRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = state
        .registry()?
        .pick(request.model.as_deref(), Task::Classify)?;
    let (batch, texts) = inputs(request.inputs)?;
    let lengths = check_lengths(&state, &model, &texts)?;
    state.metrics.tokens(lengths.iter().sum(), 0);
    let longest = lengths.iter().copied().max().unwrap_or(1);
    let (reply, answer) = oneshot::channel();
    encoder_jobs(&model)?
        .send(EncoderJob::Classify(Texts { texts, longest }, reply))
        .map_err(|_| worker_gone())?;
    let mut results = answer.await.map_err(|_| worker_gone())??;
    if let Some(k) = request.top_k {
        results.iter_mut().for_each(|r| r.truncate(k.max(1)));
    }
    Ok(shaped(batch, results))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillMaskRequest {
    pub inputs: OneOrMany<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default = "five")]
    pub top_k: usize,
}

fn five() -> usize {
    5
}

pub async fn fill_mask(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<FillMaskRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = state
        .registry()?
        .pick(request.model.as_deref(), Task::FillMask)?;
    let (batch, texts) = inputs(request.inputs)?;
    check_lengths(&state, &model, &texts)?;
    let top_k = request.top_k.clamp(1, 100);
    let results = on_encoder(&model, move |p| {
        texts
            .iter()
            .map(|t| p.fill_mask(t, top_k).map_err(ApiError::from))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(shaped(batch, results))
}

pub async fn ner(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<TextRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = state
        .registry()?
        .pick(request.model.as_deref(), Task::Ner)?;
    let (batch, texts) = inputs(request.inputs)?;
    check_lengths(&state, &model, &texts)?;
    let results = on_encoder(&model, move |p| {
        texts
            .iter()
            .map(|t| p.ner(t).map_err(ApiError::from))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(shaped(batch, results))
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub question: String,
    pub context: String,
}

/// `{"question", "context"}`, or `{"inputs": [{"question", "context"}, …]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaRequest {
    #[serde(default)]
    pub question: Option<String>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub inputs: Option<OneOrMany<Question>>,
    #[serde(default)]
    pub model: Option<String>,
}

pub async fn qa(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<QaRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = state.registry()?.pick(request.model.as_deref(), Task::Qa)?;
    let (batch, questions) = match (request.inputs, request.question, request.context) {
        (Some(inputs), None, None) => (inputs.is_batch(), inputs.into_vec()),
        (None, Some(question), Some(context)) => (false, vec![Question { question, context }]),
        _ => {
            return Err(ApiError::validation(
                "give `question` and `context`, or `inputs`: [{\"question\", \"context\"}, …]",
            ))
        }
    };
    if questions.is_empty() || questions.len() > MAX_BATCH_INPUTS {
        return Err(ApiError::validation(format!(
            "field `inputs`: between 1 and {MAX_BATCH_INPUTS} questions"
        )));
    }
    // Long contexts are read in overlapping windows; only the server's limit applies.
    let joined: Vec<String> = questions
        .iter()
        .map(|q| format!("{} {}", q.question, q.context))
        .collect();
    for text in &joined {
        let n = model.encode(text)?.len();
        (state.config.limits).check_input("the question and context are", n)?;
    }
    let results = on_encoder(&model, move |p| {
        questions
            .iter()
            .map(|q| p.answer(&q.question, &q.context).map_err(ApiError::from))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(shaped(batch, results))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionRequest {
    pub inputs: String,
    #[serde(default)]
    pub model: Option<String>,
}

pub async fn attention(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<AttentionRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = state
        .registry()?
        .pick(request.model.as_deref(), Task::Attention)?;
    let text = request.inputs;
    check_lengths(&state, &model, std::slice::from_ref(&text))?;
    let (tokens, maps) =
        on_encoder(&model, move |p| p.attention(&text).map_err(ApiError::from)).await?;
    Ok(Json(json!({
        "tokens": tokens,
        "layers": maps.len(),
        "heads": maps.first().map_or(0, Vec::len),
        "attentions": maps,
    })))
}

/// Decoding settings a translation or summary request may change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seq2SeqRequest {
    pub inputs: OneOrMany<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub num_beams: Option<usize>,
    #[serde(default)]
    pub max_length: Option<usize>,
}

pub async fn translate(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<Seq2SeqRequest>,
) -> Result<Json<Value>, ApiError> {
    seq2seq(state, request, Task::Translate, "translation_text").await
}

pub async fn summarize(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<Seq2SeqRequest>,
) -> Result<Json<Value>, ApiError> {
    seq2seq(state, request, Task::Summarize, "summary_text").await
}

async fn seq2seq(
    state: Arc<AppState>,
    request: Seq2SeqRequest,
    task: Task,
    field: &str,
) -> Result<Json<Value>, ApiError> {
    let model = state.registry()?.pick(request.model.as_deref(), task)?;
    let Runner::Seq2Seq {
        jobs,
        translator,
        beam,
        summary_prefix,
    } = &model.runner
    else {
        return Err(ApiError::internal("not an encoder-decoder"));
    };
    let (batch, texts) = inputs(request.inputs)?;
    let prefix = match task {
        Task::Summarize => summary_prefix.as_str(),
        _ => translator.source_prefix.as_str(),
    };
    let limits = &state.config.limits;
    let mut sources = Vec::with_capacity(texts.len());
    for t in &texts {
        let ids = translator.encode_source(&format!("{prefix}{t}"))?;
        limits.check_input("the input is", ids.len())?;
        sources.push(ids);
    }
    let mut beam: BeamConfig = beam.clone();
    if let Some(b) = request.num_beams {
        if b == 0 || b > 16 {
            return Err(ApiError::validation(format!(
                "field `num_beams`: between 1 and 16, got {b}"
            )));
        }
        beam.beam_size = b;
    }
    if let Some(m) = request.max_length {
        let longest = sources.iter().map(Vec::len).max().unwrap_or(0);
        if m == 0 || longest + m > limits.max_total_tokens {
            return Err(ApiError::validation(format!(
                "field `max_length`: the input ({longest} tokens) plus max_length ({m}) must be within {} (--max-total-tokens)",
                limits.max_total_tokens
            )));
        }
        beam.max_length = m;
    }
    state.metrics.tokens(sources.iter().map(Vec::len).sum(), 0);
    let (reply, answer) = oneshot::channel();
    jobs.send(Seq2SeqJob {
        sources,
        beam,
        reply,
    })
    .map_err(|_| worker_gone())?;
    let texts = answer.await.map_err(|_| worker_gone())??;
    let results: Vec<Value> = texts.into_iter().map(|t| json!({ field: t })).collect();
    Ok(shaped(batch, results))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateParameters {
    pub max_new_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// TGI's switch: without it (or a temperature), decoding is greedy.
    pub do_sample: bool,
    /// Generate past the end-of-text token.
    pub ignore_eos: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    pub inputs: OneOrMany<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub parameters: GenerateParameters,
}

pub async fn generate(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<GenerateRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = state
        .registry()?
        .pick(request.model.as_deref(), Task::Generate)?;
    let (batch, texts) = inputs(request.inputs)?;
    let p = request.parameters;
    let sampled = p.do_sample || p.temperature.is_some_and(|t| t > 0.0) || p.top_p.is_some();
    let params = Params {
        max_tokens: p.max_new_tokens,
        default_max_tokens: GENERATE_MAX_TOKENS,
        temperature: if sampled {
            p.temperature.unwrap_or(1.0)
        } else {
            0.0
        },
        top_p: p.top_p,
        top_k: p.top_k,
        seed: p.seed,
        stop: p.stop,
        n: 1,
        ignore_eos: p.ignore_eos,
    };
    let plan = generation::plan(&state, model, &texts, params, Vec::new())?;
    let updates = generation::start(&state, &plan);
    let (choices, _) = collect(updates, plan.choices()).await?;
    let results: Vec<Value> = choices
        .into_iter()
        .map(|(text, finish)| json!({"generated_text": text, "finish_reason": finish.as_str()}))
        .collect();
    Ok(shaped(batch, results))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    pub inputs: OneOrMany<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// Add the model's special tokens (`[CLS]`, `</s>`); default: as the model takes input.
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
}

pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<TokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = state
        .registry()?
        .pick(request.model.as_deref(), Task::Tokenize)?;
    let (batch, texts) = inputs(request.inputs)?;
    let specials = request
        .add_special_tokens
        .unwrap_or(!matches!(model.runner, Runner::Decoder { .. }));
    let mut results = Vec::with_capacity(texts.len());
    for text in &texts {
        let enc = model
            .tokenizer
            .inner()
            .encode(text.as_str(), specials)
            .map_err(|e| ApiError::validation(format!("tokenizing: {e}")))?;
        let tokens: Vec<Value> = (0..enc.len())
            .map(|i| {
                let (start, stop) = enc.get_offsets()[i];
                json!({
                    "id": enc.get_ids()[i],
                    "text": enc.get_tokens()[i],
                    "special": enc.get_special_tokens_mask()[i] == 1,
                    "start": start,
                    "stop": stop,
                })
            })
            .collect();
        results.push(Value::Array(tokens));
    }
    Ok(shaped(batch, results))
}
