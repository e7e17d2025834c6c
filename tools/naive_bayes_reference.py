"""scikit-learn's multinomial Naive Bayes on the texts `lingo ngram classify --order 1` reads
(whitespace tokens, add-one smoothing, class priors from the training counts): the reference for
the statistical SST-2 row.

    python3 tools/naive_bayes_reference.py --train train.tsv --valid valid.tsv
"""
import argparse
import csv
import json
import time

from sklearn.feature_extraction.text import CountVectorizer
from sklearn.naive_bayes import MultinomialNB


def read(path):
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    key = "sentence" if "sentence" in rows[0] else "text"
    return [r[key] for r in rows], [r["label"] for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    args = ap.parse_args()
    (xt, yt), (xv, yv) = read(args.train), read(args.valid)
    start = time.time()
    vec = CountVectorizer(token_pattern=r"\S+", lowercase=False)
    nb = MultinomialNB(alpha=1.0).fit(vec.fit_transform(xt), yt)
    trained = time.time() - start
    start = time.time()
    predicted = nb.predict(vec.transform(xv))
    rate = len(xv) / (time.time() - start)
    accuracy = sum(p == y for p, y in zip(predicted, yv)) / len(yv)
    print(json.dumps({"accuracy": accuracy, "train_seconds": trained, "sentences_per_second": rate}))


if __name__ == "__main__":
    main()
