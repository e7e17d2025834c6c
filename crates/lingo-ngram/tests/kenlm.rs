//! Reference parity: the interpolated modified Kneser–Ney trigram Lingo estimates from a small
//! corpus equals, entry by entry, the one KenLM's `lmplz` wrote from the same corpus
//! (tools/make_ngram_fixtures.py).

use lingo_ngram::{estimate, Counts, NgramModel, Smoothing, BOS};
use std::path::PathBuf;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn modified_kneser_ney_equals_kenlm_lmplz() {
    let corpus = fixture("zipf.txt");
    let kenlm = NgramModel::from_arpa(&fixture("zipf.kenlm.3.arpa"), "zipf.kenlm.3.arpa").unwrap();
    let counts = Counts::count(3, corpus.lines().map(|l| l.split_whitespace().collect())).unwrap();
    let lingo = estimate(&counts, Smoothing::ModifiedKneserNey).unwrap();
    assert_eq!(lingo.order(), kenlm.order());
    let (mut compared, mut worst) = (0, 0f32);
    for (n, (ours, theirs)) in lingo.levels.iter().zip(&kenlm.levels).enumerate() {
        assert_eq!(ours.grams.len(), theirs.grams.len(), "{}-grams", n + 1);
        for i in 0..theirs.grams.len() {
            let words: Vec<&str> = theirs
                .grams
                .gram(i)
                .iter()
                .map(|&w| kenlm.vocab.word(w))
                .collect();
            let ids: Vec<u32> = words
                .iter()
                .map(|w| lingo.vocab.get(w).expect("a known word"))
                .collect();
            let j = ours
                .grams
                .find(&ids)
                .unwrap_or_else(|| panic!("{words:?} missing"));
            // KenLM writes <s>'s unigram probability as 0 and SRILM as −99: it is never used.
            if ids != [BOS] {
                let d = (ours.logp[j] - theirs.logp[i]).abs();
                assert!(
                    d < 1e-6,
                    "{words:?}: log10 p {} vs KenLM {}",
                    ours.logp[j],
                    theirs.logp[i]
                );
                worst = worst.max(d);
            }
            let d = (ours.bow[j] - theirs.bow[i]).abs();
            assert!(
                d < 1e-6,
                "{words:?}: log10 backoff {} vs KenLM {}",
                ours.bow[j],
                theirs.bow[i]
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 302 + 1277 + 1586);
    eprintln!("{compared} n-grams agree with KenLM; largest log10 difference {worst:.1e}");
}
