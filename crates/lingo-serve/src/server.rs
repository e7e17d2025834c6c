//! The server: its settings, the router, and the layers every request passes — metrics outermost
//! (so it sees every status), CORS, authentication, and on the inference routes the concurrency
//! limit. Models load in the background after the port is bound: `/health` answers 503 until they
//! are ready, 200 after.

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::{ModelSpec, Registry};
use crate::workers::Batching;
use crate::{openai, tasks};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Limits, as text-generation-inference names them.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    /// Requests being answered at once; more get 429 at once rather than waiting in a queue.
    pub max_concurrent_requests: usize,
    /// Longest input, in tokens.
    pub max_input_tokens: usize,
    /// Longest input plus generated tokens.
    pub max_total_tokens: usize,
    /// Padded tokens (rows × longest) of one encoder batch.
    pub max_batch_tokens: usize,
    /// How long a request waits for others to batch with, in milliseconds.
    pub batch_wait_ms: u64,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_requests: 128,
            max_input_tokens: 1024,
            max_total_tokens: 2048,
            max_batch_tokens: 16384,
            batch_wait_ms: 2,
            max_body_bytes: 2 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// 422 if an input of `tokens` tokens (`what`: "the input") is over `--max-input-tokens`.
    pub fn check_input(&self, what: &str, tokens: usize) -> Result<(), ApiError> {
        if tokens > self.max_input_tokens {
            return Err(ApiError::validation(format!(
                "{what} {tokens} tokens long; this server takes at most {} (--max-input-tokens)",
                self.max_input_tokens
            )));
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub models: Vec<ModelSpec>,
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    pub limits: Limits,
    /// Required as `Authorization: Bearer KEY` on every route but `/health` and the page.
    pub api_key: Option<String>,
    /// Origins allowed to call the API from a browser (`*` for any); none: CORS off.
    pub cors_origins: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            models: Vec::new(),
            host: "127.0.0.1".into(),
            port: 8080,
            limits: Limits::default(),
            api_key: None,
            cors_origins: Vec::new(),
        }
    }
}

/// What every handler shares.
pub struct AppState {
    pub config: ServeConfig,
    pub metrics: Arc<Metrics>,
    registry: OnceLock<Arc<Registry>>,
    permits: Arc<Semaphore>,
    shutdown: Notify,
    load_error: OnceLock<String>,
}

impl AppState {
    /// The models, or 503 while they load.
    pub fn registry(&self) -> Result<Arc<Registry>, ApiError> {
        self.registry.get().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the models are still loading: retry shortly",
            )
        })
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds the port, starts serving and loads the models in the background. With `signals`,
    /// Ctrl-C or SIGTERM starts a graceful shutdown.
    pub async fn start(config: ServeConfig, signals: bool) -> Result<Server, String> {
        if config.models.is_empty() {
            return Err("give at least one --model".into());
        }
        let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
            .await
            .map_err(|e| format!("binding {}:{}: {e}", config.host, config.port))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(AppState {
            metrics: Arc::new(Metrics::default()),
            registry: OnceLock::new(),
            permits: Arc::new(Semaphore::new(config.limits.max_concurrent_requests)),
            shutdown: Notify::new(),
            load_error: OnceLock::new(),
            config,
        });
        let loader = state.clone();
        tokio::task::spawn_blocking(move || {
            let batching = Batching {
                max_batch_tokens: loader.config.limits.max_batch_tokens,
                batch_wait: Duration::from_millis(loader.config.limits.batch_wait_ms),
            };
            match Registry::load(&loader.config.models, batching, &loader.metrics) {
                Ok(registry) => {
                    let _ = loader.registry.set(Arc::new(registry));
                }
                Err(e) => {
                    let _ = loader.load_error.set(e);
                    loader.shutdown.notify_one();
                }
            }
        });
        let app = router(state.clone());
        let stopping = state.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    tokio::select! {
                        _ = stopping.shutdown.notified() => {}
                        _ = termination(), if signals => {}
                    }
                })
                .await
        });
        Ok(Server { addr, state, task })
    }

    /// Waits until the models are loaded (or failed to).
    pub async fn wait_loaded(&self) -> Result<(), String> {
        loop {
            if self.state.registry.get().is_some() {
                return Ok(());
            }
            if let Some(e) = self.state.load_error.get() {
                return Err(e.clone());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks for a graceful shutdown: no new connections, in-flight requests finish.
    pub fn shutdown(&self) {
        self.state.shutdown.notify_one();
    }

    /// Runs until shut down; an error if the models failed to load.
    pub async fn finished(self) -> Result<(), String> {
        let served = self.task.await.map_err(|e| e.to_string())?;
        served.map_err(|e| e.to_string())?;
        match self.state.load_error.get() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// Serves until Ctrl-C or SIGTERM (the `lingo serve` command).
pub fn run(config: ServeConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let server = Server::start(config, true).await?;
        eprintln!("lingo serve: listening on http://{}", server.addr);
        let addr = server.addr;
        let names: Vec<String> = server
            .state
            .config
            .models
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let loaded = server.wait_loaded().await;
        match loaded {
            Ok(()) => eprintln!(
                "lingo serve: ready — {} (playground: http://{addr}/)",
                names.join(", ")
            ),
            Err(e) => {
                server.shutdown();
                let _ = server.finished().await;
                return Err(e);
            }
        }
        server.finished().await?;
        eprintln!("lingo serve: stopped");
        Ok(())
    })
}

async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let inference = Router::new()
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/generate", post(tasks::generate))
        .route("/embed", post(tasks::embed))
        .route("/classify", post(tasks::classify))
        .route("/fill-mask", post(tasks::fill_mask))
        .route("/ner", post(tasks::ner))
        .route("/qa", post(tasks::qa))
        .route("/translate", post(tasks::translate))
        .route("/summarize", post(tasks::summarize))
        .route("/tokenize", post(tasks::tokenize))
        .route("/attention", post(tasks::attention))
        .route_layer(from_fn_with_state(state.clone(), limit_concurrency));
    let mut app = Router::new()
        .route("/", get(playground))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(openai::models))
        .merge(inference)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(from_fn_with_state(state.clone(), authenticate));
    if !state.config.cors_origins.is_empty() {
        app = app.layer(cors(&state.config.cors_origins));
    }
    app.layer(from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(Any)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

/// A response body that keeps `guard` alive until it is sent or dropped (the client gone): what
/// holds a concurrency permit, and times a request, for as long as its stream runs.
struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn guard_body<G: Unpin + Send + 'static>(response: Response, guard: G) -> Response {
    let (parts, inner) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(Guarded {
            inner,
            _guard: guard,
        }),
    )
}

/// Records a request when its response has been sent.
struct Timing {
    metrics: Arc<Metrics>,
    route: String,
    started: Instant,
}

impl Drop for Timing {
    fn drop(&mut self) {
        self.metrics
            .request_latency(&self.route, self.started.elapsed().as_secs_f64());
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let timing = Timing {
        metrics: state.metrics.clone(),
        route,
        started: Instant::now(),
    };
    let response = next.run(request).await;
    state
        .metrics
        .request(&timing.route, response.status().as_u16());
    guard_body(response, timing)
}

async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = &state.config.api_key else {
        return next.run(request).await;
    };
    let open = request.uri().path() == "/health"
        || (request.uri().path() == "/" && request.method() == Method::GET);
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if open || given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this server needs `Authorization: Bearer <key>`",
        )
        .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn limit_concurrency(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let permit: OwnedSemaphorePermit = match state.permits.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            return ApiError::overloaded(state.config.limits.max_concurrent_requests)
                .into_response()
        }
    };
    let response = next.run(request).await;
    guard_body(response, permit)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.registry() {
        Ok(_) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "loading"})),
        )
            .into_response(),
    }
}

async fn info(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let registry = state.registry()?;
    let models: Vec<serde_json::Value> = registry
        .models
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "family": m.family,
                "tasks": m.tasks(),
                "max_positions": m.max_positions,
                "vocab_size": m.tokenizer.vocab_size(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "models": models,
        "limits": state.config.limits,
        "auth": state.config.api_key.is_some(),
    })))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn playground() -> Html<&'static str> {
    Html(include_str!("playground.html"))
}
