//! UPOS tagging on UD English-EWT: TnT and the first-order HMM trained on train, scored on dev.
//! Skips, saying so, without `../shared/data/ud_en_ewt/`.

use lingo_data::{read_conllu, UdColumn};
use lingo_hmm::{BigramTagger, Tagger, Tnt};
use std::path::PathBuf;

fn split(name: &str) -> Option<Vec<(Vec<String>, Vec<String>)>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/ud_en_ewt")
        .join(format!("en_ewt-ud-{name}.conllu.gz"));
    path.exists().then(|| {
        read_conllu(&path, UdColumn::Upos)
            .unwrap()
            .into_iter()
            .map(|s| (s.words, s.tags))
            .collect()
    })
}

#[test]
fn taggers_reach_their_ewt_accuracy() {
    let (Some(train), Some(dev)) = (split("train"), split("dev")) else {
        eprintln!("skipping: ../shared/data/ud_en_ewt/ is absent");
        return;
    };
    let tnt = Tagger::Tnt(Tnt::train(&train).unwrap());
    let a = tnt.evaluate(&dev).unwrap();
    eprintln!("TnT on EWT dev: {a:?}");
    assert_eq!((a.words, a.unknown_words), (25_147, 2_088));
    assert!(a.accuracy > 0.92 && a.unknown_accuracy > 0.70, "{a:?}");
    let bigram = Tagger::Bigram(BigramTagger::train(&train, 0.01).unwrap());
    let b = bigram.evaluate(&dev).unwrap();
    eprintln!("first-order HMM on EWT dev: {b:?}");
    assert!(b.accuracy > 0.89 && b.accuracy < a.accuracy, "{b:?}");
}
