"""Nearest neighbours (cosine) of words in a checkpoint's input embeddings: a quick look at what
pre-training taught the lexicon.

    python3 tools/embedding_neighbours.py /work/runs/bert-nsp-2000 good bad great terrible film

Reads `model.safetensors` and `tokenizer.json` from the folder; a word that is not one token of
the vocabulary is reported as such.
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    folder, words = sys.argv[1], sys.argv[2:]
    weights = load_file(os.path.join(folder, "model.safetensors"))
    names = [k for k in weights if k.endswith("word_embeddings.weight") or k.endswith("shared.weight")]
    if not names:
        sys.exit(f"{folder}/model.safetensors: no word embedding matrix")
    emb = weights[names[0]].astype(np.float32)
    vocab = json.load(open(os.path.join(folder, "tokenizer.json")))["model"]["vocab"]
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        vocab = {piece: i for i, (piece, _) in enumerate(vocab)}
    pieces = {i: p for p, i in vocab.items()}
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    for word in words:
        if word not in vocab:
            print(f"{word}: not a single token")
            continue
        sims = unit @ unit[vocab[word]]
        best = [i for i in np.argsort(-sims) if i != vocab[word]][:8]
        print(f"{word}: " + ", ".join(f"{pieces.get(i, i)} {sims[i]:.2f}" for i in best))


if __name__ == "__main__":
    main()
