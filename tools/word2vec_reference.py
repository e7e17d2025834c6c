"""The reference for `lingo word2vec train`: gensim's Word2Vec (skip-gram, negative sampling) on the
same corpus with the same settings, and both sets of vectors scored the same way — Spearman
correlation with WordSim-353 and accuracy on Mikolov's analogy questions (both files ship with
gensim's tests).

    lingo word2vec train --corpus wiki.train.tokens.gz --out lingo.vec
    python3 tools/word2vec_reference.py wiki.train.tokens.gz --lingo lingo.vec [--workers 1]
"""
import argparse
import gzip
import json
import time

from gensim.models import KeyedVectors, Word2Vec
from gensim.test.utils import datapath


def score(kv):
    pearson, spearman, oov = kv.evaluate_word_pairs(datapath("wordsim353.tsv"))
    analogies, _ = kv.evaluate_word_analogies(datapath("questions-words.txt"), restrict_vocab=30000)
    return {"wordsim353_spearman": round(spearman.statistic, 4), "wordsim353_oov_percent": round(oov, 1),
            "analogy_accuracy": round(analogies, 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--lingo", required=True)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    opener = gzip.open if a.corpus.endswith(".gz") else open
    with opener(a.corpus, "rt", encoding="utf-8") as f:
        sentences = [line.split() for line in f if line.split()]
    start = time.time()
    model = Word2Vec(sentences, sg=1, negative=5, vector_size=100, window=5, min_count=5, sample=1e-3,
                     alpha=0.025, min_alpha=0.0001 * 0.025, epochs=5, workers=a.workers, seed=1)
    secs = time.time() - start
    print(json.dumps({"tool": f"gensim {__import__('gensim').__version__}", "workers": a.workers,
                      "train_seconds": round(secs, 1), "vocabulary": len(model.wv), **score(model.wv)}))
    lingo = KeyedVectors.load_word2vec_format(a.lingo, binary=False)
    print(json.dumps({"tool": "lingo", "vocabulary": len(lingo), **score(lingo)}))


if __name__ == "__main__":
    main()
