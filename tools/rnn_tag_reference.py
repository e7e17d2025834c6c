"""The PyTorch reference for `lingo train tag`: the same tagger (word embeddings beside a character
BiLSTM's final states → dropout → BiLSTM → dropout → linear, then per-word cross-entropy or a
linear-chain CRF), the same recipe (configs/ewt-bilstm.json, configs/conll-bilstm-crf.json: Adam,
constant rate, clipping, word dropout of singletons, shuffled epochs) and the same vocabularies
(the run folder's vocab.json), on the same files.

    python3 tools/rnn_tag_reference.py --train en_ewt-ud-train.conllu.gz \
        --valid en_ewt-ud-dev.conllu.gz --config configs/ewt-bilstm.json \
        --vocab runs/ewt-bilstm/vocab.json
    python3 tools/rnn_tag_reference.py --train conll2003/train.txt.gz --valid conll2003/valid.txt.gz \
        --config configs/conll-bilstm-crf.json --vocab runs/conll-bilstm-crf/vocab.json

Prints accuracy (known and unknown words apart), seqeval's entity F1 for BIO tags, the training
time and the rates.
"""
import argparse
import gzip
import json
import math
import random
import time

import torch


def read(path, column="upos"):
    opener = gzip.open if path.endswith(".gz") else open
    sentences, words, tags = [], [], []
    conllu = ".conllu" in path
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            if conllu:
                if line.startswith("#"):
                    continue
                fields = line.split("\t")
                if "-" in fields[0] or "." in fields[0]:
                    continue
                words.append(fields[1])
                tags.append(fields[3 if column == "upos" else 4])
            else:
                fields = line.split()
                words.append(fields[0])
                tags.append(fields[-1])
    if words:
        sentences.append((words, tags))
    return sentences


class Crf(torch.nn.Module):
    def __init__(self, k):
        super().__init__()
        self.start = torch.nn.Parameter(torch.empty(k).uniform_(-0.1, 0.1))
        self.end = torch.nn.Parameter(torch.empty(k).uniform_(-0.1, 0.1))
        self.trans = torch.nn.Parameter(torch.empty(k, k).uniform_(-0.1, 0.1))

    def loss(self, e, tags, mask):
        b, t, k = e.shape
        alpha = self.start + e[:, 0]
        for s in range(1, t):
            nxt = torch.logsumexp(alpha[:, :, None] + self.trans[None] + e[:, s, None, :], dim=1)
            alpha = torch.where(mask[:, s, None], nxt, alpha)
        z = torch.logsumexp(alpha + self.end, dim=1)
        lengths = mask.sum(1)
        gold = self.start[tags[:, 0]] + e[:, 0].gather(1, tags[:, :1]).squeeze(1)
        for s in range(1, t):
            step = self.trans[tags[:, s - 1], tags[:, s]] + e[:, s].gather(1, tags[:, s : s + 1]).squeeze(1)
            gold = gold + step * mask[:, s]
        gold = gold + self.end[tags.gather(1, (lengths - 1)[:, None]).squeeze(1)]
        return (z - gold).mean()

    def decode(self, e, lengths):
        out = []
        for i, n in enumerate(lengths.tolist()):
            score = self.start + e[i, 0]
            back = []
            for s in range(1, n):
                v = score[:, None] + self.trans
                best, arg = v.max(0)
                back.append(arg)
                score = best + e[i, s]
            j = int((score + self.end).argmax())
            path = [j]
            for arg in reversed(back):
                j = int(arg[j])
                path.append(j)
            out.append(path[::-1])
        return out


class Tagger(torch.nn.Module):
    def __init__(self, m, words, chars, tags, use_chars):
        super().__init__()
        self.embed = torch.nn.Embedding(words, m["embed_dim"], padding_idx=0)
        torch.nn.init.normal_(self.embed.weight, std=0.1)
        width = m["embed_dim"]
        self.use_chars = use_chars
        if use_chars:
            self.cembed = torch.nn.Embedding(chars, m["char_embed_dim"], padding_idx=0)
            torch.nn.init.normal_(self.cembed.weight, std=0.1)
            self.crnn = torch.nn.LSTM(m["char_embed_dim"], m["char_hidden_size"], bidirectional=True, batch_first=True)
            width += 2 * m["char_hidden_size"]
        self.rnn = torch.nn.LSTM(width, m["hidden_size"], bidirectional=True, batch_first=True)
        self.out = torch.nn.Linear(2 * m["hidden_size"], tags)
        self.drop = torch.nn.Dropout(m["dropout"])
        self.crf = Crf(tags) if m.get("crf") else None

    def emissions(self, ids, lengths, chars, char_lengths):
        x = self.embed(ids)
        if self.use_chars:
            packed = torch.nn.utils.rnn.pack_padded_sequence(self.cembed(chars), char_lengths, batch_first=True, enforce_sorted=False)
            _, (h, _) = self.crnn(packed)
            per_word = h.transpose(0, 1).reshape(chars.shape[0], -1)
            grid = torch.zeros(ids.shape[0], ids.shape[1], per_word.shape[1])
            mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
            grid[mask] = per_word
            x = torch.cat([x, grid], 2)
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.drop(x), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return self.out(self.drop(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--column", default="upos")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-steps", type=int, help="stop early (a smoke test)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    recipe = json.load(open(a.config))
    m, t = recipe["model"], recipe["train"]
    torch.manual_seed(t.get("seed", 42))
    rng = random.Random(t.get("seed", 42))
    vocab = json.load(open(a.vocab))
    wid = {w: i for i, w in enumerate(vocab["words"])}
    cid = {c: i for i, c in enumerate(vocab["chars"]) if i >= 2}
    train, valid = read(a.train, a.column), read(a.valid, a.column)
    tags = sorted({g for _, ts in train for g in ts})
    tid = {g: i for i, g in enumerate(tags)}
    counts = {}
    for ws, _ in train:
        for w in ws:
            counts[w] = counts.get(w, 0) + 1
    singletons = {wid[w] for w, n in counts.items() if n == 1 and w in wid}

    def encode(data):
        return [([wid.get(w, 1) for w in ws], [[cid.get(c, 1) for c in w] or [1] for w in ws],
                 [tid[g] for g in ts], [w in counts for w in ws]) for ws, ts in data]

    train, valid = encode(train), encode(valid)
    use_chars = recipe.get("char_features", True)
    model = Tagger(m, len(vocab["words"]), len(vocab["chars"]), len(tags), use_chars)
    opt = torch.optim.Adam(model.parameters(), lr=t["optimizer"].get("lr", 1e-3))
    bs, p = t.get("batch_size", 32), recipe.get("word_dropout", 0.5)

    def batch(examples, drop):
        lengths = torch.tensor([len(e[0]) for e in examples])
        ids = torch.zeros(len(examples), int(lengths.max()), dtype=torch.long)
        tg = torch.zeros_like(ids)
        for i, e in enumerate(examples):
            ws = [1 if drop and w in singletons and rng.random() < p else w for w in e[0]]
            ids[i, : len(ws)] = torch.tensor(ws)
            tg[i, : len(ws)] = torch.tensor(e[2])
        words = [c for e in examples for c in e[1]]
        char_lengths = torch.tensor([len(w) for w in words])
        chars = torch.zeros(len(words), int(char_lengths.max()), dtype=torch.long)
        for i, w in enumerate(words):
            chars[i, : len(w)] = torch.tensor(w)
        mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        return ids, lengths, chars, char_lengths, tg, mask

    steps = math.ceil(len(train) / bs) * recipe.get("epochs", 10)
    if a.max_steps:
        steps = min(steps, a.max_steps)
    start, done, nwords = time.time(), 0, 0
    while done < steps:
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in range(0, len(order), bs):
            if done >= steps:
                break
            ids, lengths, chars, cl, tg, mask = batch([train[j] for j in order[i : i + bs]], True)
            e = model.emissions(ids, lengths, chars, cl)
            if model.crf is not None:
                loss = model.crf.loss(e, tg, mask)
            else:
                loss = torch.nn.functional.cross_entropy(e[mask], tg[mask])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.get("clip_norm", 5.0))
            opt.step()
            done += 1
            nwords += int(lengths.sum())
    train_s = time.time() - start
    model.eval()
    start, predicted = time.time(), []
    with torch.no_grad():
        for i in range(0, len(valid), 64):
            ids, lengths, chars, cl, tg, mask = batch(valid[i : i + 64], False)
            e = model.emissions(ids, lengths, chars, cl)
            if model.crf is not None:
                predicted += model.crf.decode(e, lengths)
            else:
                predicted += [row[:n].tolist() for row, n in zip(e.argmax(2), lengths.tolist())]
    eval_s = time.time() - start
    n = right = known = known_right = 0
    for (ws, _, gold, kn), pred in zip(valid, predicted):
        for g, q, k in zip(gold, pred, kn):
            n += 1
            right += g == q
            known += k
            known_right += k and g == q
    result = {"accuracy": right / n, "known_accuracy": known_right / known,
              "unknown_accuracy": (right - known_right) / max(n - known, 1), "steps": steps,
              "train_seconds": round(train_s, 1), "words_per_second": round(nwords / train_s),
              "eval_words_per_second": round(n / eval_s), "torch": torch.__version__}
    if any(g.startswith("B-") for g in tags):
        from seqeval.metrics import f1_score
        result["f1"] = f1_score([[tags[g] for g in e[2]] for e in valid], [[tags[q] for q in pr] for pr in predicted])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
