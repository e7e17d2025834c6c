//! The OpenAI-compatible routes: `/v1/completions`, `/v1/chat/completions` (both streaming with
//! server-sent events: `data: {…}` chunks, then `data: [DONE]`), `/v1/embeddings` and
//! `/v1/models`. Fields OpenAI has and Lingo does not use (`user`, penalties, `logit_bias`) are
//! accepted and ignored, as other compatible servers do.

use crate::chat::Message;
use crate::error::{ApiError, ApiJson};
use crate::generation::{self, collect, next_id, unix_time, OneOrMany, Params, Plan, Update};
use crate::registry::{Runner, Task};
use crate::server::AppState;
use crate::tasks::embed_texts;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;

/// OpenAI's default `max_tokens` for completions.
const COMPLETION_MAX_TOKENS: usize = 16;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StreamOptions {
    pub include_usage: bool,
}

/// The body of both completion routes: `prompt` for one, `messages` for the other. (One struct,
/// not a flattened pair, so a wrong field's error names it.)
#[derive(Deserialize)]
#[serde(default)]
pub struct Sampling {
    pub prompt: Option<OneOrMany<String>>,
    pub messages: Option<Vec<Message>>,
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    /// The chat route's newer name for `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    pub temperature: f32,
    pub top_p: Option<f32>,
    /// Not OpenAI's, but vLLM's and TGI's.
    pub top_k: Option<usize>,
    pub n: usize,
    pub stop: Option<OneOrMany<String>>,
    pub seed: Option<u64>,
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// vLLM's: generate past the end-of-text token.
    pub ignore_eos: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            prompt: None,
            messages: None,
            model: None,
            max_tokens: None,
            max_completion_tokens: None,
            temperature: 1.0,
            top_p: None,
            top_k: None,
            n: 1,
            stop: None,
            seed: None,
            stream: false,
            stream_options: None,
            ignore_eos: false,
        }
    }
}

impl Sampling {
    fn params(&self, default_max_tokens: usize) -> Params {
        Params {
            max_tokens: self.max_tokens.or(self.max_completion_tokens),
            default_max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            stop: self
                .stop
                .clone()
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            n: self.n,
            ignore_eos: self.ignore_eos,
        }
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    ApiJson(mut request): ApiJson<Sampling>,
) -> Result<Response, ApiError> {
    let prompts = request
        .prompt
        .take()
        .ok_or_else(|| ApiError::validation("missing field `prompt`"))?
        .into_vec();
    let registry = state.registry()?;
    let model = registry.pick(request.model.as_deref(), Task::Completions)?;
    let params = request.params(COMPLETION_MAX_TOKENS);
    let plan = generation::plan(&state, model, &prompts, params, Vec::new())?;
    respond(&state, plan, &request, Kind::Completion).await
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<Sampling>,
) -> Result<Response, ApiError> {
    let messages = (request.messages.as_ref())
        .ok_or_else(|| ApiError::validation("missing field `messages`"))?;
    let registry = state.registry()?;
    let model = registry.pick(request.model.as_deref(), Task::Chat)?;
    let Runner::Decoder { chat, .. } = &model.runner else {
        return Err(ApiError::internal("not a decoder"));
    };
    let prompt = chat.render(messages)?;
    let stops = chat.stop_strings();
    // Chat replies run until the model stops or the limits end them.
    let params = request.params(usize::MAX);
    let plan = generation::plan(&state, model, &[prompt], params, stops)?;
    respond(&state, plan, &request, Kind::Chat).await
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

async fn respond(
    state: &AppState,
    plan: Plan,
    sampling: &Sampling,
    kind: Kind,
) -> Result<Response, ApiError> {
    let updates = generation::start(state, &plan);
    let id = match kind {
        Kind::Completion => format!("cmpl-{:016x}", next_id()),
        Kind::Chat => format!("chatcmpl-{:016x}", next_id()),
    };
    let header = Header {
        id,
        model: plan.model.name.clone(),
        created: unix_time(),
        kind,
    };
    let prompt_tokens = plan.prompt_tokens();
    if sampling.stream {
        let include_usage = sampling
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        let events = sse_events(
            updates,
            header,
            plan.choices(),
            prompt_tokens,
            include_usage,
        );
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let (choices, completion_tokens) = collect(updates, plan.choices()).await?;
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(index, (text, finish))| match kind {
            Kind::Completion => json!({
                "index": index, "text": text, "logprobs": null, "finish_reason": finish.as_str()
            }),
            Kind::Chat => json!({
                "index": index,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish.as_str()
            }),
        })
        .collect();
    Ok(Json(json!({
        "id": header.id,
        "object": header.object(false),
        "created": header.created,
        "model": header.model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }))
    .into_response())
}

struct Header {
    id: String,
    model: String,
    created: u64,
    kind: Kind,
}

impl Header {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Event {
        let mut body = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            body["usage"] = u;
        }
        Event::default().data(body.to_string())
    }
}

/// The stream's events: a chunk per piece of text (chat's first chunk of a choice carries the
/// role), an error event if generation fails, a usage chunk if asked for, then `[DONE]`.
fn sse_events(
    updates: tokio::sync::mpsc::UnboundedReceiver<Update>,
    header: Header,
    choices: usize,
    prompt_tokens: usize,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct S {
        updates: tokio::sync::mpsc::UnboundedReceiver<Update>,
        header: Header,
        started: Vec<bool>,
        tokens: Vec<usize>,
        finished: usize,
        over: bool,
    }
    let state = S {
        updates,
        header,
        started: vec![false; choices],
        tokens: vec![0; choices],
        finished: 0,
        over: false,
    };
    stream::unfold(state, move |mut s| async move {
        if s.over {
            return None;
        }
        if s.finished == s.started.len() {
            s.over = true;
            let mut events = Vec::new();
            if include_usage {
                let completion: usize = s.tokens.iter().sum();
                events.push(
                    s.header
                        .chunk(json!([]), Some(usage(prompt_tokens, completion))),
                );
            }
            events.push(Event::default().data("[DONE]"));
            return Some((stream::iter(events), s));
        }
        let event = match s.updates.recv().await {
            Some(Update::Piece(p)) => {
                s.tokens[p.index] = p.tokens;
                if p.finish.is_some() {
                    s.finished += 1;
                }
                let finish = p.finish.map(|f| f.as_str());
                let choice = match s.header.kind {
                    Kind::Completion => json!({
                        "index": p.index, "text": p.text, "logprobs": null, "finish_reason": finish
                    }),
                    Kind::Chat => {
                        let mut delta = json!({"content": p.text});
                        if !s.started[p.index] {
                            delta["role"] = json!("assistant");
                        }
                        json!({"index": p.index, "delta": delta, "logprobs": null, "finish_reason": finish})
                    }
                };
                s.started[p.index] = true;
                s.header.chunk(json!([choice]), None)
            }
            Some(Update::Failed(e)) => {
                s.over = true;
                Event::default().data(e.body().to_string())
            }
            None => {
                s.over = true;
                let e = ApiError::internal("generation ended without finishing");
                Event::default().data(e.body().to_string())
            }
        };
        Some((stream::iter(vec![event]), s))
    })
    .flat_map(|events| events.map(Ok))
}

#[derive(Deserialize)]
pub struct EmbeddingRequest {
    pub input: OneOrMany<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// Only `float` is produced.
    #[serde(default)]
    pub encoding_format: Option<String>,
}

pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<EmbeddingRequest>,
) -> Result<Json<Value>, ApiError> {
    if let Some(f) = request.encoding_format.as_deref().filter(|f| *f != "float") {
        return Err(ApiError::validation(format!(
            "field `encoding_format`: only \"float\" is supported, got {f:?}"
        )));
    }
    let registry = state.registry()?;
    let model = registry.pick(request.model.as_deref(), Task::Embed)?;
    let texts = request.input.into_vec();
    let (vectors, tokens) = embed_texts(&state, &model, texts, None).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

pub async fn models(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let registry = state.registry()?;
    let data: Vec<Value> = registry
        .models
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "lingo"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
