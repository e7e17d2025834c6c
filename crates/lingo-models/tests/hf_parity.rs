//! Parity with `transformers` on tiny random-weight checkpoints (tools/make_hf_fixtures.py): every
//! hidden state and the head's output, on one sequence and on a padded batch, to 1e-4.

use candle_core::{DType, Device, Tensor};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::ModelInputs;
use lingo_nn::params::read_safetensors;
use lingo_nn::Ctx;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

/// The largest difference between `a` and the reference `b`, relative to `b`'s scale when that is
/// above 1 (large activations carry proportionally larger f32 rounding), so it compares with 1e-4.
fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let largest = |t: &Tensor| -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    largest(&(a - b).unwrap()) / largest(b).max(1.0)
}

fn input(expected: &HashMap<String, Tensor>, case: &str, key: &str) -> Option<Tensor> {
    expected
        .get(&format!("{case}.{key}"))
        .map(|t| t.to_dtype(DType::U32).unwrap())
}

/// The fixture's inputs for `case` (`single` or `batch`), asking for attention probabilities.
fn inputs(expected: &HashMap<String, Tensor>, case: &str) -> ModelInputs {
    ModelInputs {
        input_ids: input(expected, case, "input_ids").unwrap(),
        attention_mask: input(expected, case, "attention_mask"),
        token_type_ids: input(expected, case, "token_type_ids"),
        decoder_input_ids: input(expected, case, "decoder_input_ids"),
        output_attentions: true,
        predict_positions: None,
    }
}

fn load(dir: &std::path::Path) -> lingo_models::auto::Loaded {
    AutoModel::load(dir, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn check_encoder(name: &str) {
    let dir = fixture(name);
    let dev = Device::Cpu;
    let model = load(&dir).model;
    let expected = read_safetensors(&dir.join("expected.safetensors"), &dev).unwrap();
    for case in ["single", "batch"] {
        let out = model
            .forward(&inputs(&expected, case), &mut Ctx::eval())
            .unwrap_or_else(|e| panic!("{name} {case}: {e}"));
        let layers = expected
            .keys()
            .filter(|k| k.starts_with(&format!("{case}.hidden.")))
            .count();
        assert_eq!(
            out.hidden_states.len(),
            layers,
            "{name}: number of hidden states"
        );
        for (i, h) in out.hidden_states.iter().enumerate() {
            let want = &expected[&format!("{case}.hidden.{i}")];
            let d = max_diff(h, want);
            assert!(d < 1e-4, "{name} {case}: hidden state {i} differs by {d}");
        }
        let heads = expected
            .keys()
            .filter(|k| k.starts_with(&format!("{case}.attention.")))
            .count();
        assert_eq!(
            out.attentions.len(),
            heads,
            "{name}: number of attention maps"
        );
        for (i, a) in out.attentions.iter().enumerate() {
            let d = max_diff(a, &expected[&format!("{case}.attention.{i}")]);
            assert!(d < 1e-4, "{name} {case}: attention {i} differs by {d}");
        }
        let d = max_diff(&out.output, &expected[&format!("{case}.output")]);
        assert!(d < 1e-4, "{name} {case}: output differs by {d}");
        match (
            &out.pair_logits,
            expected.get(&format!("{case}.pair_output")),
        ) {
            (Some(got), Some(want)) => {
                let d = max_diff(got, want);
                assert!(
                    d < 1e-4,
                    "{name} {case}: sentence-pair logits differ by {d}"
                );
            }
            (None, None) => {}
            (got, _) => panic!("{name}: sentence-pair logits {}", got.is_some()),
        }
    }
}

#[test]
fn bert_family_matches_transformers() {
    for name in [
        "bert",
        "bert-mlm",
        "bert-cls",
        "bert-ner",
        "bert-qa",
        "roberta",
        "roberta-mlm",
        "roberta-cls",
        "albert",
        "albert-mlm",
        "distilbert",
        "distilbert-mlm",
        "distilbert-qa",
        "electra-discriminator",
        "electra-generator",
        "roberta-ner",
        "roberta-qa",
        "albert-cls",
        "distilbert-cls",
        "distilbert-ner",
        "electra-cls",
        "electra-qa",
        "bert-pretraining",
        "albert-pretraining",
    ] {
        check_encoder(name);
    }
}

/// Folders `transformers` 4's `prune_heads` wrote (tools/make_pruning_fixtures.py): narrower
/// attention in each layer, `pruned_heads` in config.json.
#[test]
fn head_pruned_folders_match_transformers() {
    for name in ["bert-cls-pruned", "distilbert-cls-pruned"] {
        check_encoder(name);
    }
}

/// A copy of a fixture folder that a test may break.
fn scratch_copy(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    tmp
}

fn load_error(dir: &std::path::Path) -> String {
    match AutoModel::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_folders_give_errors_that_name_the_problem() {
    // Only pickle weights.
    let tmp = scratch_copy("bert");
    std::fs::rename(
        tmp.path().join("model.safetensors"),
        tmp.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let err = load_error(tmp.path());
    assert!(
        err.contains("pytorch_model.bin") && err.contains("safetensors"),
        "{err}"
    );

    // Unknown model_type.
    let tmp = scratch_copy("bert");
    let config = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"model_type\": \"bert\"", "\"model_type\": \"bort\""),
    )
    .unwrap();
    let err = load_error(tmp.path());
    assert!(err.contains("bort") && err.contains("config.json"), "{err}");

    // A missing tensor and a shape mismatch, named with the expected shape.
    let tmp = scratch_copy("bert-mlm");
    let weights = tmp.path().join("model.safetensors");
    let mut tensors = read_safetensors(&weights, &Device::Cpu).unwrap();
    tensors.remove("cls.predictions.bias");
    let save = |tensors: &HashMap<String, Tensor>| {
        let list: Vec<(String, Tensor)> = tensors.clone().into_iter().collect();
        std::fs::write(
            &weights,
            lingo_nn::params::tensors_to_safetensors(&list, None).unwrap(),
        )
        .unwrap();
    };
    save(&tensors);
    let err = load_error(tmp.path());
    assert!(
        err.contains("cls.predictions.bias") && err.contains("missing") && err.contains("[99]"),
        "{err}"
    );
    // Unless the caller allows it: then it is initialised afresh and reported.
    let options = LoadOptions {
        allow_missing: vec!["predictions.bias".into()],
        ..LoadOptions::default()
    };
    let loaded = AutoModel::load(tmp.path(), &options).expect("allowed to be missing");
    assert_eq!(loaded.report.newly_initialized, ["cls.predictions.bias"]);
    tensors.insert(
        "cls.predictions.bias".into(),
        Tensor::zeros(98, DType::F32, &Device::Cpu).unwrap(),
    );
    save(&tensors);
    let err = load_error(tmp.path());
    assert!(
        err.contains("cls.predictions.bias") && err.contains("[98]") && err.contains("[99]"),
        "{err}"
    );

    // A truncated weights file.
    let tmp = scratch_copy("bert");
    let weights = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(tmp.path());
    assert!(err.contains("model.safetensors"), "{err}");

    // Too many tokens for the positions.
    let dev = Device::Cpu;
    let model = load(&fixture("bert")).model;
    let ids = Tensor::zeros((1, 65), DType::U32, &dev).unwrap();
    let err = (model.forward(&ModelInputs::new(ids), &mut Ctx::eval()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("65") && err.contains("64"), "{err}");
}

#[test]
fn gpt2_matches_transformers() {
    let dir = fixture("gpt2");
    let dev = Device::Cpu;
    let model = load(&dir).model;
    let expected = read_safetensors(&dir.join("expected.safetensors"), &dev).unwrap();
    for case in ["single", "batch"] {
        let out = model
            .forward(&inputs(&expected, case), &mut Ctx::eval())
            .unwrap();
        let (logits, hidden, attentions) = (out.output, out.hidden_states, out.attentions);
        assert_eq!(attentions.len(), 2, "gpt2: number of attention maps");
        for (i, a) in attentions.iter().enumerate() {
            let d = max_diff(a, &expected[&format!("{case}.attention.{i}")]);
            assert!(d < 1e-4, "gpt2 {case}: attention {i} differs by {d}");
        }
        for (i, h) in hidden.iter().enumerate() {
            let d = max_diff(h, &expected[&format!("{case}.hidden.{i}")]);
            assert!(d < 1e-4, "gpt2 {case}: hidden state {i} differs by {d}");
        }
        assert_eq!(hidden.len(), 3, "gpt2: number of hidden states");
        let d = max_diff(&logits, &expected[&format!("{case}.output")]);
        assert!(d < 1e-4, "gpt2 {case}: logits differ by {d}");
    }
}

#[test]
fn encoder_decoders_match_transformers() {
    for name in ["bart", "marian", "t5", "t5-v1_1"] {
        let dir = fixture(name);
        let dev = Device::Cpu;
        let model = load(&dir).model;
        let expected = read_safetensors(&dir.join("expected.safetensors"), &dev).unwrap();
        for case in ["single", "batch"] {
            let out = model
                .forward(&inputs(&expected, case), &mut Ctx::eval())
                .unwrap();
            for (side, states) in [
                ("hidden", &out.encoder_hidden_states),
                ("decoder_hidden", &out.hidden_states),
                ("attention", &out.encoder_attentions),
                ("decoder_attention", &out.attentions),
                ("cross_attention", &out.cross_attentions),
            ] {
                let n = expected
                    .keys()
                    .filter(|k| k.starts_with(&format!("{case}.{side}.")))
                    .count();
                assert_eq!(states.len(), n, "{name} {case}: number of {side} states");
                for (i, h) in states.iter().enumerate() {
                    let d = max_diff(h, &expected[&format!("{case}.{side}.{i}")]);
                    assert!(d < 1e-4, "{name} {case}: {side} state {i} differs by {d}");
                }
            }
            let d = max_diff(&out.output, &expected[&format!("{case}.output")]);
            assert!(d < 1e-4, "{name} {case}: logits differ by {d}");
        }
    }
}

/// Every architecture saved by Lingo and loaded again gives the same output, and the saved folder has
/// the original's tensor names and shapes (what `transformers` needs to load it).
#[test]
fn save_then_load_gives_the_same_model() {
    let dev = Device::Cpu;
    for name in [
        "bert",
        "bert-mlm",
        "albert-mlm",
        "distilbert-qa",
        "electra-generator",
        "gpt2",
        "t5",
        "t5-v1_1",
        "bart",
        "marian",
    ] {
        let dir = fixture(name);
        let expected = read_safetensors(&dir.join("expected.safetensors"), &dev).unwrap();
        let inputs = inputs(&expected, "batch");
        let original = load(&dir);
        let tmp = tempfile::tempdir().unwrap();
        original.save(tmp.path()).unwrap();
        let reloaded = load(tmp.path());
        let run = |m: &AutoModel| m.forward(&inputs, &mut Ctx::eval()).unwrap().output;
        let d = max_diff(&run(&original.model), &run(&reloaded.model));
        assert!(d == 0.0, "{name}: reloaded output differs by {d}");
        let before = read_safetensors(&dir.join("model.safetensors"), &dev).unwrap();
        let after = read_safetensors(&tmp.path().join("model.safetensors"), &dev).unwrap();
        let mut a: Vec<_> = before
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        let mut b: Vec<_> = after
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{name}: saved tensors differ from the original's");
    }
}

/// The dtype a folder is saved in: the checkpoint's own by default (a bf16 checkpoint stays bf16,
/// its `config.json` saying so), or the one asked for; Lingo computes in f32 either way.
#[test]
fn folders_are_saved_in_their_dtype() {
    let dev = Device::Cpu;
    let dir = fixture("bert");
    let expected = read_safetensors(&dir.join("expected.safetensors"), &dev).unwrap();
    let inputs = inputs(&expected, "batch");
    let run = |m: &AutoModel| m.forward(&inputs, &mut Ctx::eval()).unwrap().output;
    let dtypes = |folder: &std::path::Path| -> Vec<DType> {
        let tensors = read_safetensors(&folder.join("model.safetensors"), &dev).unwrap();
        let mut d: Vec<_> = tensors.values().map(|t| t.dtype()).collect();
        d.dedup();
        d
    };
    let config = |folder: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap()).unwrap()
    };

    // Asked for bf16: every tensor is written as bf16 and the config says so.
    let options = LoadOptions {
        dtype: Some(DType::BF16),
        ..LoadOptions::default()
    };
    let original = AutoModel::load(&dir, &options).unwrap();
    let bf16 = tempfile::tempdir().unwrap();
    original.save(bf16.path()).unwrap();
    assert_eq!(dtypes(bf16.path()), [DType::BF16]);
    assert_eq!(config(bf16.path())["dtype"], "bfloat16");

    // Reloaded with no option, it stays bf16 on disk, and computes in f32 on the rounded weights:
    // close to the f32 model, not equal to it.
    let reloaded = load(bf16.path());
    assert_eq!(reloaded.config["dtype"], "bfloat16");
    let resaved = tempfile::tempdir().unwrap();
    reloaded.save(resaved.path()).unwrap();
    assert_eq!(dtypes(resaved.path()), [DType::BF16]);
    let (full, rounded) = (run(&original.model), run(&reloaded.model));
    assert_eq!(rounded.dtype(), DType::F32);
    let d = max_diff(&rounded, &full);
    assert!(d > 0.0 && d < 0.05, "bf16 weights moved the output by {d}");

    // Without a declared dtype the stored tensors decide.
    let mut undeclared = config(bf16.path());
    undeclared.as_object_mut().unwrap().remove("dtype");
    std::fs::write(bf16.path().join("config.json"), undeclared.to_string()).unwrap();
    assert_eq!(load(bf16.path()).config["dtype"], "bfloat16");

    // Asked for f32 again: back to f32, the config following.
    let options = LoadOptions {
        dtype: Some(DType::F32),
        ..LoadOptions::default()
    };
    let f32_dir = tempfile::tempdir().unwrap();
    (AutoModel::load(bf16.path(), &options).unwrap())
        .save(f32_dir.path())
        .unwrap();
    assert_eq!(dtypes(f32_dir.path()), [DType::F32]);
    assert_eq!(config(f32_dir.path())["dtype"], "float32");

    // A dtype the config cannot mean, or one weights are not saved in, is refused by name.
    let tmp = scratch_copy("bert");
    let mut bad = config(tmp.path());
    bad["dtype"] = "float8".into();
    std::fs::write(tmp.path().join("config.json"), bad.to_string()).unwrap();
    let err = load_error(tmp.path());
    assert!(
        err.contains("config.json") && err.contains("dtype") && err.contains("float8"),
        "{err}"
    );
    let options = LoadOptions {
        dtype: Some(DType::U8),
        ..LoadOptions::default()
    };
    let err = AutoModel::load(&dir, &options).err().unwrap().to_string();
    assert!(err.contains("bfloat16") && err.contains("U8"), "{err}");
}
