//! The playground in a real browser: headless Chromium, driven over the Chrome DevTools Protocol,
//! loads the page from a running server, types a prompt and clicks Run for a streamed generation,
//! a classification and an attention map, and the rendered results are checked against the API's
//! answers for the same inputs. Screenshots go to the target directory. Skips (with a message)
//! only when no Chromium is installed — `.ci/run` installs Debian's.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use lingo_serve::Limits;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LINGO_CHROMIUM") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
    .find(|p| p.is_file())
}

/// One DevTools connection, attached to one page.
struct Browser {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    session: Option<String>,
    _process: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch(binary: &PathBuf) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut process = tokio::process::Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,820",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromium");
        let mut lines = BufReader::new(process.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(at) = line.find("ws://") {
                    return line[at..].trim().to_string();
                }
            }
            panic!("chromium exited without a DevTools address");
        })
        .await
        .expect("chromium did not start within 60 s");
        // Keep draining chromium's log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        Browser {
            ws,
            next_id: 0,
            session: None,
            _process: process,
            _profile: profile,
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            message["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        loop {
            let reply = self.ws.next().await.expect("DevTools closed").unwrap();
            let Ok(text) = reply.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    async fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({"url": url})).await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        self.session = Some(attached["sessionId"].as_str().unwrap().to_string());
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    async fn wait_for(&mut self, condition: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(condition).await != json!(true) {
            let status = self
                .eval("document.getElementById('status')?.textContent")
                .await;
            assert!(
                Instant::now() < deadline,
                "waited 30 s for {what}; status: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Picks an option of a `<select>` as a user does (the page hears `change`).
    async fn choose(&mut self, select: &str, value: &str) {
        let js = format!(
            "(() => {{ const s = document.getElementById('{select}'); s.value = '{value}'; \
             s.dispatchEvent(new Event('change')); return s.value; }})()"
        );
        assert_eq!(
            self.eval(&js).await,
            json!(value),
            "no option {value} in #{select}"
        );
    }

    /// Replaces a field's text by typing.
    async fn type_into(&mut self, field: &str, text: &str) {
        self.eval(&format!(
            "(() => {{ const f = document.getElementById('{field}'); f.focus(); f.select(); }})()"
        ))
        .await;
        self.call("Input.insertText", json!({"text": text})).await;
    }

    async fn click(&mut self, id: &str) {
        let rect = self
            .eval(&format!(
                "(() => {{ const r = document.getElementById('{id}').getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = (rect[0].as_f64().unwrap(), rect[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    async fn run_task(&mut self) {
        self.eval("document.getElementById('status').dataset.state = ''")
            .await;
        self.click("run").await;
        self.wait_for(
            "['done', 'error'].includes(document.getElementById('status').dataset.state)",
            "the task to finish",
        )
        .await;
        let state = self
            .eval("document.getElementById('status').dataset.state")
            .await;
        let result = self
            .eval("document.getElementById('result').textContent")
            .await;
        assert_eq!(state, "done", "the page shows an error: {result}");
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64_decode(shot["data"].as_str().unwrap());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= (value(c) as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_generates_and_classifies_in_chromium() {
    let Some(binary) = chromium() else {
        eprintln!("skipping the browser test: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let gpt = gpt_folder(&tmp.path().join("gpt"), 128, None);
    let server = start(
        vec![
            spec("gpt", &gpt),
            spec("cls", &fixture("bert-cls")),
            spec("ner", &fixture("bert-ner")),
        ],
        Limits::default(),
        None,
    )
    .await;
    let mut browser = Browser::launch(&binary).await;
    browser.open(&format!("http://{}/", server.addr)).await;
    browser
        .wait_for(
            "document.getElementById('status')?.dataset.state === 'ready'",
            "the page to list the models",
        )
        .await;

    // A streamed generation, greedy, rendered token by token.
    browser.choose("model", "gpt").await;
    browser.choose("task", "completions").await;
    browser.type_into("text", "Once upon").await;
    browser.type_into("temperature", "0").await;
    browser.type_into("max_tokens", "24").await;
    browser.run_task().await;
    let shown = browser
        .eval("document.getElementById('generated').textContent")
        .await;
    let api = post(
        &server,
        "/v1/completions",
        &json!({"model": "gpt", "prompt": "Once upon", "temperature": 0, "top_p": 1, "max_tokens": 24}),
    )
    .await
    .json();
    assert_eq!(shown, api["choices"][0]["text"]);
    assert!(!shown.as_str().unwrap().is_empty());
    browser.screenshot("playground-generation.png").await;

    // A classification, as ranked labels with bars.
    browser.choose("model", "cls").await;
    browser.choose("task", "classify").await;
    browser.type_into("text", "alice lives in paris").await;
    browser.run_task().await;
    let labels = browser
        .eval("[...document.querySelectorAll('.bar-row')].map(r => [r.querySelector('.label').textContent, r.querySelector('.score').textContent])")
        .await;
    let api = post(
        &server,
        "/classify",
        &json!({"model": "cls", "inputs": "alice lives in paris"}),
    )
    .await
    .json();
    let expected: Vec<Value> = api
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            json!([
                l["label"],
                format!("{:.1}%", 100.0 * l["score"].as_f64().unwrap())
            ])
        })
        .collect();
    assert_eq!(labels, json!(expected));
    browser.screenshot("playground-classification.png").await;

    // The attention heat map: a canvas a row and column per token, with layer and head pickers.
    browser.choose("model", "ner").await;
    browser.choose("task", "attention").await;
    browser.type_into("text", "alice lives in paris").await;
    browser.run_task().await;
    let layers = browser
        .eval("document.getElementById('layer').options.length")
        .await;
    let width = browser.eval("document.getElementById('heat').width").await;
    assert_eq!(layers, json!(2));
    assert!(width.as_u64().unwrap() > 100, "{width}");
    let shot = browser.screenshot("playground-attention.png").await;
    eprintln!("screenshots in {}", shot.parent().unwrap().display());
    server.shutdown();
}

/// The README's screenshot: `LINGO_SCREENSHOT_MODEL=DIR` (all-MiniLM-L6-v2) and
/// `cargo test -p lingo-serve --test browser -- --ignored` write docs/images/playground.png, the
/// attention map the playground draws for a sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "makes the README's screenshot from a real model: needs LINGO_SCREENSHOT_MODEL"]
async fn readme_screenshot() {
    let (Some(binary), Some(model)) = (chromium(), std::env::var_os("LINGO_SCREENSHOT_MODEL"))
    else {
        eprintln!("skipping: needs chromium and LINGO_SCREENSHOT_MODEL=DIR");
        return;
    };
    let server = start(
        vec![spec("all-MiniLM-L6-v2", std::path::Path::new(&model))],
        Limits::default(),
        None,
    )
    .await;
    let mut browser = Browser::launch(&binary).await;
    let text = "The animal didn't cross the street because it was too tired.";
    browser
        .open(&format!(
            "http://{}/#model=all-MiniLM-L6-v2&task=attention&text={}&run",
            server.addr,
            text.replace(' ', "%20")
        ))
        .await;
    browser
        .wait_for(
            "document.getElementById('status')?.dataset.state === 'done'",
            "the attention map",
        )
        .await;
    browser.choose("layer", "2").await;
    browser.choose("head", "5").await;
    let shot = browser.screenshot("playground.png").await;
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/images/playground.png");
    std::fs::copy(shot, out).unwrap();
    server.shutdown();
}
