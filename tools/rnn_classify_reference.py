"""The PyTorch reference for `lingo train classify`: the same recurrent classifier (embeddings →
dropout → (bi)LSTM/GRU over packed sequences → pooling → dropout → linear), the same recipe
(configs/sst2-bilstm.json: Adam, constant rate, gradient clipping, shuffled epochs) and the same
word ids (Lingo's tokenizer.json from its run folder, read with `tokenizers`), on the same files.

    python3 tools/rnn_classify_reference.py --train train.tsv --valid valid.tsv \
        --config configs/sst2-bilstm.json --tokenizer runs/sst2-bilstm/tokenizer.json

Prints the validation accuracy, the training time and the rates.
"""
import argparse
import csv
import json
import math
import random
import time

import torch
from tokenizers import Tokenizer


def read(path):
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    key = "sentence" if "sentence" in rows[0] else "text"
    return [(r[key], r["label"]) for r in rows]


class Classifier(torch.nn.Module):
    def __init__(self, vocab, m, labels, pad):
        super().__init__()
        self.pooling = m.get("pooling", "max")
        self.embed = torch.nn.Embedding(vocab, m["embed_dim"], padding_idx=pad)
        torch.nn.init.normal_(self.embed.weight, std=0.1)
        with torch.no_grad():
            self.embed.weight[pad].zero_()
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[m.get("cell", "lstm")]
        self.rnn = rnn(m["embed_dim"], m["hidden_size"], num_layers=m.get("num_layers", 1),
                       bidirectional=m.get("bidirectional", True), batch_first=True,
                       dropout=m.get("dropout", 0.5) if m.get("num_layers", 1) > 1 else 0.0)
        width = m["hidden_size"] * (2 if m.get("bidirectional", True) else 1)
        self.out = torch.nn.Linear(width, labels)
        self.drop = torch.nn.Dropout(m.get("dropout", 0.5))

    def forward(self, ids, lengths):
        x = self.drop(self.embed(ids))
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, h = self.rnn(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        mask = (torch.arange(out.shape[1])[None, :] < lengths[:, None]).unsqueeze(2)
        if self.pooling == "max":
            pooled = out.masked_fill(~mask, float("-inf")).max(1).values
        elif self.pooling == "mean":
            pooled = out.sum(1) / lengths[:, None]
        else:  # last
            h = h[0] if isinstance(h, tuple) else h
            dirs = 2 if self.rnn.bidirectional else 1
            pooled = h[-dirs:].transpose(0, 1).reshape(ids.shape[0], -1)
        return self.out(self.drop(pooled))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    recipe = json.load(open(a.config))
    m, t = recipe["model"], recipe["train"]
    torch.manual_seed(t.get("seed", 42))
    random.seed(t.get("seed", 42))
    tok = Tokenizer.from_file(a.tokenizer)
    pad, unk = tok.token_to_id("<pad>"), tok.token_to_id("<unk>")
    max_len = recipe.get("max_length", 128)
    train, valid = read(a.train), read(a.valid)
    labels = sorted({l for _, l in train})
    index = {l: i for i, l in enumerate(labels)}

    def encode(data):
        out = []
        for text, label in data:
            ids = tok.encode(text, add_special_tokens=False).ids[:max_len] or [unk]
            out.append((ids, index[label]))
        return out

    train, valid = encode(train), encode(valid)
    model = Classifier(tok.get_vocab_size(), m, len(labels), pad)
    opt = torch.optim.Adam(model.parameters(), lr=t["optimizer"].get("lr", 1e-3))
    bs = t.get("batch_size", 64)

    def batch(examples):
        lengths = torch.tensor([len(e[0]) for e in examples])
        ids = torch.full((len(examples), int(lengths.max())), pad, dtype=torch.long)
        for i, (s, _) in enumerate(examples):
            ids[i, : len(s)] = torch.tensor(s)
        return ids, lengths, torch.tensor([e[1] for e in examples])

    steps = math.ceil(len(train) / bs) * recipe.get("epochs", 3)
    start, done, words = time.time(), 0, 0
    model.train()
    while done < steps:
        order = list(range(len(train)))
        random.shuffle(order)
        for i in range(0, len(order), bs):
            if done >= steps:
                break
            ids, lengths, y = batch([train[j] for j in order[i : i + bs]])
            loss = torch.nn.functional.cross_entropy(model(ids, lengths), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.get("clip_norm", 5.0))
            opt.step()
            done += 1
            words += int(lengths.sum())
    train_s = time.time() - start
    model.eval()
    start, right = time.time(), 0
    with torch.no_grad():
        for i in range(0, len(valid), 256):
            ids, lengths, y = batch(valid[i : i + 256])
            right += int((model(ids, lengths).argmax(1) == y).sum())
    eval_s = time.time() - start
    print(json.dumps({
        "accuracy": right / len(valid), "steps": steps, "train_seconds": round(train_s, 1),
        "words_per_second": round(words / train_s), "sentences_per_second": round(len(valid) / eval_s),
        "threads": a.threads, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
