//! The Porter stemmer (Porter, 1980) in NLTK's default `NLTK_EXTENSIONS` mode — the stemmer
//! `rouge-score` uses, so stemmed ROUGE here equals its scores. Written here rather than taken from a
//! crate: the Snowball/Porter2 crates stem differently ("generalizations", "dying", "skies"), and
//! ROUGE parity needs NLTK's exact rules. Input is lower-case ASCII (what ROUGE's tokenizer yields).

/// NLTK's irregular forms, looked up before any rule.
const POOL: [(&str, &str); 16] = [
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

fn is_vowel(c: u8) -> bool {
    matches!(c, b'a' | b'e' | b'i' | b'o' | b'u')
}

/// Whether each letter is a consonant; `y` is one at the start and after a vowel.
fn consonants(w: &[u8]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let f = if is_vowel(c) {
            false
        } else if c == b'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(f);
    }
    flags
}

/// Porter's *m*: the number of vowel-consonant sequences.
fn measure(w: &[u8]) -> usize {
    let f = consonants(w);
    f.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn has_vowel(w: &[u8]) -> bool {
    consonants(w).iter().any(|&c| !c)
}

fn ends_double_consonant(w: &[u8]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && consonants(w)[n - 1]
}

/// *o: ends consonant-vowel-consonant, the last not w, x or y (NLTK also takes a two-letter
/// vowel-consonant word).
fn ends_cvc(w: &[u8]) -> bool {
    let n = w.len();
    let f = consonants(w);
    (n >= 3 && f[n - 3] && !f[n - 2] && f[n - 1] && !matches!(w[n - 1], b'w' | b'x' | b'y'))
        || (n == 2 && !f[0] && f[1])
}

type Condition<'a> = &'a dyn Fn(&[u8]) -> bool;

/// The first rule whose suffix `word` ends with decides: replaced when the remaining stem meets the
/// condition, else the word is unchanged. `*d` stands for a double consonant.
fn apply_rules(word: &[u8], rules: &[(&str, &str, Option<Condition>)]) -> Vec<u8> {
    for (suffix, replacement, condition) in rules {
        if *suffix == "*d" {
            if ends_double_consonant(word) {
                let stem = &word[..word.len() - 2];
                return if condition.is_none_or(|c| c(stem)) {
                    [stem, replacement.as_bytes()].concat()
                } else {
                    word.to_vec()
                };
            }
            continue;
        }
        if word.ends_with(suffix.as_bytes()) {
            let stem = &word[..word.len() - suffix.len()];
            return if condition.is_none_or(|c| c(stem)) {
                [stem, replacement.as_bytes()].concat()
            } else {
                word.to_vec()
            };
        }
    }
    word.to_vec()
}

fn replace_end(word: &[u8], cut: usize, with: &str) -> Vec<u8> {
    [&word[..word.len() - cut], with.as_bytes()].concat()
}

fn step1a(w: &[u8]) -> Vec<u8> {
    if w.ends_with(b"ies") && w.len() == 4 {
        return replace_end(w, 3, "ie");
    }
    apply_rules(
        w,
        &[
            ("sses", "ss", None),
            ("ies", "i", None),
            ("ss", "ss", None),
            ("s", "", None),
        ],
    )
}

fn step1b(w: &[u8]) -> Vec<u8> {
    if w.ends_with(b"ied") {
        return replace_end(w, 3, if w.len() == 4 { "ie" } else { "i" });
    }
    if w.ends_with(b"eed") {
        let stem = &w[..w.len() - 3];
        return if measure(stem) > 0 {
            [stem, b"ee"].concat()
        } else {
            w.to_vec()
        };
    }
    let Some(stem) = ["ed", "ing"].iter().find_map(|s| {
        let stem = w.strip_suffix(s.as_bytes())?;
        has_vowel(stem).then_some(stem)
    }) else {
        return w.to_vec();
    };
    let last = stem.last().copied().unwrap_or(b' ');
    let last_str = (last as char).to_string();
    let keep_double = move |_: &[u8]| !matches!(last, b'l' | b's' | b'z');
    let add_e = |s: &[u8]| measure(s) == 1 && ends_cvc(s);
    apply_rules(
        stem,
        &[
            ("at", "ate", None),
            ("bl", "ble", None),
            ("iz", "ize", None),
            ("*d", &last_str, Some(&keep_double)),
            ("", "e", Some(&add_e)),
        ],
    )
}

fn step1c(w: &[u8]) -> Vec<u8> {
    let cond = |s: &[u8]| s.len() > 1 && consonants(s)[s.len() - 1];
    apply_rules(w, &[("y", "i", Some(&cond))])
}

fn positive(s: &[u8]) -> bool {
    measure(s) > 0
}

fn step2(w: &[u8]) -> Vec<u8> {
    if let Some(stem) = w.strip_suffix(b"alli") {
        if positive(stem) {
            return step2(&[stem, b"al"].concat());
        }
    }
    let logi = |_: &[u8]| positive(&w[..w.len() - 3]);
    let p: Condition = &positive;
    let rules: [(&str, &str, Option<Condition>); 22] = [
        ("ational", "ate", Some(p)),
        ("tional", "tion", Some(p)),
        ("enci", "ence", Some(p)),
        ("anci", "ance", Some(p)),
        ("izer", "ize", Some(p)),
        ("bli", "ble", Some(p)),
        ("alli", "al", Some(p)),
        ("entli", "ent", Some(p)),
        ("eli", "e", Some(p)),
        ("ousli", "ous", Some(p)),
        ("ization", "ize", Some(p)),
        ("ation", "ate", Some(p)),
        ("ator", "ate", Some(p)),
        ("alism", "al", Some(p)),
        ("iveness", "ive", Some(p)),
        ("fulness", "ful", Some(p)),
        ("ousness", "ous", Some(p)),
        ("aliti", "al", Some(p)),
        ("iviti", "ive", Some(p)),
        ("biliti", "ble", Some(p)),
        ("fulli", "ful", Some(p)),
        ("logi", "log", Some(&logi)),
    ];
    apply_rules(w, &rules)
}

fn step3(w: &[u8]) -> Vec<u8> {
    let p: Condition = &positive;
    apply_rules(
        w,
        &[
            ("icate", "ic", Some(p)),
            ("ative", "", Some(p)),
            ("alize", "al", Some(p)),
            ("iciti", "ic", Some(p)),
            ("ical", "ic", Some(p)),
            ("ful", "", Some(p)),
            ("ness", "", Some(p)),
        ],
    )
}

fn step4(w: &[u8]) -> Vec<u8> {
    let m: Condition = &|s: &[u8]| measure(s) > 1;
    let ion: Condition = &|s: &[u8]| measure(s) > 1 && matches!(s.last(), Some(b's' | b't'));
    let mut rules: Vec<(&str, &str, Option<Condition>)> = [
        "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent",
    ]
    .iter()
    .map(|s| (*s, "", Some(m)))
    .collect();
    rules.push(("ion", "", Some(ion)));
    rules.extend(
        ["ou", "ism", "ate", "iti", "ous", "ive", "ize"]
            .iter()
            .map(|s| (*s, "", Some(m))),
    );
    apply_rules(w, &rules)
}

fn step5a(w: &[u8]) -> Vec<u8> {
    if let Some(stem) = w.strip_suffix(b"e") {
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w.to_vec()
}

fn step5b(w: &[u8]) -> Vec<u8> {
    let cond = |_: &[u8]| measure(&w[..w.len() - 1]) > 1;
    apply_rules(w, &[("ll", "l", Some(&cond))])
}

/// The stem of a lower-case word.
pub fn stem(word: &str) -> String {
    if let Some((_, s)) = POOL.iter().find(|(w, _)| *w == word) {
        return s.to_string();
    }
    if word.len() <= 2 || !word.is_ascii() {
        return word.to_string();
    }
    let mut w = word.as_bytes().to_vec();
    for step in [step1a, step1b, step1c, step2, step3, step4, step5a, step5b] {
        w = step(&w);
    }
    String::from_utf8(w).unwrap_or_else(|_| word.to_string())
}

#[cfg(test)]
mod tests {
    use crate::testing::fixture;

    #[test]
    fn stems_as_nltk_does() {
        let f = fixture("rouge.json");
        let stems = f["stems"].as_object().expect("stems");
        assert!(stems.len() > 150);
        let wrong: Vec<String> = stems
            .iter()
            .filter_map(|(w, want)| {
                let got = super::stem(w);
                (got != want.as_str().unwrap_or("")).then(|| format!("{w}: {got} (NLTK {want})"))
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:?}");
    }
}
