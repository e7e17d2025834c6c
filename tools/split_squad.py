"""Splits the SQuAD v1.1 file in `../shared/data/squad/` (36 articles of the official dev set) by
article into a training part and a validation part, the split the SQuAD results in the README use
(Lingo and transformers read the same two files). Every sixth article (the 6th, 12th, …, 36th) is
held out, so no validation paragraph is trained on.

    python3 tools/split_squad.py ../shared/data/squad/squad-v1.1-dev-train-split.json.gz --out /work/data/squad
"""
import argparse
import gzip
import json
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("squad_json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=int, default=6)
    a = ap.parse_args()
    opener = gzip.open if a.squad_json.endswith(".gz") else open
    with opener(a.squad_json, "rt", encoding="utf-8") as f:
        data = json.load(f)
    articles = data["data"]
    valid = [x for i, x in enumerate(articles) if (i + 1) % a.every == 0]
    train = [x for i, x in enumerate(articles) if (i + 1) % a.every != 0]
    os.makedirs(a.out, exist_ok=True)
    for name, part in (("train", train), ("valid", valid)):
        with open(os.path.join(a.out, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump({"version": data.get("version", "1.1"), "data": part}, f)
        questions = sum(len(p["qas"]) for x in part for p in x["paragraphs"])
        print(f"{name}: {len(part)} articles, {questions} questions")


if __name__ == "__main__":
    main()
