"""Writes tests/fixtures/tokenizers/: a small corpus, the tokenizers `lingo tokenizer train` makes
from it (one folder per scheme), and expected.json: how transformers' AutoTokenizer, loading each
folder, encodes held-out texts (alone and as pairs, with special tokens). The Rust tests check that
Lingo's tokenizers encode the same texts to the same ids and tokens.

The corpus is generated here from a seeded grammar (no text from ../shared/data is copied).

    cargo build --release -p lingo-cli
    pip install transformers && python3 tools/make_tokenizer_fixtures.py
"""
import json
import os
import random
import subprocess

from transformers import AutoTokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
LINGO = os.path.join(ROOT, "target", "release", "lingo")

rng = random.Random(11)
SUBJECTS = ["the model", "a student", "every engineer", "the tokenizer", "our Café", "Zoë",
            "the committee", "a tiny network", "the encoder", "Σ-notation", "the 東京 office"]
VERBS = ["learns", "predicts", "unbelievably rewrites", "re-trains", "misunderstood",
         "pre-trains", "reconsidered", "tokenizes", "summarises", "translates"]
OBJECTS = ["the masked words", "long documents", "3.5 million tokens", "naïve baselines",
           "the next sentence", "unreasonable spans", "WordPiece vocabularies", "e-mails",
           "rare morphology", "the (small) corpus", "$12,000 worth of text"]
ENDINGS = [".", "!", "?", ", quickly.", " again.", " — or so they say."]


def sentence():
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(ENDINGS)}"
    return s[0].upper() + s[1:]


HELD_OUT = [
    "Unbelievably, the encoder pre-trains on 3.5 million tokens!",
    "Zoë's café in 東京 reconsidered   its naïve baselines.",
    "A sentence with words never seen: xylophone quokka.",
    "Masking works: the [MASK] predicts <mask> and <extra_id_0> spans.",
    "  leading and trailing spaces  ",
]
PAIRS = [("The model learns.", "It predicts the next sentence."),
         ("Short.", "A longer second segment, with punctuation!")]

SCHEMES = {
    "wordpiece": ["--kind", "wordpiece", "--vocab-size", "400"],
    "wordpiece-cased": ["--kind", "wordpiece", "--vocab-size", "400", "--cased"],
    "bpe-gpt2": ["--kind", "bpe", "--vocab-size", "400"],
    "bpe-roberta": ["--kind", "bpe", "--style", "roberta", "--vocab-size", "400"],
    "unigram": ["--kind", "unigram", "--vocab-size", "300", "--sentinels", "10"],
}


def main():
    os.makedirs(OUT, exist_ok=True)
    corpus = os.path.join(OUT, "corpus.txt")
    with open(corpus, "w") as f:
        for _ in range(150):
            for _ in range(rng.randint(2, 6)):
                f.write(sentence() + "\n")
            f.write("\n")
    expected = {}
    for name, args in SCHEMES.items():
        folder = os.path.join(OUT, name)
        subprocess.run([LINGO, "tokenizer", "train", *args, "--min-frequency", "1",
                        "--corpus", corpus, "--out", folder], check=True)
        tok = AutoTokenizer.from_pretrained(folder)
        cases = []
        for text in HELD_OUT:
            ids = tok(text)["input_ids"]
            cases.append({"text": text, "ids": ids, "tokens": tok.convert_ids_to_tokens(ids)})
        for a, b in PAIRS:
            enc = tok(a, b)
            cases.append({"text": a, "pair": b, "ids": enc["input_ids"],
                          "token_type_ids": enc.get("token_type_ids"),
                          "tokens": tok.convert_ids_to_tokens(enc["input_ids"])})
        expected[name] = {
            "class": type(tok).__name__,
            "vocab_size": len(tok),
            "specials": {k: v for k, v in tok.special_tokens_map.items()},
            "cases": cases,
        }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
