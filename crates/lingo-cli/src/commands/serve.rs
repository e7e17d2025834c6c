use clap::Args;
use lingo_serve::{Limits, ModelSpec, ServeConfig};

/// Default port, as text-generation-inference's.
const PORT: u16 = 8080;

#[derive(Args)]
pub struct Serve {
    /// A model to serve: a folder, a Hub id, or NAME=DIR (repeat for several). Any family Lingo
    /// loads: decoders get the completion and chat routes, encoders embeddings and their head's
    /// task, encoder–decoders translation and summaries.
    #[arg(long = "model", required = true)]
    models: Vec<ModelSpec>,
    /// Address to bind; 127.0.0.1 keeps the server on this machine.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = PORT)]
    port: u16,
    /// Requests answered at once; beyond it the server answers 429 instead of queueing.
    #[arg(long, default_value_t = Limits::default().max_concurrent_requests)]
    max_concurrent_requests: usize,
    /// Longest input, in tokens (422 beyond).
    #[arg(long, default_value_t = Limits::default().max_input_tokens)]
    max_input_tokens: usize,
    /// Longest input plus generated tokens (422 beyond).
    #[arg(long, default_value_t = Limits::default().max_total_tokens)]
    max_total_tokens: usize,
    /// Padded tokens (rows × longest) of one encoder batch.
    #[arg(long, default_value_t = Limits::default().max_batch_tokens)]
    max_batch_tokens: usize,
    /// How long a request waits for others to share its encoder batch, in milliseconds.
    #[arg(long, default_value_t = Limits::default().batch_wait_ms)]
    batch_wait_ms: u64,
    /// Largest request body, in bytes (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health and the page (also:
    /// LINGO_API_KEY).
    #[arg(long)]
    api_key: Option<String>,
    /// Allow browsers on this origin to call the API (repeat, or `*` for any); CORS is off without.
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    #[command(flatten)]
    quantize: super::QuantizeArg,
}

impl Serve {
    pub fn run(self) -> anyhow::Result<()> {
        if self.max_input_tokens >= self.max_total_tokens {
            anyhow::bail!(
                "--max-input-tokens ({}) must be below --max-total-tokens ({})",
                self.max_input_tokens,
                self.max_total_tokens
            );
        }
        let api_key = self
            .api_key
            .or_else(|| std::env::var("LINGO_API_KEY").ok())
            .filter(|k| !k.is_empty());
        let mut models = self.models;
        for spec in &mut models {
            spec.quantize = self.quantize.quantize();
        }
        let config = ServeConfig {
            models,
            host: self.host,
            port: self.port,
            limits: Limits {
                max_concurrent_requests: self.max_concurrent_requests.max(1),
                max_input_tokens: self.max_input_tokens,
                max_total_tokens: self.max_total_tokens,
                max_batch_tokens: self.max_batch_tokens.max(1),
                batch_wait_ms: self.batch_wait_ms,
                max_body_bytes: self.max_body_bytes,
            },
            api_key,
            cors_origins: self.cors_origins,
        };
        lingo_serve::server::run(config).map_err(anyhow::Error::msg)
    }
}
