"""Fixtures for Lingo's extractive-QA data path, made by transformers' fast tokenizer and the
`run_qa.py` logic in `tools/finetune_reference.py`: the windows of long contexts (ids, token types,
byte offsets), the start/end token of each training window's answer (0 when the answer is not inside
the window), and the answer post-processing picks for given logits.

    python3 tools/make_qa_fixtures.py      # writes tests/fixtures/qa/windows.json
"""
import json
import os
import sys

import numpy as np
from transformers import PreTrainedTokenizerFast

sys.path.insert(0, os.path.dirname(__file__))
from finetune_reference import QaTrain, best_answers, qa_windows  # noqa: E402

TOKENIZER = "crates/lingo-models/tests/fixtures/hf/bert/tokenizer.json"
OUT = "tests/fixtures/qa/windows.json"


def byte_offsets(text, offsets, seq):
    """Python counts characters; Lingo's offsets are bytes."""
    to_byte = [len(text[:i].encode()) for i in range(len(text) + 1)]
    return [[to_byte[a], to_byte[b]] if s == 1 else [0, 0] for (a, b), s in zip(offsets, seq)]


def main():
    tok = PreTrainedTokenizerFast(tokenizer_file=TOKENIZER, pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", unk_token="[UNK]")
    words = "alice bob the dog is at paris model cat in models fa go la".split()
    rng = np.random.default_rng(0)
    rows = []
    for n in (12, 40, 75):
        context = " ".join(rng.choice(words, n))
        for q in range(2):
            pick = int(rng.integers(0, n - 3))
            tokens = context.split()
            start_char = len(" ".join(tokens[:pick])) + (1 if pick else 0)
            text = " ".join(tokens[pick:pick + 1 + q])
            rows.append({"id": f"c{n}q{q}", "question": "where is alice ?" if q else "who is bob",
                         "context": context, "answers": [{"text": text, "answer_start": start_char}]})
    # A non-ASCII context: Python's character offsets become bytes.
    context = "zürich is at paris , the dog is at alice"
    rows.append({"id": "utf8", "question": "where", "context": context,
                 "answers": [{"text": "paris", "answer_start": context.index("paris")}]})
    cases = []
    for max_length, stride in ((24, 8), (32, 12), (64, 16)):
        enc = qa_windows(rows, tok, max_length, stride)
        train = QaTrain(rows, tok, max_length, stride)
        n = len(enc["input_ids"])
        starts = rng.normal(size=(n, max_length)).round(3)
        ends = rng.normal(size=(n, max_length)).round(3)
        answers = best_answers(rows, enc, starts, ends, max_answer=5)
        windows = []
        for i in range(n):
            row = rows[enc["overflow_to_sample_mapping"][i]]
            windows.append({
                "question": enc["overflow_to_sample_mapping"][i],
                "input_ids": enc["input_ids"][i],
                "token_type_ids": enc.encodings[i].type_ids,
                "offsets": byte_offsets(row["context"], enc["offset_mapping"][i], enc.sequence_ids(i)),
                "start_position": train.items[i]["start_positions"],
                "end_position": train.items[i]["end_positions"],
                "start_logits": starts[i].tolist(),
                "end_logits": ends[i].tolist(),
            })
        cases.append({"max_length": max_length, "stride": stride, "max_answer_length": 5,
                      "windows": windows, "answers": answers})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"rows": rows, "cases": cases}, f)
    print(OUT, sum(len(c["windows"]) for c in cases), "windows")


if __name__ == "__main__":
    main()
