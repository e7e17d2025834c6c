//! The standard figure: an interpolated modified Kneser–Ney 5-gram on the Penn Treebank reaches
//! the published ~141 test perplexity (Mikolov et al. 2011: 141.2). Skips, saying so, without
//! `../shared/data/ptb/`.

use lingo_ngram::{estimate, Counts, Smoothing};
use std::io::Read;
use std::path::PathBuf;

fn read(split: &str) -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/ptb")
        .join(format!("ptb.{split}.txt.gz"));
    let file = std::fs::File::open(&path).ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[test]
fn ptb_5gram_reaches_the_published_perplexity() {
    let (Some(train), Some(test)) = (read("train"), read("test")) else {
        eprintln!("skipping: ../shared/data/ptb/ is absent");
        return;
    };
    let sentences = |text: &'static str| {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|s: &Vec<&str>| !s.is_empty())
    };
    let train: &'static str = Box::leak(train.into_boxed_str());
    let test: &'static str = Box::leak(test.into_boxed_str());
    let counts = Counts::count(5, sentences(train)).unwrap();
    // 9,999 words (with <unk>) and </s>, which plays <eos>: the usual 10,000; and <s>.
    assert_eq!(counts.vocab.len(), 10_001);
    let model = estimate(&counts, Smoothing::ModifiedKneserNey).unwrap();
    let e = model.evaluate(sentences(test));
    eprintln!("PTB test: {e:?}");
    assert_eq!(e.oovs, 0);
    assert!(
        (140.5..142.0).contains(&e.perplexity),
        "test perplexity {}",
        e.perplexity
    );
}
