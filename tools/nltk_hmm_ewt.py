"""NLTK's HMM taggers trained and scored on the same UD English-EWT files as `lingo hmm`:
the first-order HiddenMarkovModelTagger (Lidstone-smoothed, as NLTK's trainer offers) and
nltk.tag.tnt.TnT (Brants' trigram tagger with its capitalisation-split suffix model for unknown
words, NLTK's default).

    pip install nltk
    python3 tools/nltk_hmm_ewt.py ../shared/data/ud_en_ewt [--column upos|xpos]
    python3 tools/nltk_hmm_ewt.py ../shared/data/conll2003 --conll   # NER tags (needs seqeval)

Prints one JSON line per tagger: accuracy, known-word and unknown-word accuracy, train and tag
seconds, and for CoNLL-2003 seqeval's entity F1 on the development set.
"""
import argparse
import gzip
import json
import pathlib
import time

from nltk.probability import LidstoneProbDist
from nltk.tag import hmm, tnt


def read(path, column):
    col = 3 if column == "upos" else 4
    sentences, current = [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if current:
                    sentences.append(current)
                current = []
                continue
            if line.startswith("#"):
                continue
            fields = line.split("\t")
            if "-" in fields[0] or "." in fields[0]:
                continue
            current.append((fields[1], fields[col]))
    if current:
        sentences.append(current)
    return sentences


def read_conll(path):
    """CoNLL-2003 columns: the word first, the tag last; -DOCSTART- and blank lines end sentences."""
    sentences, current = [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if current:
                    sentences.append(current)
                current = []
                continue
            current.append((fields[0], fields[-1]))
    if current:
        sentences.append(current)
    return sentences


def score(name, tagger, train_words, gold, train_s):
    start = time.time()
    predicted = tagger.tag_sents([[w for w, _ in s] for s in gold])
    tag_s = time.time() - start
    n = right = known = known_right = 0
    for g, p in zip(gold, predicted):
        for (w, t), (_, q) in zip(g, p):
            ok = t == q
            n += 1
            right += ok
            if w in train_words:
                known += 1
                known_right += ok
    unknown = n - known
    result = {
        "tagger": name, "accuracy": right / n, "known_accuracy": known_right / known,
        "unknown_accuracy": (right - known_right) / max(unknown, 1), "words": n,
        "unknown_words": unknown, "train_seconds": round(train_s, 2), "tag_seconds": round(tag_s, 2),
    }
    if any(t.startswith(("B-", "I-")) for s in gold for _, t in s):
        from seqeval.metrics import f1_score
        result["f1"] = f1_score([[t for _, t in s] for s in gold], [[q for _, q in s] for s in predicted])
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--column", default="upos", choices=["upos", "xpos"])
    ap.add_argument("--split", default="test", choices=["dev", "test"])
    ap.add_argument("--conll", action="store_true", help="DATA is CoNLL-2003: train on train.txt.gz, score valid.txt.gz")
    args = ap.parse_args()
    d = pathlib.Path(args.data)
    if args.conll:
        train, gold = read_conll(d / "train.txt.gz"), read_conll(d / "valid.txt.gz")
    else:
        train = read(d / "en_ewt-ud-train.conllu.gz", args.column)
        gold = read(d / f"en_ewt-ud-{args.split}.conllu.gz", args.column)
    words = {w for s in train for w, _ in s}

    start = time.time()
    trainer = hmm.HiddenMarkovModelTrainer()
    first = trainer.train_supervised(train, estimator=lambda fd, bins: LidstoneProbDist(fd, 0.1, bins))
    score("nltk HiddenMarkovModelTagger (Lidstone 0.1)", first, words, gold, time.time() - start)

    start = time.time()
    t = tnt.TnT(N=1000)
    t.train(train)
    score("nltk TnT (Brants suffix model)", t, words, gold, time.time() - start)


if __name__ == "__main__":
    main()
