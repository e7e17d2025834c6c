//! `lingo serve` as a user runs it: the binary binds, loads, answers, and on SIGTERM finishes and
//! exits cleanly; a model that cannot load is an error naming it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

fn request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[test]
fn serves_until_sigterm_then_exits_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(["serve", "--port", "0", "--model"])
        .arg(format!("cls={}", fixture("bert-cls").display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(&addr, "GET", "/health", "").0 != 200 {
        assert!(Instant::now() < deadline, "never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = request(
        &addr,
        "POST",
        "/classify",
        r#"{"inputs": "alice lives in paris"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("LABEL_"), "{body}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "exit {status}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

#[test]
fn a_model_that_cannot_load_is_an_error_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(["serve", "--port", "0", "--model", "ghost=/no/such/folder"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ghost") && err.contains("/no/such/folder"),
        "{err}"
    );
}
