//! Corpora that Lingo generates itself, so a new user can train something meaningful with no download
//! and the result can be checked mechanically.
//!
//! [`Grammar`] is a small context-free grammar of English-like sentences ("the brave fox follows a
//! small bird near the old mill."). A language model trained on its sentences can be judged by the share
//! of its own samples that the grammar accepts.

use lingo_nn::LingoRng;

const DETERMINERS: &[&str] = &["the", "a", "every", "one"];
const ADJECTIVES: &[&str] = &[
    "quick", "small", "old", "red", "quiet", "brave", "tired", "clever",
];
const NOUNS: &[&str] = &[
    "fox", "bird", "king", "river", "child", "sailor", "garden", "mill", "dog", "queen",
];
const TRANSITIVE: &[&str] = &["sees", "chases", "finds", "follows", "loves", "watches"];
const INTRANSITIVE: &[&str] = &["sleeps", "sings", "waits", "runs"];
const PREPOSITIONS: &[&str] = &["near", "under", "beside", "behind"];

/// `S → NP VP "."`, `NP → Det Adj? Noun`, `VP → Vt NP PP? | Vi PP?`, `PP → Prep NP`.
pub struct Grammar;

impl Grammar {
    fn pick<'a>(words: &[&'a str], rng: &mut LingoRng) -> &'a str {
        words[rng.below(words.len())]
    }

    fn noun_phrase(out: &mut Vec<&'static str>, rng: &mut LingoRng) {
        out.push(Self::pick(DETERMINERS, rng));
        if rng.uniform() < 0.5 {
            out.push(Self::pick(ADJECTIVES, rng));
        }
        out.push(Self::pick(NOUNS, rng));
    }

    /// One random sentence.
    pub fn sentence(rng: &mut LingoRng) -> String {
        let mut w = Vec::new();
        Self::noun_phrase(&mut w, rng);
        if rng.uniform() < 0.7 {
            w.push(Self::pick(TRANSITIVE, rng));
            Self::noun_phrase(&mut w, rng);
        } else {
            w.push(Self::pick(INTRANSITIVE, rng));
        }
        if rng.uniform() < 0.4 {
            w.push(Self::pick(PREPOSITIONS, rng));
            Self::noun_phrase(&mut w, rng);
        }
        format!("{}.", w.join(" "))
    }

    /// `n` sentences, one per line.
    pub fn corpus(n: usize, seed: u64) -> String {
        let mut rng = LingoRng::new(seed);
        let mut text = String::new();
        for _ in 0..n {
            text.push_str(&Self::sentence(&mut rng));
            text.push('\n');
        }
        text
    }

    /// Whether the grammar generates `line` exactly.
    pub fn accepts(line: &str) -> bool {
        let Some(body) = line.strip_suffix('.') else {
            return false;
        };
        let words: Vec<&str> = body.split(' ').collect();
        let mut i = 0;
        let noun_phrase = |i: &mut usize| -> bool {
            if words.get(*i).is_none_or(|w| !DETERMINERS.contains(w)) {
                return false;
            }
            *i += 1;
            if words.get(*i).is_some_and(|w| ADJECTIVES.contains(w)) {
                *i += 1;
            }
            let ok = words.get(*i).is_some_and(|w| NOUNS.contains(w));
            *i += 1;
            ok
        };
        if !noun_phrase(&mut i) {
            return false;
        }
        match words.get(i) {
            Some(w) if TRANSITIVE.contains(w) => {
                i += 1;
                if !noun_phrase(&mut i) {
                    return false;
                }
            }
            Some(w) if INTRANSITIVE.contains(w) => i += 1,
            _ => return false,
        }
        if words.get(i).is_some_and(|w| PREPOSITIONS.contains(w)) {
            i += 1;
            if !noun_phrase(&mut i) {
                return false;
            }
        }
        i == words.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_sentences_are_accepted_and_others_are_not() {
        let text = Grammar::corpus(500, 7);
        assert!(text.lines().all(Grammar::accepts));
        for bad in [
            "the fox.",
            "fox sleeps.",
            "the fox sleeps",
            "the fox sees.",
            "the fox sleeps near.",
            "a dog runs the mill.",
        ] {
            assert!(!Grammar::accepts(bad), "{bad}");
        }
        assert!(Grammar::accepts(
            "every clever queen watches one mill behind a river."
        ));
        assert_eq!(Grammar::corpus(10, 1), Grammar::corpus(10, 1));
    }
}
