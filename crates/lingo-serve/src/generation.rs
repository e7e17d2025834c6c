//! From a generating request to text: its limits checked, one engine sequence per choice, and each
//! choice's tokens decoded incrementally into text pieces, cut at the first stop string (text that
//! might begin one is held back until it is clear). Every choice's pieces go into one channel,
//! which the streaming and the whole-response routes both read; when the client goes, the channel
//! closes, each choice's driver stops, and the engine frees their slots.

use crate::engine::{Event, FinishReason, GenerationRequest};
use crate::error::ApiError;
use crate::registry::{Runner, ServedModel};
use crate::server::AppState;
use lingo_generate::SamplingConfig;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Stop strings per request, at most (as OpenAI).
pub const MAX_STOP_STRINGS: usize = 4;
/// Choices per prompt, at most.
pub const MAX_CHOICES: usize = 16;
/// Sequences (prompts × choices) per request, at most.
pub const MAX_SEQUENCES: usize = 64;

/// A string or a list of them (`prompt`, `input`, `inputs`, `stop`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(x) => vec![x],
            OneOrMany::Many(xs) => xs,
        }
    }

    pub fn is_batch(&self) -> bool {
        matches!(self, OneOrMany::Many(_))
    }
}

/// The sampling parameters every generating route takes.
#[derive(Clone, Debug)]
pub struct Params {
    /// `None`: the route's default, cut to what the limits leave.
    pub max_tokens: Option<usize>,
    pub default_max_tokens: usize,
    pub temperature: f32,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub n: usize,
    /// Go on past the end-of-text token (vLLM's switch; load tests want fixed lengths).
    pub ignore_eos: bool,
}

/// A piece of one choice's text.
#[derive(Debug)]
pub struct Piece {
    pub index: usize,
    pub text: String,
    pub finish: Option<FinishReason>,
    /// Tokens generated for this choice so far.
    pub tokens: usize,
}

pub enum Update {
    Piece(Piece),
    Failed(ApiError),
}

/// A validated generation: the prompts' ids and the settings of every choice.
pub struct Plan {
    pub model: Arc<ServedModel>,
    pub prompts: Vec<Vec<u32>>,
    pub sampling: SamplingConfig,
    pub seed: u64,
    pub stop: Vec<String>,
    pub n: usize,
}

impl Plan {
    pub fn prompt_tokens(&self) -> usize {
        self.prompts.iter().map(Vec::len).sum::<usize>() * self.n
    }

    /// Choices in all: `n` per prompt, prompt `p`'s choice `i` at index `p·n + i`.
    pub fn choices(&self) -> usize {
        self.prompts.len() * self.n
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh id suffix and a seed for requests that give none.
pub fn next_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

pub fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks `texts` against the limits and the model, and settles the sampling settings.
pub fn plan(
    state: &AppState,
    model: Arc<ServedModel>,
    texts: &[String],
    params: Params,
    extra_stop: Vec<String>,
) -> Result<Plan, ApiError> {
    let Runner::Decoder { eos, .. } = &model.runner else {
        return Err(ApiError::validation(format!(
            "model `{}` cannot generate text",
            model.name
        )));
    };
    if texts.is_empty() {
        return Err(ApiError::validation("give at least one prompt"));
    }
    if params.n == 0 || params.n > MAX_CHOICES {
        return Err(ApiError::validation(format!(
            "field `n`: between 1 and {MAX_CHOICES}, got {}",
            params.n
        )));
    }
    if texts.len() * params.n > MAX_SEQUENCES {
        return Err(ApiError::validation(format!(
            "{} prompts × n = {} is {} sequences; at most {MAX_SEQUENCES} per request",
            texts.len(),
            params.n,
            texts.len() * params.n
        )));
    }
    if params.stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::validation(format!(
            "field `stop`: at most {MAX_STOP_STRINGS} stop strings, got {}",
            params.stop.len()
        )));
    }
    if params.stop.iter().any(String::is_empty) {
        return Err(ApiError::validation("field `stop`: a stop string is empty"));
    }
    let limits = &state.config.limits;
    let context = model.max_positions.unwrap_or(usize::MAX);
    let total = limits.max_total_tokens.min(context);
    let mut prompts = Vec::with_capacity(texts.len());
    let mut longest = 0;
    for text in texts {
        let mut ids = model.encode(text)?;
        if ids.is_empty() {
            // An empty prompt starts from the end-of-text token, as GPT-2 was trained.
            ids = vec![eos.ok_or_else(|| {
                ApiError::validation("the prompt is empty and the model has no start token")
            })?];
        }
        limits.check_input("the input is", ids.len())?;
        if ids.len() >= total {
            return Err(ApiError::validation(format!(
                "the input is {} tokens long, leaving no room to generate within {total} tokens ({})",
                ids.len(),
                total_limit_name(total, limits.max_total_tokens)
            )));
        }
        longest = longest.max(ids.len());
        prompts.push(ids);
    }
    let room = total - longest;
    let max_new_tokens = match params.max_tokens {
        Some(0) => return Err(ApiError::validation("field `max_tokens`: at least 1")),
        Some(m) if longest + m > total => {
            return Err(ApiError::validation(format!(
            "the input ({longest} tokens) plus max_tokens ({m}) is {} tokens; at most {total} ({})",
            longest + m,
            total_limit_name(total, limits.max_total_tokens)
        )))
        }
        Some(m) => m,
        None => params.default_max_tokens.min(room),
    };
    let sampling = SamplingConfig {
        temperature: params.temperature,
        top_k: params.top_k,
        top_p: params.top_p,
        max_new_tokens,
        stop_tokens: eos.iter().copied().filter(|_| !params.ignore_eos).collect(),
        repetition_penalty: 1.0,
    };
    sampling.validate().map_err(ApiError::validation)?;
    let mut stop = params.stop;
    stop.extend(extra_stop);
    Ok(Plan {
        model,
        prompts,
        sampling,
        seed: params.seed.unwrap_or_else(next_id),
        stop,
        n: params.n,
    })
}

fn total_limit_name(total: usize, server: usize) -> &'static str {
    if total == server {
        "--max-total-tokens"
    } else {
        "the model's context"
    }
}

/// Starts every choice; their pieces arrive on the returned channel.
pub fn start(state: &AppState, plan: &Plan) -> mpsc::UnboundedReceiver<Update> {
    let (updates, receiver) = mpsc::unbounded_channel();
    let Runner::Decoder { engine, .. } = &plan.model.runner else {
        let _ = updates.send(Update::Failed(ApiError::internal("not a decoder")));
        return receiver;
    };
    state
        .metrics
        .tokens(plan.prompts.iter().map(Vec::len).sum::<usize>() * plan.n, 0);
    for (p, prompt) in plan.prompts.iter().enumerate() {
        for i in 0..plan.n {
            let index = p * plan.n + i;
            let (events_tx, events) = mpsc::unbounded_channel();
            engine.submit(GenerationRequest {
                prompt: prompt.clone(),
                sampling: plan.sampling.clone(),
                seed: plan.seed.wrapping_add(index as u64),
                events: events_tx,
            });
            let driver = Driver {
                model: plan.model.clone(),
                stop: plan.stop.clone(),
                stop_tokens: plan.sampling.stop_tokens.clone(),
                index,
                updates: updates.clone(),
                metrics: state.metrics.clone(),
            };
            tokio::spawn(driver.run(events));
        }
    }
    receiver
}

/// Turns one choice's tokens into text pieces.
struct Driver {
    model: Arc<ServedModel>,
    stop: Vec<String>,
    stop_tokens: Vec<u32>,
    index: usize,
    updates: mpsc::UnboundedSender<Update>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Driver {
    async fn run(self, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut ids: Vec<u32> = Vec::new();
        let mut generated = 0;
        let mut emitted = 0;
        while let Some(event) = events.recv().await {
            let (text, finish) = match event {
                Event::Token(t) => {
                    generated += 1;
                    if self.stop_tokens.contains(&t) {
                        continue;
                    }
                    ids.push(t);
                    match self.model.tokenizer.decode_text(&ids) {
                        Ok(text) => (text, None),
                        Err(e) => {
                            let _ = self
                                .updates
                                .send(Update::Failed(ApiError::internal(format!("decoding: {e}"))));
                            return;
                        }
                    }
                }
                Event::Finished(reason) => {
                    let text = self.model.tokenizer.decode_text(&ids).unwrap_or_default();
                    (text, Some(reason))
                }
                Event::Failed(message) => {
                    let _ = self
                        .updates
                        .send(Update::Failed(ApiError::internal(message)));
                    return;
                }
            };
            // A byte-level token may complete a character only with the next one; and decoded
            // text must extend what was already sent.
            if finish.is_none() && (text.ends_with('\u{FFFD}') || !text.is_char_boundary(emitted)) {
                continue;
            }
            let rest = text.get(emitted..).unwrap_or_default();
            let (piece, finish) = match first_stop(rest, &self.stop) {
                Some(at) => (&rest[..at], Some(FinishReason::Stop)),
                None if finish.is_some() => (rest, finish),
                None => (&rest[..rest.len() - held_back(rest, &self.stop)], None),
            };
            if piece.is_empty() && finish.is_none() {
                continue;
            }
            emitted += piece.len();
            let sent = self.updates.send(Update::Piece(Piece {
                index: self.index,
                text: piece.to_string(),
                finish,
                tokens: generated,
            }));
            if finish.is_some() {
                self.metrics.tokens(0, generated);
            }
            // Finished, or nobody is listening: dropping `events` tells the engine to stop.
            if sent.is_err() || finish.is_some() {
                return;
            }
        }
    }
}

/// Where the first stop string starts in `text`.
fn first_stop(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// Bytes at the end of `text` that could be the start of a stop string.
fn held_back(text: &str, stop: &[String]) -> usize {
    stop.iter()
        .flat_map(|s| {
            (1..s.len())
                .rev()
                .filter(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k]))
                .take(1)
        })
        .max()
        .unwrap_or(0)
}

/// Every choice's whole text and finish reason, and the tokens generated.
pub async fn collect(
    mut updates: mpsc::UnboundedReceiver<Update>,
    choices: usize,
) -> Result<(Vec<(String, FinishReason)>, usize), ApiError> {
    let mut texts = vec![String::new(); choices];
    let mut finishes: Vec<Option<FinishReason>> = vec![None; choices];
    let mut tokens = vec![0; choices];
    let mut done = 0;
    while done < choices {
        match updates.recv().await {
            Some(Update::Piece(p)) => {
                texts[p.index].push_str(&p.text);
                tokens[p.index] = p.tokens;
                if p.finish.is_some() {
                    finishes[p.index] = p.finish;
                    done += 1;
                }
            }
            Some(Update::Failed(e)) => return Err(e),
            None => return Err(ApiError::internal("generation ended without finishing")),
        }
    }
    let out = texts
        .into_iter()
        .zip(finishes)
        .map(|(t, f)| (t, f.unwrap_or(FinishReason::Length)))
        .collect();
    Ok((out, tokens.iter().sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_cut_text_and_hold_back_their_prefixes() {
        let stop = vec!["\nuser:".to_string(), "END".to_string()];
        assert_eq!(first_stop("hello\nuser: hi", &stop), Some(5));
        assert_eq!(first_stop("a END b\nuser:", &stop), Some(2));
        assert_eq!(first_stop("nothing", &stop), None);
        assert_eq!(held_back("hello\nus", &stop), 3);
        assert_eq!(held_back("hello EN", &stop), 2);
        assert_eq!(held_back("hello", &stop), 0);
    }
}
