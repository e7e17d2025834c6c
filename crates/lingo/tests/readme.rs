//! The README's Rust example, run on the tiny BERT fixture with the SST-2 recipe: load, tokenize,
//! run, fine-tune, save, load again. The test also checks that the README shows this very code.

use std::path::{Path, PathBuf};

// README example begins
use lingo::{ClassifyTask, Ctx, EncoderPipeline, FinetuneRecipe, LoadOptions, Pretrained, Trainer};

/// Loads `model` (a folder or a Hub id), runs it on two sentences, fine-tunes a classifier on
/// `train` (TSV with `sentence` and `label` columns) with `recipe` into `out`, and classifies a
/// sentence with the folder it wrote.
fn tour(model: &str, train: &Path, recipe: &Path, out: &Path) -> lingo::Result<String> {
    let bert = Pretrained::load(model, &LoadOptions::default())?;
    let batch = bert
        .tokenizer
        .batch(&["a gorgeous film", "a dull, lifeless one"])?;
    let output = bert.model.forward(&batch.inputs(), &mut Ctx::eval())?;
    println!(
        "last hidden state: {:?}",
        output.last_hidden_state()?.dims()
    );

    let recipe = FinetuneRecipe::load(recipe)?; // e.g. configs/sst2-minilm.json
    let mut task = ClassifyTask::new(&bert.dir, train, None, recipe)?; // 5% held out to validate
    Trainer::new(task.recipe.train.clone(), out).run(&mut task, false)?;

    let classifier = EncoderPipeline::load(out)?; // a Hugging Face folder: transformers loads it too
    Ok(classifier.classify("a gorgeous film")?[0].label.clone())
}
// README example ends

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_readme_example_runs() -> lingo::Result<()> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let train = tmp.path().join("train.tsv");
    let rows: String = (0..80)
        .map(|i| format!("{} the cat\t{}\n", ["alice", "bob"][i % 2], i % 2))
        .collect();
    std::fs::write(&train, format!("sentence\tlabel\n{rows}")).expect("write");
    let model = root().join("crates/lingo-models/tests/fixtures/hf/bert");
    let recipe = root().join("configs/sst2-minilm.json");
    let label = tour(
        &model.display().to_string(),
        &train,
        &recipe,
        &tmp.path().join("out"),
    )?;
    assert!(label == "0" || label == "1", "{label}");
    Ok(())
}

#[test]
fn the_readme_shows_the_tested_code() {
    let this =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/readme.rs"))
            .expect("this file");
    let code = this
        .split("// README example begins\n")
        .nth(1)
        .and_then(|rest| rest.split("// README example ends").next())
        .expect("markers");
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    assert!(
        readme.contains(code.trim()),
        "README.md does not show the example of crates/lingo/tests/readme.rs"
    );
}
