"""Writes tests/fixtures/bleu/*.json: hypotheses, references and what sacreBLEU (default settings:
13a tokenisation, exp smoothing, case-sensitive) says about them. Lingo's BLEU is tested against these.

    pip install sacrebleu && python3 tools/make_bleu_fixtures.py
"""
import json
import os

import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "bleu")

CASES = {
    "basic": (
        ["The cat sits on the mat.", "A man is riding a red bicycle down the street.",
         "Two dogs play in the snow, happily.", "She reads a book near the window.",
         "The children are laughing at the clown!", "It is raining again today."],
        [["The cat is sitting on the mat.", "A man rides a red bike down the street.",
          "Two dogs are playing in the snow.", "She is reading a book by the window.",
          "The kids laugh at the clown.", "Today it is raining again."]],
    ),
    "multi_reference": (
        ["A woman in a blue dress walks her dog.", "The old bridge crosses a wide river.",
         "People wait for the train at the station."],
        [["A woman in a blue dress is walking her dog.", "An old bridge spans the wide river.",
          "People are waiting for the train at the station."],
         ["A lady wearing blue walks a dog.", "The old bridge crosses the river.",
          "Passengers wait for a train at the station."]],
    ),
    "punctuation_numbers_entities": (
        ["It costs $3.50, or about 1,000 yen (roughly).", "Pages 10-12 discuss \"BLEU\" &amp; its variants.",
         "Tom's score was 27.3 -- not bad.", "", "Grüße aus München: 3 Äpfel.",
         "trailing spaces here   ", "Q&A: what's new? <skipped> nothing."],
        [["It costs $3.50, or roughly 1,000 yen.", "Pages 10-12 discuss \"BLEU\" & its variants.",
          "Tom's score was 27.3 - not bad.", "An empty hypothesis.", "Grüße aus München: drei Äpfel.",
          "trailing spaces here", "Q&amp;A: what is new? nothing."]],
    ),
    "brevity_penalty": (
        ["a man", "the dog runs", "blue sky"],
        [["a man is standing in the square", "the dog runs across the green field", "a clear blue sky over the hills"]],
    ),
    "no_higher_order_matches": (
        ["cat dog bird fish", "red green blue"],
        [["fish bird dog cat", "blue green red"]],
    ),
    "no_matches": (
        ["completely different words"],
        [["nothing in common here"]],
    ),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = Tokenizer13a()
    for name, (hyps, refs) in CASES.items():
        b = sacrebleu.corpus_bleu(hyps, refs)
        case = {
            "generator": f"sacrebleu {sacrebleu.__version__} corpus_bleu, default settings",
            "hypotheses": hyps,
            "references": refs,
            "tokenized": [tok(h.rstrip()) for h in hyps],
            "sacrebleu": {
                "score": b.score, "counts": b.counts, "totals": b.totals, "precisions": b.precisions,
                "bp": b.bp, "sys_len": b.sys_len, "ref_len": b.ref_len,
            },
        }
        with open(os.path.join(OUT, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(case, f, ensure_ascii=False, indent=1)
        print(f"{name}: {b}")


if __name__ == "__main__":
    main()
