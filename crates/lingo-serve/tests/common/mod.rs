//! What the server tests share: tiny model folders, a server on an ephemeral loopback port, and a
//! small HTTP/1.1 client that can also read a stream piece by piece and hang up mid-way.
#![allow(dead_code)]

use lingo_data::{Tokenizer, TokenizerKind};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_serve::{Limits, ModelSpec, ServeConfig, Server};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

/// The characters the test GPT's tokenizer knows.
pub const ALPHABET: &str =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'-\n";

/// A randomly initialised GPT-2 (`n_positions` long) with a character tokenizer; its end-of-text
/// token (the last id) has no text.
pub fn gpt_folder(dir: &Path, n_positions: usize, chat_template: Option<&str>) -> PathBuf {
    sized_gpt_folder(dir, n_positions, 32, 2, chat_template)
}

/// [`gpt_folder`] `width` wide and `layers` deep.
pub fn sized_gpt_folder(
    dir: &Path,
    n_positions: usize,
    width: usize,
    layers: usize,
    chat_template: Option<&str>,
) -> PathBuf {
    let tokenizer = Tokenizer::train(TokenizerKind::Char, ALPHABET).unwrap();
    let vocab = tokenizer.vocab_size() + 1;
    let config = serde_json::json!({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": vocab,
        "n_positions": n_positions, "n_embd": width, "n_layer": layers, "n_head": 4,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.5, "bos_token_id": vocab - 1, "eos_token_id": vocab - 1,
        "tie_word_embeddings": true,
    });
    std::fs::create_dir_all(dir).unwrap();
    let loaded = AutoModel::init(dir, config, &LoadOptions::default()).unwrap();
    lingo_models::hf::save_folder(dir, &loaded.config, &loaded.store, &loaded.names).unwrap();
    tokenizer.save(&dir.join("tokenizer.json")).unwrap();
    if let Some(t) = chat_template {
        let config = serde_json::json!({ "chat_template": t, "eos_token": "" });
        std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    }
    dir.to_path_buf()
}

pub fn spec(name: &str, dir: &Path) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        source: dir.display().to_string(),
        quantize: None,
    }
}

pub async fn start(models: Vec<ModelSpec>, limits: Limits, api_key: Option<&str>) -> Server {
    start_with(ServeConfig {
        models,
        port: 0,
        limits,
        api_key: api_key.map(str::to_string),
        ..Default::default()
    })
    .await
}

pub async fn start_with(config: ServeConfig) -> Server {
    let server = Server::start(config, false).await.unwrap();
    server.wait_loaded().await.unwrap();
    server
}

pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// An error reply's message, checked to have the documented shape.
    pub fn error(&self) -> String {
        let v = self.json();
        assert!(v["error_type"].is_string(), "{v}");
        v["error"].as_str().unwrap().to_string()
    }
}

fn request_text(method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        text.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    text.push_str("\r\n");
    text.push_str(body.unwrap_or_default());
    text
}

/// Undoes chunked transfer encoding.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = body.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

pub async fn send(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(request_text(method, path, body, headers).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Reply {
        status,
        headers: head.to_string(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

pub async fn post(server: &Server, path: &str, body: &Value) -> Reply {
    send(server, "POST", path, Some(&body.to_string()), &[]).await
}

pub async fn get(server: &Server, path: &str) -> Reply {
    send(server, "GET", path, None, &[]).await
}

/// The `data:` payloads of a server-sent event stream.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|d| d.trim().to_string())
        .collect()
}

/// Opens a stream and returns the connection once `needle` has arrived.
pub async fn open_stream(server: &Server, path: &str, body: &Value, needle: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let text = request_text("POST", path, Some(&body.to_string()), &[]);
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream ended before {needle:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

/// A metric's value in `/metrics` text (the first series whose line starts with `prefix`).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
}
