//! `lingo serve`: Lingo's models behind an HTTP API — OpenAI-compatible completions, chat and
//! embeddings, one route per task pipeline, Prometheus metrics and a web playground — on the stack
//! of Hugging Face's Rust servers (axum, tokio, tower).
//!
//! - [`server`]: configuration, the router, limits, auth and graceful shutdown;
//! - [`registry`]: the models, each loaded once and owned by the thread that runs it;
//! - [`engine`]: continuous batching for decoder-only models; [`workers`]: batched encoders and
//!   encoder–decoders;
//! - [`openai`] and [`tasks`]: the routes; [`generation`]: tokens into text, stop strings and
//!   choices, shared by every generating route; [`chat`]: chat templates;
//! - [`error`] and [`metrics`]: what clients and Prometheus see;
//! - [`load`]: the load generator of `lingo bench serve`.

pub mod chat;
pub mod engine;
pub mod error;
pub mod generation;
pub mod load;
pub mod metrics;
pub mod openai;
pub mod registry;
pub mod server;
pub mod tasks;
pub mod workers;

pub use registry::ModelSpec;
pub use server::{Limits, ServeConfig, Server};
