//! Every route of `lingo serve` on tiny models, against what the library's pipelines return for
//! the same inputs; streaming; batching; auth; every error status; client disconnects.

mod common;

use common::*;
use lingo_generate::SamplingConfig;
use lingo_nn::LingoRng;
use lingo_serve::Limits;
use lingo_tasks::encoder::{EncoderPipeline, Pooling};
use lingo_tasks::{LanguageModel, Translator};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The library's greedy continuation, the reference for the server's.
fn greedy(dir: &std::path::Path, prompt: &str, max: usize) -> String {
    let lm = LanguageModel::load(dir).unwrap();
    let cfg = SamplingConfig {
        stop_tokens: lm.eos.into_iter().collect(),
        ..SamplingConfig::greedy(max)
    };
    lm.generate(prompt, &cfg, &mut LingoRng::new(0), |_| {})
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_routes_describe_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = gpt_folder(&tmp.path().join("gpt"), 128, None);
    let server = start(
        vec![spec("gpt", &gpt), spec("cls", &fixture("bert-cls"))],
        Limits::default(),
        None,
    )
    .await;
    let health = get(&server, "/health").await;
    assert_eq!(health.status, 200);
    let info = get(&server, "/info").await.json();
    assert_eq!(info["models"][0]["name"], "gpt");
    assert_eq!(info["models"][0]["max_positions"], 128);
    let tasks: Vec<&str> = info["models"][1]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["embed", "attention", "classify", "tokenize"]);
    assert_eq!(info["limits"]["max_concurrent_requests"], 128);
    let models = get(&server, "/v1/models").await.json();
    assert_eq!(models["data"][1]["id"], "cls");
    let page = get(&server, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.headers.contains("text/html"));
    let metrics = get(&server, "/metrics").await;
    assert!(metrics.headers.contains("text/plain"));
    assert_eq!(
        metric(
            &metrics.body,
            "lingo_requests_total{route=\"/info\",status=\"200\"}"
        ),
        1.0
    );
    server.shutdown();
    server.finished().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_match_the_library_and_honour_stop_seed_and_n() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = gpt_folder(&tmp.path().join("gpt"), 128, None);
    let server = start(vec![spec("gpt", &gpt)], Limits::default(), None).await;
    let prompt = "Hello there";
    let expected = greedy(&gpt, prompt, 12);
    let r = post(
        &server,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 12, "temperature": 0}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "gpt");
    assert_eq!(v["choices"][0]["text"], expected.as_str());
    let prompt_tokens = prompt.chars().count() as u64;
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&completion));
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + completion);

    // A stop string cuts the text before it; the reason is "stop".
    let cut: String = expected.chars().skip(3).take(2).collect();
    let at = expected.find(&cut).unwrap();
    let v = post(
        &server,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 12, "temperature": 0, "stop": cut}),
    )
    .await
    .json();
    assert_eq!(v["choices"][0]["text"], &expected[..at]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // Sampling with a seed is reproducible; n choices differ from one another.
    let body = json!({"prompt": [prompt, "Other"], "max_tokens": 20, "temperature": 1.5, "seed": 7, "n": 3});
    let a = post(&server, "/v1/completions", &body).await.json();
    let b = post(&server, "/v1/completions", &body).await.json();
    assert_eq!(a["choices"], b["choices"]);
    let choices = a["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 6);
    assert!(choices.iter().enumerate().all(|(i, c)| c["index"] == i));
    assert_ne!(choices[0]["text"], choices[1]["text"]);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_carry_the_same_text_then_done() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = gpt_folder(&tmp.path().join("gpt"), 128, None);
    let server = start(vec![spec("gpt", &gpt)], Limits::default(), None).await;
    let body = json!({"prompt": "Once", "max_tokens": 15, "temperature": 0});
    let whole = post(&server, "/v1/completions", &body).await.json();
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let r = post(&server, "/v1/completions", &streaming).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("text/event-stream"), "{}", r.headers);
    let data = sse_data(&r.body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() > 2, "{data:?}");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap()["usage"], whole["usage"]);

    // Chat: the fallback template, the first delta names the role.
    let chat = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10,
                      "temperature": 0, "stream": true});
    let r = post(&server, "/v1/chat/completions", &chat).await;
    let data = sse_data(&r.body);
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let expected = greedy(&gpt, "user: hi\nassistant:", 10);
    let expected = expected.split("\nuser:").next().unwrap();
    assert_eq!(text, expected);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_uses_the_folders_template() {
    let tmp = tempfile::tempdir().unwrap();
    let template = "{% for m in messages %}{{ m.role[0] | upper }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}A:{% endif %}";
    let gpt = gpt_folder(&tmp.path().join("gpt"), 128, Some(template));
    let server = start(vec![spec("gpt", &gpt)], Limits::default(), None).await;
    let v = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "system", "content": "Be kind"}, {"role": "user", "content": "hi"}],
                "max_tokens": 8, "temperature": 0}),
    )
    .await
    .json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        greedy(&gpt, "S: Be kind\nU: hi\nA:", 8).as_str()
    );
    assert_eq!(v["usage"]["prompt_tokens"], "S: Be kind\nU: hi\nA:".len());
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_generations_share_steps_and_equal_each_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = gpt_folder(&tmp.path().join("gpt"), 256, None);
    let server = start(vec![spec("gpt", &gpt)], Limits::default(), None).await;
    let prompts = ["The", "A longer prompt here", "x", "Numbers 123"];
    let requests = prompts.iter().map(|p| {
        let body = json!({"prompt": p, "max_tokens": 60, "temperature": 0});
        let server = &server;
        async move { post(server, "/v1/completions", &body).await.json() }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (p, a) in prompts.iter().zip(&answers) {
        assert_eq!(a["choices"][0]["text"], greedy(&gpt, p, 60).as_str(), "{p}");
    }
    let text = get(&server, "/metrics").await.body;
    let steps = metric(&text, "lingo_batch_size_count{kind=\"generation\"}");
    let single = metric(
        &text,
        "lingo_batch_size_bucket{kind=\"generation\",le=\"1\"}",
    );
    assert!(steps > single, "no step ran more than one sequence: {text}");
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_routes_match_the_pipelines() {
    let names = ["bert-cls", "bert-mlm", "bert-ner", "bert-qa", "bert"];
    let specs = names.iter().map(|n| spec(n, &fixture(n))).collect();
    let server = start(specs, Limits::default(), None).await;
    let text = "alice lives in paris";

    let cls = EncoderPipeline::load(&fixture("bert-cls")).unwrap();
    let expected = serde_json::to_value(cls.classify(text).unwrap()).unwrap();
    let one = post(&server, "/classify", &json!({"inputs": text}))
        .await
        .json();
    assert_eq!(one, expected);
    let many = post(
        &server,
        "/classify",
        &json!({"inputs": [text, "the cat"], "top_k": 1}),
    )
    .await
    .json();
    assert_eq!(many[0][0], expected[0]);
    assert_eq!(many[1].as_array().unwrap().len(), 1);

    let embedding = cls.embed(&[text], Pooling::Mean).unwrap();
    let embed = post(
        &server,
        "/embed",
        &json!({"inputs": [text], "model": "bert-cls"}),
    )
    .await
    .json();
    assert_eq!(embed, json!(embedding));
    let openai = post(
        &server,
        "/v1/embeddings",
        &json!({"input": text, "model": "bert-cls"}),
    )
    .await
    .json();
    assert_eq!(openai["data"][0]["embedding"], json!(embedding[0]));
    let tokens = post(
        &server,
        "/tokenize",
        &json!({"inputs": text, "model": "bert-cls"}),
    )
    .await
    .json();
    assert_eq!(
        openai["usage"]["prompt_tokens"],
        tokens.as_array().unwrap().len()
    );
    let unit = post(
        &server,
        "/embed",
        &json!({"inputs": text, "model": "bert-cls", "normalize": true}),
    )
    .await
    .json();
    let norm: f64 = unit[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum();
    assert!((norm - 1.0).abs() < 1e-4);

    let mlm = EncoderPipeline::load(&fixture("bert-mlm")).unwrap();
    let masked = "alice lives in [MASK]";
    let fills = post(
        &server,
        "/fill-mask",
        &json!({"inputs": masked, "top_k": 3}),
    )
    .await
    .json();
    assert_eq!(
        fills,
        serde_json::to_value(mlm.fill_mask(masked, 3).unwrap()).unwrap()
    );

    let ner = EncoderPipeline::load(&fixture("bert-ner")).unwrap();
    let entities = post(&server, "/ner", &json!({"inputs": [text]}))
        .await
        .json();
    assert_eq!(
        entities[0],
        serde_json::to_value(ner.ner(text).unwrap()).unwrap()
    );

    let qa = EncoderPipeline::load(&fixture("bert-qa")).unwrap();
    let answer = post(
        &server,
        "/qa",
        &json!({"question": "who?", "context": text}),
    )
    .await
    .json();
    assert_eq!(
        answer,
        serde_json::to_value(qa.answer("who?", text).unwrap()).unwrap()
    );
    let answers = post(
        &server,
        "/qa",
        &json!({"inputs": [{"question": "where?", "context": text}]}),
    )
    .await
    .json();
    assert_eq!(
        answers[0],
        serde_json::to_value(qa.answer("where?", text).unwrap()).unwrap()
    );

    let att = post(
        &server,
        "/attention",
        &json!({"inputs": text, "model": "bert"}),
    )
    .await
    .json();
    let (tokens, maps) = EncoderPipeline::load(&fixture("bert"))
        .unwrap()
        .attention(text)
        .unwrap();
    assert_eq!(att["tokens"], json!(tokens));
    assert_eq!(att["layers"], maps.len());
    assert_eq!(att["attentions"], json!(maps));

    let tokens = post(
        &server,
        "/tokenize",
        &json!({"inputs": "alice lives", "model": "bert"}),
    )
    .await
    .json();
    let texts: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["[CLS]", "alice", "li", "##ve", "##s", "[SEP]"]);
    assert_eq!(tokens[2]["start"], 6);
    assert_eq!(tokens[2]["stop"], 8);
    assert_eq!(tokens[0]["special"], true);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_pool_as_a_sentence_transformers_folder_says() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("st");
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for f in std::fs::read_dir(fixture("bert")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        json!({"word_embedding_dimension": 32, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}).to_string(),
    )
    .unwrap();
    let modules = json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]);
    std::fs::write(dir.join("modules.json"), modules.to_string()).unwrap();
    let server = start(vec![spec("st", &dir)], Limits::default(), None).await;
    let text = "alice lives in paris";
    let mut cls = EncoderPipeline::load(&dir)
        .unwrap()
        .embed(&[text], Pooling::Cls)
        .unwrap()
        .remove(0);
    let norm = cls.iter().map(|x| x * x).sum::<f32>().sqrt();
    cls.iter_mut().for_each(|x| *x /= norm);
    let v = post(&server, "/v1/embeddings", &json!({"input": [text]}))
        .await
        .json();
    let got: Vec<f32> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(got, cls);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_encoder_requests_run_as_one_batch() {
    let limits = Limits {
        batch_wait_ms: 200,
        ..Limits::default()
    };
    let server = start(vec![spec("cls", &fixture("bert-cls"))], limits, None).await;
    let texts = ["alice lives in paris", "the cat", "a b c d e f g", "bob"];
    let cls = EncoderPipeline::load(&fixture("bert-cls")).unwrap();
    let requests = texts.iter().map(|t| {
        let server = &server;
        async move {
            post(server, "/classify", &json!({"inputs": t}))
                .await
                .json()
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (t, a) in texts.iter().zip(&answers) {
        let alone = serde_json::to_value(cls.classify(t).unwrap()).unwrap();
        for (x, y) in a.as_array().unwrap().iter().zip(alone.as_array().unwrap()) {
            assert_eq!(x["label"], y["label"]);
            assert!((x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 1e-5);
        }
    }
    let text = get(&server, "/metrics").await.body;
    let batches = metric(&text, "lingo_batch_size_count{kind=\"encoder\"}");
    assert!(
        batches < texts.len() as f64,
        "each request ran alone: {text}"
    );
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translate_and_summarize_match_the_translator() {
    let server = start(vec![spec("t5", &fixture("t5"))], Limits::default(), None).await;
    let translator = Translator::load(&fixture("t5")).unwrap();
    let inputs = ["the cat sat on the mat", "alice lives in paris"];
    let expected: Vec<String> = translator
        .translate(&inputs.map(String::from), &translator.beam, 2)
        .unwrap()
        .into_iter()
        .map(|t| t.text)
        .collect();
    let v = post(&server, "/translate", &json!({"inputs": inputs}))
        .await
        .json();
    assert_eq!(v[0]["translation_text"], expected[0].as_str());
    assert_eq!(v[1]["translation_text"], expected[1].as_str());
    let one = post(
        &server,
        "/summarize",
        &json!({"inputs": inputs[0], "num_beams": 1, "max_length": 5}),
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert!(one.json()["summary_text"].is_string());
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = gpt_folder(&tmp.path().join("gpt"), 64, None);
    let limits = Limits {
        max_input_tokens: 20,
        max_total_tokens: 40,
        max_body_bytes: 1000,
        ..Limits::default()
    };
    let server = start(
        vec![spec("gpt", &gpt), spec("cls", &fixture("bert-cls"))],
        limits,
        None,
    )
    .await;
    let raw = |body: &'static str| send(&server, "POST", "/v1/completions", Some(body), &[]);

    let r = raw("{\"prompt\": \"hi\",").await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("not valid JSON"), "{}", r.body);
    let r = raw("{\"prompt\": \"hi\", \"max_tokens\": \"many\"}").await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("max_tokens"), "{}", r.body);
    let r = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": 1, "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("messages[0].role"), "{}", r.body);
    let r = post(
        &server,
        "/v1/completions",
        &json!({"prompt": "hi", "model": "nope"}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(
        r.error().contains("nope") && r.error().contains("gpt, cls"),
        "{}",
        r.body
    );
    let r = post(
        &server,
        "/classify",
        &json!({"inputs": "hi", "model": "gpt"}),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("cannot classify"), "{}", r.body);
    let r = post(&server, "/nowhere", &json!({})).await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("/nowhere"));
    let r = get(&server, "/v1/completions").await;
    assert_eq!(r.status, 405);

    let long = "x".repeat(30);
    let r = post(&server, "/v1/completions", &json!({"prompt": long})).await;
    assert_eq!(r.status, 422);
    assert!(
        r.error().contains("30 tokens") && r.error().contains("--max-input-tokens"),
        "{}",
        r.body
    );
    let r = post(
        &server,
        "/v1/completions",
        &json!({"prompt": "x".repeat(15), "max_tokens": 30}),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(
        r.error().contains("45 tokens") && r.error().contains("--max-total-tokens"),
        "{}",
        r.body
    );
    let r = post(&server, "/classify", &json!({"inputs": "word ".repeat(25)})).await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("--max-input-tokens"), "{}", r.body);
    let r = post(
        &server,
        "/v1/completions",
        &json!({"prompt": "x".repeat(2000)}),
    )
    .await;
    assert_eq!(r.status, 413);
    r.error();
    let r = post(
        &server,
        "/v1/completions",
        &json!({"prompt": "hi", "temperature": -1}),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("temperature"));
    let r = post(
        &server,
        "/v1/completions",
        &json!({"prompt": vec!["a"; 20], "n": 4}),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("80 sequences"), "{}", r.body);
    let r = post(&server, "/fill-mask", &json!({"inputs": "hi"})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let text = get(&server, "/metrics").await.body;
    assert!(
        metric(
            &text,
            "lingo_requests_total{route=\"/v1/completions\",status=\"422\"}"
        ) >= 5.0
    );
    assert_eq!(
        metric(
            &text,
            "lingo_requests_total{route=\"unmatched\",status=\"404\"}"
        ),
        1.0
    );
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_guards_every_route_but_health() {
    let server = start(
        vec![spec("cls", &fixture("bert-cls"))],
        Limits::default(),
        Some("s3cret"),
    )
    .await;
    assert_eq!(get(&server, "/health").await.status, 200);
    assert_eq!(get(&server, "/").await.status, 200);
    let r = get(&server, "/info").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error_type"], "unauthorized");
    let body = json!({"inputs": "hi"}).to_string();
    let wrong = send(
        &server,
        "POST",
        "/classify",
        Some(&body),
        &[("Authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    let right = send(
        &server,
        "POST",
        "/classify",
        Some(&body),
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(right.status, 200);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_unless_an_origin_is_given() {
    let preflight = [
        ("Origin", "http://app.example"),
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "content-type, authorization",
        ),
    ];
    let closed = start(
        vec![spec("cls", &fixture("bert-cls"))],
        Limits::default(),
        None,
    )
    .await;
    let r = send(&closed, "OPTIONS", "/classify", None, &preflight).await;
    assert!(
        !r.headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{}",
        r.headers
    );
    closed.shutdown();
    let open = start_with(lingo_serve::ServeConfig {
        models: vec![spec("cls", &fixture("bert-cls"))],
        port: 0,
        api_key: Some("k".into()),
        cors_origins: vec!["http://app.example".into()],
        ..Default::default()
    })
    .await;
    // The preflight carries no key and must still succeed.
    let r = send(&open, "OPTIONS", "/classify", None, &preflight).await;
    assert_eq!(r.status, 200, "{}", r.headers);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: http://app.example"),
        "{}",
        r.headers
    );
    let other = [
        ("Origin", "http://elsewhere.example"),
        ("Authorization", "Bearer k"),
    ];
    let r = send(&open, "GET", "/info", None, &other).await;
    assert_eq!(r.status, 200);
    assert!(!r
        .headers
        .to_ascii_lowercase()
        .contains("access-control-allow-origin"));
    open.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_concurrency_limit_requests_get_429_and_a_gone_client_frees_its_slot() {
    let tmp = tempfile::tempdir().unwrap();
    // Wide enough that 2,000 tokens take seconds.
    let gpt = sized_gpt_folder(&tmp.path().join("gpt"), 2048, 256, 4, None);
    let limits = Limits {
        max_concurrent_requests: 1,
        max_input_tokens: 100,
        max_total_tokens: 2048,
        ..Limits::default()
    };
    let server = start(vec![spec("gpt", &gpt)], limits, None).await;
    let long = json!({"prompt": "Go", "max_tokens": 2000, "temperature": 1, "stream": true,
                      "seed": 1, "ignore_eos": true});
    let stream = open_stream(&server, "/v1/completions", &long, "\"text\"").await;
    let r = post(
        &server,
        "/v1/completions",
        &json!({"prompt": "hi", "max_tokens": 1}),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error_type"], "overloaded");
    // /health is not limited and does not wait for the model (whose 2,000 tokens take seconds);
    // the 50 ms bound under load is `lingo bench serve`'s to measure, on a quiet machine.
    let started = Instant::now();
    assert_eq!(get(&server, "/health").await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(1000));
    // The engine reports its batch just after sending the first token: allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = get(&server, "/metrics").await.body;
        if metric(&text, "lingo_running_sequences") == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the sequence never ran: {text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = get(&server, "/metrics").await.body;
        if metric(&text, "lingo_running_sequences") == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the generation went on after its client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = post(
        &server,
        "/v1/completions",
        &json!({"prompt": "hi", "max_tokens": 1}),
    )
    .await;
    assert_eq!(r.status, 200, "the slot was not freed: {}", r.body);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_loading_and_shutdown_finishes_in_flight_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = gpt_folder(&tmp.path().join("gpt"), 512, None);
    let server = lingo_serve::Server::start(
        lingo_serve::ServeConfig {
            models: vec![spec("gpt", &gpt)],
            port: 0,
            ..Default::default()
        },
        false,
    )
    .await
    .unwrap();
    // Loading runs in the background; the first probe usually beats it.
    let first = get(&server, "/health").await;
    assert!(first.status == 503 || first.status == 200);
    if first.status == 503 {
        assert_eq!(first.json()["status"], "loading");
    }
    server.wait_loaded().await.unwrap();
    let body = json!({"prompt": "Go", "max_tokens": 400, "temperature": 1, "seed": 3, "stream": true,
                      "ignore_eos": true});
    let stream = open_stream(&server, "/v1/completions", &body, "\"text\"").await;
    server.shutdown();
    // The stream still runs to its end.
    let mut stream = stream;
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    server.finished().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_fails_to_load_stops_the_server_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), "{ not json").unwrap();
    let server = lingo_serve::Server::start(
        lingo_serve::ServeConfig {
            models: vec![spec("broken", tmp.path())],
            port: 0,
            ..Default::default()
        },
        false,
    )
    .await
    .unwrap();
    let err = server.wait_loaded().await.unwrap_err();
    assert!(
        err.contains("broken") && err.contains("config.json"),
        "{err}"
    );
    assert!(server.finished().await.is_err());
}
