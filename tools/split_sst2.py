"""Splits SST-2's training file (GLUE `train.tsv`: every labelled phrase of the training trees) into a
training part and a whole-sentence validation part with no overlap, the split the SST-2 results in the
README use (Lingo and transformers read the same two files).

A *sentence* is a line that is not a contiguous token span of another line (SST phrases are spans of
their sentence). `--valid` sentences are drawn with a fixed seed; every line that is a span of a drawn
sentence (the sentence itself, its phrases) leaves the training part, so no validation text is trained on.

    python3 tools/split_sst2.py ../shared/data/sst2/train.tsv.gz --out /work/data/sst2
"""
import argparse
import gzip
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train_tsv")
    ap.add_argument("--out", required=True)
    ap.add_argument("--valid", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    opener = gzip.open if a.train_tsv.endswith(".gz") else open
    with opener(a.train_tsv, "rt", encoding="utf-8") as f:
        header = f.readline().rstrip("\n")
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    lines = {r[0].strip(): r[1] for r in rows}
    contained = set()
    for text in lines:
        toks = text.split()
        for i in range(len(toks)):
            for j in range(i + 1, len(toks) + 1):
                if j - i == len(toks):
                    continue
                span = " ".join(toks[i:j])
                if span in lines:
                    contained.add(span)
    sentences = sorted(t for t in lines if t not in contained)
    rng = random.Random(a.seed)
    valid = sorted(rng.sample(sentences, a.valid))
    held = set()
    for text in valid:
        toks = text.split()
        for i in range(len(toks)):
            for j in range(i + 1, len(toks) + 1):
                held.add(" ".join(toks[i:j]))
    os.makedirs(a.out, exist_ok=True)
    kept = 0
    with open(os.path.join(a.out, "train.tsv"), "w", encoding="utf-8") as f:
        f.write(header + "\n")
        for r in rows:
            if r[0].strip() not in held:
                f.write("\t".join(r) + "\n")
                kept += 1
    with open(os.path.join(a.out, "train-sentences.tsv"), "w", encoding="utf-8") as f:
        f.write(header + "\n")
        for r in rows:
            text = r[0].strip()
            if text not in held and text not in contained:
                f.write("\t".join(r) + "\n")
    with open(os.path.join(a.out, "valid.tsv"), "w", encoding="utf-8") as f:
        f.write(header + "\n")
        for text in valid:
            f.write(f"{text}\t{lines[text]}\n")
    print(f"{len(rows)} lines, {len(sentences)} sentences; train {kept} lines, valid {len(valid)} sentences")


if __name__ == "__main__":
    main()
