//! The readers fuzzed, each with valid seeds: real files where the repository has them (the
//! Hugging Face fixtures `transformers` wrote, the shipped recipes, the tokenizer fixtures) and
//! small hand-written samples of each dataset format.

use crate::{Format, Target};
use candle_core::{Device, Tensor};
use lingo_data::UdColumn;
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::{Gpt, GptConfig};
use lingo_nn::{Ctx, LingoRng, ParamStore};
use lingo_train::checkpoint::{self, CheckpointMeta};
use lingo_train::grads::Gradients;
use lingo_train::{AdamWConfig, DecayPolicy, Optimizer, OptimizerConfig};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("fuzz seed {}: {e}", path.display()))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    Ok(path)
}

fn target(
    name: &str,
    format: Format,
    seeds: Vec<Vec<u8>>,
    run: impl Fn(&[u8], &Path) -> Result<(), String> + Sync + 'static,
) -> Target {
    Target {
        name: name.into(),
        seeds,
        format,
        run: Box::new(run),
    }
}

/// Every target, in a fixed order.
pub fn all_targets() -> Vec<Target> {
    let mut targets = Vec::new();
    targets.extend(hf_folders());
    targets.push(safetensors_file());
    targets.push(sharded_weights());
    targets.push(checkpoint_file());
    targets.push(tokenizer_json());
    targets.extend(recipes());
    targets.extend(datasets());
    targets
}

const FAMILIES: &[&str] = &[
    "bert",
    "roberta",
    "albert",
    "distilbert",
    "electra-discriminator",
    "gpt2",
    "t5",
    "bart",
    "marian",
];

fn hf_fixture(family: &str) -> PathBuf {
    repo()
        .join("crates/lingo-models/tests/fixtures/hf")
        .join(family)
}

/// A model folder whose `config.json` is fuzzed, beside the family's real weights.
fn hf_folders() -> Vec<Target> {
    FAMILIES
        .iter()
        .map(|family| {
            let dir = hf_fixture(family);
            let weights = read(&dir.join("model.safetensors"));
            target(
                &format!("config:{family}"),
                Format::Json,
                vec![read(&dir.join("config.json"))],
                move |input, dir| {
                    write(dir, "config.json", input)?;
                    write(dir, "model.safetensors", &weights)?;
                    accepted(AutoModel::load(dir, &LoadOptions::default()))
                },
            )
        })
        .collect()
}

/// A safetensors file alone: header, dtypes, shapes, offsets.
fn safetensors_file() -> Target {
    let seeds = ["bert", "gpt2", "t5"]
        .iter()
        .map(|f| read(&hf_fixture(f).join("model.safetensors")))
        .collect();
    one_file(
        "safetensors",
        Format::Safetensors,
        seeds,
        "model.safetensors",
        |path| {
            accepted(lingo_nn::params::read_safetensors_metadata(path))?;
            accepted(lingo_nn::params::read_safetensors(path, &Device::Cpu))
        },
    )
}

/// The BERT fixture's weights in two shards; the index is fuzzed (including names of shards that
/// do not exist).
fn sharded_weights() -> Target {
    let dir = hf_fixture("bert");
    let config = read(&dir.join("config.json"));
    let tensors = lingo_nn::params::read_safetensors(&dir.join("model.safetensors"), &Device::Cpu)
        .expect("the BERT fixture loads");
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let half = names.len() / 2;
    let mut shards = Vec::new();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let named: Vec<(String, Tensor)> = part
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        for n in part.iter() {
            weight_map.insert((*n).clone(), file.clone().into());
        }
        let bytes = lingo_nn::params::tensors_to_safetensors(&named, None).expect("serialises");
        shards.push((file, bytes));
    }
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
    target(
        "sharded-index",
        Format::Json,
        vec![serde_json::to_vec_pretty(&index).expect("JSON")],
        move |input, dir| {
            write(dir, "config.json", &config)?;
            for (file, bytes) in &shards {
                write(dir, file, bytes)?;
            }
            write(dir, "model.safetensors.index.json", input)?;
            accepted(AutoModel::load(dir, &LoadOptions::default()))
        },
    )
}

/// A tiny GPT and its AdamW state, as a checkpoint is built around.
fn tiny_run() -> (ParamStore, Optimizer) {
    let store = ParamStore::new(0, &Device::Cpu);
    let config = GptConfig {
        vocab_size: 11,
        context_length: 8,
        d_model: 8,
        n_heads: 2,
        n_layers: 1,
        ..Default::default()
    };
    let model = Gpt::new(config, &store.root()).expect("tiny GPT");
    let optimizer = Optimizer::new(
        OptimizerConfig::AdamW(AdamWConfig::default()),
        &store,
        DecayPolicy::Matrices,
        &[],
    );
    let ids = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu).expect("ids");
    let loss = model.loss(&ids, &ids, &mut Ctx::eval()).expect("loss");
    let grads = Gradients::from_store(&store.named(), &loss.backward().expect("backward"));
    let mut optimizer = optimizer;
    optimizer.step(0, &grads, 1e-3, 1.0).expect("step");
    (store, optimizer)
}

/// A training checkpoint: tensors, optimizer state and the JSON metadata in its header.
fn checkpoint_file() -> Target {
    let (store, optimizer) = tiny_run();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("checkpoint.safetensors");
    let meta = CheckpointMeta::new(
        1,
        LingoRng::new(3).state(),
        serde_json::json!({ "steps": 10 }),
        serde_json::json!({ "task": "fuzz" }),
    );
    checkpoint::save(&path, &store, &optimizer, Vec::new(), &meta).expect("saves");
    one_file(
        "checkpoint",
        Format::Safetensors,
        vec![read(&path)],
        "checkpoint.safetensors",
        |path| {
            accepted(checkpoint::read_meta(path))?;
            let (store, mut optimizer) = tiny_run();
            accepted(checkpoint::load(path, &store, &mut optimizer))
        },
    )
}

fn tokenizer_json() -> Target {
    let fixtures = repo().join("tests/fixtures/tokenizers");
    let seeds = ["bpe-gpt2", "bpe-roberta", "unigram", "wordpiece"]
        .iter()
        .map(|d| read(&fixtures.join(d).join("tokenizer.json")))
        .collect();
    one_file("tokenizer", Format::Json, seeds, "tokenizer.json", |path| {
        let tok = lingo_data::Tokenizer::load(path).map_err(|e| e.to_string())?;
        let ids = tok
            .encode("Hello, world! naïve café — 1234 \u{1F600}")
            .map_err(|e| e.to_string())?;
        accepted(tok.decode(&ids))
    })
}

type RecipeLoader = fn(&Path) -> Result<(), String>;

/// A loader's answer without its value.
fn accepted<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<(), String> {
    result.map(drop).map_err(|e| e.to_string())
}

/// Every kind of recipe file and its loader (each validates what it reads).
fn recipe_kinds() -> [(&'static str, RecipeLoader); 7] {
    [
        ("recipe:lm", |p| accepted(lingo_tasks::LmRecipe::load(p))),
        ("recipe:finetune", |p| {
            accepted(lingo_tasks::FinetuneRecipe::load(p))
        }),
        ("recipe:pretrain", |p| {
            accepted(lingo_tasks::PretrainRecipe::load(p))
        }),
        ("recipe:seq2seq", |p| {
            accepted(lingo_tasks::Seq2SeqRecipe::load(p))
        }),
        ("recipe:rnn-classify", |p| {
            accepted(lingo_tasks::RnnClassifyRecipe::load(p))
        }),
        ("recipe:rnn-tag", |p| {
            accepted(lingo_tasks::RnnTagRecipe::load(p))
        }),
        ("recipe:rnn-lm", |p| {
            accepted(lingo_tasks::RnnLmRecipe::load(p))
        }),
    ]
}

/// One target per recipe kind, seeded with the shipped recipes its loader accepts, and
/// `recipe:any`: every shipped recipe's mutants through every loader (a user may pass any file to
/// any command).
fn recipes() -> Vec<Target> {
    let configs: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("configs"))
            .expect("configs/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        v.sort();
        v
    };
    let mut targets: Vec<Target> = recipe_kinds()
        .into_iter()
        .map(|(name, load)| {
            let seeds: Vec<Vec<u8>> = configs
                .iter()
                .filter(|p| load(p).is_ok())
                .map(|p| read(p))
                .collect();
            assert!(!seeds.is_empty(), "no shipped recipe loads as {name}");
            one_file(name, Format::Json, seeds, "recipe.json", load)
        })
        .collect();
    let all = configs.iter().map(|p| read(p)).collect();
    targets.push(target("recipe:any", Format::Json, all, |input, dir| {
        let path = write(dir, "recipe.json", input)?;
        for (_, load) in recipe_kinds() {
            let _ = load(&path);
        }
        Ok(())
    }));
    targets
}

/// A reader of one file, fuzzed as `file` (its extension picks the format) from `seeds`.
fn one_file(
    name: &str,
    format: Format,
    seeds: Vec<Vec<u8>>,
    file: &'static str,
    read: fn(&Path) -> Result<(), String>,
) -> Target {
    target(name, format, seeds, move |input, dir| {
        read(&write(dir, file, input)?)
    })
}

/// Small hand-written samples of each dataset format Lingo reads.
fn datasets() -> Vec<Target> {
    let text = |s: &str| vec![s.as_bytes().to_vec()];
    vec![
        one_file(
            "data:labelled-tsv",
            Format::Text,
            text("sentence\tlabel\na fine film\t1\nnot good at all\t0\n\"quoted\ttab\"\t1\n"),
            "train.tsv",
            |p| accepted(lingo_data::read_labelled(p)),
        ),
        one_file(
            "data:labelled-jsonl",
            Format::Text,
            text("{\"text\": \"a fine film\", \"label\": 1}\n{\"sentence1\": \"q\", \"sentence2\": \"r\", \"label\": \"yes\"}\n"),
            "train.jsonl",
            |p| accepted(lingo_data::read_labelled(p)),
        ),
        one_file(
            "data:parallel-tsv",
            Format::Text,
            text("a small house\tein kleines Haus\ntwo dogs run\tzwei Hunde laufen\n"),
            "pairs.tsv",
            |p| accepted(lingo_data::read_pairs(p, None)),
        ),
        one_file(
            "data:parallel-jsonl",
            Format::Text,
            vec![
                b"{\"source\": \"a small house\", \"target\": \"ein kleines Haus\"}\n{\"source\": \"x\", \"target\": \"y\"}\n".to_vec(),
                b"[{\"source\": \"two dogs\", \"target\": \"zwei Hunde\"}]".to_vec(),
            ],
            "pairs.jsonl",
            |p| accepted(lingo_data::read_pairs(p, None)),
        ),
        target(
            "data:parallel-lines",
            Format::Text,
            text("a small house\ntwo dogs run\n"),
            |input, dir| {
                let s = write(dir, "train.en", input)?;
                let t = write(dir, "train.de", b"ein kleines Haus\nzwei Hunde laufen\n")?;
                accepted(lingo_data::read_pairs(&s, Some(&t)))
            },
        ),
        one_file(
            "data:conll",
            Format::Text,
            text("-DOCSTART- -X- -X- O\n\nAnna NNP B-NP B-PER\nlives VBZ B-VP O\nin IN B-PP O\nParis NNP B-NP B-LOC\n. . O O\n\n"),
            "train.conll",
            |p| accepted(lingo_data::read_tagged_column(p, UdColumn::Upos)),
        ),
        one_file(
            "data:conllu",
            Format::Text,
            text("# sent_id = 1\n# text = Dogs bark.\n1\tDogs\tdog\tNOUN\tNNS\t_\t2\tnsubj\t_\t_\n2\tbark\tbark\tVERB\tVBP\t_\t0\troot\t_\tSpaceAfter=No\n2.1\tx\tx\tX\tX\t_\t_\t_\t_\t_\n3-4\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n3\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_\n\n"),
            "train.conllu",
            |p| accepted(lingo_data::read_conllu(p, UdColumn::Xpos)),
        ),
        one_file(
            "data:squad",
            Format::Json,
            text(r#"{"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "The cat sat on the mat in 1999.", "qas": [{"id": "q1", "question": "Where did the cat sit?", "answers": [{"text": "on the mat", "answer_start": 8}], "is_impossible": false}, {"id": "q2", "question": "Why?", "answers": [], "is_impossible": true}]}]}]}"#),
            "train.json",
            |p| {
                let _ = lingo_data::read_squad(p, true);
                accepted(lingo_data::read_squad(p, false))
            },
        ),
        one_file(
            "data:text",
            Format::Text,
            text("First line of text.\nSecond line, with ünïcödé.\n"),
            "input.txt",
            |p| accepted(lingo_data::read_text(p)),
        ),
        one_file(
            "data:word-vectors",
            Format::Text,
            text("3 4\nthe 0.1 0.2 -0.3 0.4\ncat 1e-3 2 3 4\n, 0 0 0 0\n"),
            "vectors.txt",
            |p| accepted(lingo_data::read_word_vectors(p, |_| true)),
        ),
    ]
}
