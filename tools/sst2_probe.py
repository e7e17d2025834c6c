"""Linear probe: how much sentiment a pre-trained encoder's frozen features carry, against the same
architecture with random weights. Logistic regression (scikit-learn) on mean-pooled embeddings,
mean-pooled last-layer states and the last layer's [CLS] state of SST-2 sentences.

    python3 tools/sst2_probe.py --model /work/runs/bert-mini --train /work/data/sst2/train.tsv \\
        --valid /work/data/sst2/valid.tsv

The training part is `--n` training lines of at least 8 words (whole sentences rather than
fragments), drawn with a fixed seed; the validation file is `tools/split_sst2.py`'s.
"""
import argparse
import random

import numpy as np
import torch
import transformers as tf
from sklearn.linear_model import LogisticRegression


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f.readlines()[1:] if line.strip()]


def features(model, tokenizer, texts):
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 100):
            batch = tokenizer(texts[i : i + 100], return_tensors="pt", padding=True,
                              truncation=True, max_length=64)
            o = model(**batch, output_hidden_states=True)
            mask = batch["attention_mask"][..., None].float()
            pooled = [((h * mask).sum(1) / mask.sum(1)).numpy()
                      for h in (o.hidden_states[0], o.hidden_states[-1])]
            out.append(np.concatenate(pooled + [o.hidden_states[-1][:, 0].numpy()], 1))
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    tokenizer = tf.AutoTokenizer.from_pretrained(a.model)
    pretrained = tf.AutoModel.from_pretrained(a.model).eval()
    scratch = tf.AutoModel.from_config(pretrained.config).eval()
    train = [r for r in rows(a.train) if len(r[0].split()) >= 8]
    random.Random(a.seed).shuffle(train)
    train = train[: a.n]
    valid = rows(a.valid)
    y_train = np.array([int(r[1]) for r in train])
    y_valid = np.array([int(r[1]) for r in valid])
    width = pretrained.config.hidden_size
    for name, model in (("pre-trained", pretrained), ("random init", scratch)):
        f_train = features(model, tokenizer, [r[0] for r in train])
        f_valid = features(model, tokenizer, [r[0] for r in valid])
        for j, what in enumerate(("embeddings, mean", "last layer, mean", "last layer, [CLS]")):
            cols = slice(width * j, width * (j + 1))
            probe = LogisticRegression(max_iter=3000).fit(f_train[:, cols], y_train)
            print(f"{name:12} {what:18} accuracy {100 * probe.score(f_valid[:, cols], y_valid):.1f}%")


if __name__ == "__main__":
    main()
