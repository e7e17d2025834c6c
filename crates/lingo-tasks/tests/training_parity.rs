//! Fine-tuning is right for every family and head (BERT family, GPT-2, T5, BART, Marian): on the
//! tiny random checkpoints, the task loss, every parameter's gradient, and the weights after one
//! AdamW step and after one Adafactor step equal PyTorch's (dropout off; fixtures by
//! `tools/make_train_parity_fixtures.py`).

use candle_core::{DType, Device, IndexOp, Tensor};
use lingo_kernels::{cross_entropy, CrossEntropy};
use lingo_models::auto::{AutoModel, LoadOptions, Loaded};
use lingo_models::{ModelInputs, Seq2SeqBatch, Seq2SeqLoss};
use lingo_nn::params::read_safetensors;
use lingo_nn::Ctx;
use lingo_train::grads::Gradients;
use lingo_train::{AdafactorConfig, AdamWConfig, DecayPolicy, Optimizer, OptimizerConfig};
use std::collections::HashMap;
use std::path::PathBuf;

const CASES: [&str; 12] = [
    "bert-cls",
    "roberta-cls",
    "albert-cls",
    "distilbert-cls",
    "electra-cls",
    "bert-ner",
    "roberta-ner",
    "distilbert-ner",
    "bert-qa",
    "roberta-qa",
    "distilbert-qa",
    "electra-qa",
];

fn folder(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

/// The AdamW step of the fixtures (`tools/make_train_parity_fixtures.py`'s `ADAMW`).
fn adamw() -> OptimizerConfig {
    OptimizerConfig::AdamW(AdamWConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    })
}

/// The optimizers whose first step is compared: (config, name for messages, fixture key prefix).
fn optimizers() -> [(OptimizerConfig, &'static str, &'static str); 2] {
    let adafactor = OptimizerConfig::Adafactor(AdafactorConfig::default());
    [
        (adamw(), "AdamW", "adamw"),
        (adafactor, "Adafactor", "adafactor"),
    ]
}

/// One step of `config` on `store` with `loss`'s gradients.
fn take_step(
    config: &OptimizerConfig,
    store: &lingo_nn::ParamStore,
    loss: &Tensor,
) -> anyhow::Result<()> {
    let mut opt = Optimizer::new(config.clone(), store, DecayPolicy::All, &[]);
    let grads = Gradients::from_store(&opt.params(), &loss.backward()?);
    opt.step(0, &grads, config.lr(), 1.0)?;
    Ok(())
}

/// `max |a − b| / max(max |b|, floor)` over a tensor: relative, except for tensors that are zero
/// up to rounding (the last layer's norm bias under a QA loss, whose position gradients sum to 0),
/// which are held to `floor` absolutely.
fn relative_error(a: &Tensor, b: &Tensor, floor: f32) -> f32 {
    let a = a.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("a");
    let b = b.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("b");
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(floor, |m, x| m.max(x.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

/// Weights after one step equal PyTorch's, `reference_grad` being PyTorch's gradient.
///
/// Both AdamW and Adafactor divide by the gradient's own size (Adam's first step is
/// lr·g/(|g| + eps)), so where a gradient is zero up to rounding — an attention key bias, which
/// softmax ignores, the last norm's bias under a QA loss, single entries near 0 — the step is
/// rounding noise on either side. Those entries are left out (the gradients themselves are compared
/// on their own); everywhere else the step must agree.
fn assert_step(
    label: &str,
    got: &Tensor,
    want: &Tensor,
    reference_grad: &Tensor,
) -> anyhow::Result<()> {
    let grad = reference_grad.flatten_all()?.to_vec1::<f32>()?;
    let g_max = grad.iter().fold(0f32, |m, x| m.max(x.abs()));
    let got = got.flatten_all()?.to_vec1::<f32>()?;
    let want = want.flatten_all()?.to_vec1::<f32>()?;
    let scale = want.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    for (i, ((a, b), g)) in got.iter().zip(&want).zip(&grad).enumerate() {
        if g_max < 1e-6 || g.abs() < 1e-3 * g_max {
            continue;
        }
        let err = (a - b).abs() / scale;
        assert!(err < 2e-5, "{label}: entry {i} is off by {err:e}");
    }
    Ok(())
}

/// The head's loss as `transformers` computes it for `case`.
fn task_loss(
    case: &str,
    output: &Tensor,
    f: &HashMap<String, Tensor>,
) -> candle_core::Result<Tensor> {
    let ce = |logits: &Tensor, targets: &Tensor| {
        let opts = CrossEntropy {
            ignore_index: Some(-100),
            ..CrossEntropy::default()
        };
        cross_entropy(logits, &targets.to_dtype(DType::I64)?, opts)
    };
    if case.ends_with("-qa") {
        let start = ce(&output.i((.., .., 0))?.contiguous()?, &f["start_positions"])?;
        let end = ce(&output.i((.., .., 1))?.contiguous()?, &f["end_positions"])?;
        (start + end)? / 2.0
    } else {
        ce(output, &f["labels"])
    }
}

fn load(case: &str, options: &LoadOptions) -> anyhow::Result<Loaded> {
    Ok(AutoModel::load(&folder(case), options)?)
}

/// The fixture batch's encoder inputs.
fn encoder_inputs(f: &HashMap<String, Tensor>) -> anyhow::Result<ModelInputs> {
    Ok(ModelInputs {
        input_ids: f["input_ids"].to_dtype(DType::U32)?,
        attention_mask: Some(f["attention_mask"].to_dtype(DType::U32)?),
        token_type_ids: (f.get("token_type_ids"))
            .map(|t| t.to_dtype(DType::U32))
            .transpose()?,
        decoder_input_ids: None,
        output_attentions: false,
        predict_positions: None,
    })
}

/// Loads `case` fresh, runs the fixture batch and returns its loss and the model's parameters.
fn run(case: &str, f: &HashMap<String, Tensor>) -> anyhow::Result<(Tensor, lingo_nn::ParamStore)> {
    let loaded = load(case, &LoadOptions::default())?;
    let output = (loaded.model)
        .forward(&encoder_inputs(f)?, &mut Ctx::eval())?
        .output;
    Ok((task_loss(case, &output, f)?, loaded.store))
}

fn step_and_compare(
    case: &str,
    f: &HashMap<String, Tensor>,
    config: OptimizerConfig,
    prefix: &str,
) -> anyhow::Result<()> {
    let (loss, store) = run(case, f)?;
    take_step(&config, &store, &loss)?;
    for (name, var) in store.named() {
        let label = format!("{case}: {name} after one {prefix} step");
        let (grad, want) = (&f[&format!("grad.{name}")], &f[&format!("{prefix}.{name}")]);
        assert_step(&label, var.as_tensor(), want, grad)?;
    }
    Ok(())
}

#[test]
fn loss_gradients_and_one_optimizer_step_match_pytorch() -> anyhow::Result<()> {
    for case in CASES {
        let f = read_safetensors(&folder(case).join("train.safetensors"), &Device::Cpu)?;
        let (loss, store) = run(case, &f)?;
        let (got, want) = (
            loss.to_scalar::<f32>()?,
            f["loss"].flatten_all()?.to_vec1::<f32>()?[0],
        );
        assert!(
            (got - want).abs() < 1e-5 * want.abs(),
            "{case}: loss {got} vs {want}"
        );
        let grads = loss.backward()?;
        let named = store.named();
        let fixture_params = f.keys().filter(|k| k.starts_with("grad.")).count();
        assert_eq!(
            named.len(),
            fixture_params,
            "{case}: the same parameters as PyTorch"
        );
        for (name, var) in &named {
            let want = f
                .get(&format!("grad.{name}"))
                .unwrap_or_else(|| panic!("{case}: PyTorch has no parameter {name}"));
            let got = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{case}: {name} got no gradient"));
            let err = relative_error(got, want, 1e-3);
            assert!(err < 1e-4, "{case}: gradient of {name} is off by {err:e}");
        }
        for (config, _, prefix) in optimizers() {
            step_and_compare(case, &f, config, prefix)?;
        }
    }
    Ok(())
}

/// GPT-2's causal-LM loss, its gradients (Lingo keeps Conv1D weights as `[out, in]`, so they are
/// compared transposed) and one AdamW step equal PyTorch's `GPT2LMHeadModel` with `labels`.
#[test]
fn gpt2_loss_gradients_and_one_optimizer_step_match_pytorch() -> anyhow::Result<()> {
    use lingo_models::gpt::gpt2_layout;
    let dev = Device::Cpu;
    let f = read_safetensors(&folder("gpt2").join("train.safetensors"), &dev)?;
    let ids = f["input_ids"].to_dtype(DType::U32)?;
    let t = ids.dim(1)?;
    let run = || -> anyhow::Result<_> {
        let loaded = load("gpt2", &LoadOptions::default())?;
        let AutoModel::Gpt(model) = &loaded.model else {
            anyhow::bail!("gpt2 loaded as a {}", loaded.model.family());
        };
        let loss = model.loss(
            &ids.narrow(1, 0, t - 1)?,
            &ids.narrow(1, 1, t - 1)?,
            &mut Ctx::eval(),
        )?;
        Ok((loss, loaded.store, loaded.names))
    };
    let (loss, store, names) = run()?;
    let want = f["loss"].flatten_all()?.to_vec1::<f32>()?[0];
    assert!(
        (loss.to_scalar::<f32>()? - want).abs() < 1e-5 * want,
        "loss"
    );
    let grads = loss.backward()?;
    for (name, var) in store.named() {
        let stored = names.stored(&name);
        let got = gpt2_layout(
            stored,
            grads.get(var.as_tensor()).expect("gradient").clone(),
        )?;
        let err = relative_error(&got, &f[&format!("grad.{stored}")], 1e-3);
        assert!(err < 1e-4, "gpt2: gradient of {stored} is off by {err:e}");
    }
    for (config, optimizer, prefix) in optimizers() {
        let (loss, store, names) = run()?;
        take_step(&config, &store, &loss)?;
        for (name, var) in store.named() {
            let stored = names.stored(&name);
            assert_step(
                &format!("gpt2: {stored} after one {optimizer} step"),
                &gpt2_layout(stored, var.as_tensor().clone())?,
                &f[&format!("{prefix}.{stored}")],
                &f[&format!("grad.{stored}")],
            )?;
        }
    }
    Ok(())
}

/// The fixture's sequence-to-sequence batch as the training contract takes it.
fn seq2seq_batch(f: &HashMap<String, Tensor>) -> anyhow::Result<Seq2SeqBatch> {
    let lengths = f["attention_mask"]
        .to_dtype(DType::U32)?
        .sum(1)?
        .to_vec1::<u32>()?;
    let labels = f["labels"].to_dtype(DType::I64)?;
    let target_tokens = labels
        .flatten_all()?
        .to_vec1::<i64>()?
        .iter()
        .filter(|&&l| l >= 0)
        .count();
    Ok(Seq2SeqBatch {
        source: f["input_ids"].to_dtype(DType::U32)?,
        source_lengths: lengths.into_iter().map(|l| l as usize).collect(),
        decoder_input: f["decoder_input_ids"].to_dtype(DType::U32)?,
        labels,
        target_tokens,
    })
}

/// T5 (tied and v1.1), BART and Marian: the sequence-to-sequence loss with `labels` (through the
/// training contract fine-tuning uses), every gradient and one AdamW step equal PyTorch's
/// `*ForConditionalGeneration` / `MarianMTModel`.
#[test]
fn seq2seq_loss_gradients_and_one_optimizer_step_match_pytorch() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    for case in ["t5", "t5-v1_1", "bart", "marian"] {
        let f = read_safetensors(&folder(case).join("train.safetensors"), &dev)?;
        let batch = seq2seq_batch(&f)?;
        let run = || -> anyhow::Result<_> {
            let loaded = load(case, &LoadOptions::default())?;
            let model = (loaded.model.as_seq2seq()).expect("an encoder-decoder");
            let loss = model.loss(&batch, &Seq2SeqLoss::default(), &mut Ctx::eval())?;
            Ok((loss, loaded.store, loaded.names))
        };
        let (loss, store, names) = run()?;
        let want = f["loss"].flatten_all()?.to_vec1::<f32>()?[0];
        let got = loss.to_scalar::<f32>()?;
        assert!(
            (got - want).abs() < 1e-5 * want,
            "{case}: loss {got} vs {want}"
        );
        let grads = loss.backward()?;
        // BART's `final_logits_bias` is a buffer in transformers, never trained.
        let trained = |n: &str| n != "final_logits_bias";
        let mut seen = std::collections::HashSet::new();
        for (name, var) in store.named() {
            let stored = names.stored(&name).to_string();
            if !trained(&stored) {
                continue;
            }
            let want = f
                .get(&format!("grad.{stored}"))
                .unwrap_or_else(|| panic!("{case}: PyTorch has no parameter {stored}"));
            let got = grads
                .get(var.as_tensor())
                .cloned()
                .unwrap_or(want.zeros_like()?);
            let err = relative_error(&got, want, 1e-3);
            assert!(err < 1e-4, "{case}: gradient of {stored} is off by {err:e}");
            seen.insert(stored);
        }
        // What PyTorch has beyond Lingo's parameters must be untrained — except Marian's sinusoidal
        // position tables: Marian keeps them fixed, as transformers 4 did and Lingo does, but
        // transformers 5 leaves `requires_grad` on, so its fine-tuning moves them.
        for (key, g) in f.iter().filter(|(k, _)| k.starts_with("grad.")) {
            let name = &key["grad.".len()..];
            let marian_positions = case == "marian" && name.contains("embed_positions");
            if !seen.contains(name) && !marian_positions {
                let max = g.abs()?.max_all()?.to_scalar::<f32>()?;
                assert_eq!(max, 0.0, "{case}: PyTorch trains {name}, which Lingo lacks");
            }
        }
        for (config, optimizer, prefix) in optimizers() {
            let (loss, store, names) = run()?;
            take_step(&config, &store, &loss)?;
            for (name, var) in store.named() {
                let stored = names.stored(&name);
                if !trained(stored) {
                    continue;
                }
                assert_step(
                    &format!("{case}: {stored} after one {optimizer} step"),
                    var.as_tensor(),
                    &f[&format!("{prefix}.{stored}")],
                    &f[&format!("grad.{stored}")],
                )?;
            }
        }
    }
    Ok(())
}

/// The training path — attention probabilities through the composed softmax, dropout layers,
/// LayerDrop draws — computes what the evaluation path does when dropout keeps everything
/// (p = 1e-9), padding and all, so the parity above (taken in evaluation mode) holds for training
/// too: for every family with dropout.
#[test]
fn the_training_path_equals_the_evaluation_path_without_dropout() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let options = LoadOptions {
        dropout: Some(1e-9),
        ..LoadOptions::default()
    };
    for case in [
        "bert-qa",
        "roberta-cls",
        "distilbert-qa",
        "albert-cls",
        "electra-qa",
        "gpt2",
        "t5",
        "t5-v1_1",
        "bart",
        "marian",
    ] {
        let f = read_safetensors(&folder(case).join("train.safetensors"), &dev)?;
        let loaded = load(case, &options)?;
        let outputs = |ctx: &mut Ctx| -> anyhow::Result<Tensor> {
            Ok(match loaded.model.as_seq2seq() {
                Some(m) => m.loss(&seq2seq_batch(&f)?, &Seq2SeqLoss::default(), ctx)?,
                None if case == "gpt2" => {
                    let ids = ModelInputs::new(f["input_ids"].to_dtype(DType::U32)?);
                    loaded.model.forward(&ids, ctx)?.output
                }
                None => loaded.model.forward(&encoder_inputs(&f)?, ctx)?.output,
            })
        };
        let a = outputs(&mut Ctx::train(lingo_nn::LingoRng::new(1)))?;
        let b = outputs(&mut Ctx::eval())?;
        let err = relative_error(&a, &b, 1e-3);
        assert!(
            err < 1e-5,
            "{case}: training and evaluation outputs differ by {err:e}"
        );
    }
    Ok(())
}
