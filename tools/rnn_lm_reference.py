"""The PyTorch reference for `lingo train rnn-lm`: Zaremba et al.'s recipe as Lingo runs it
(configs/ptb-lstm-small.json) — the same vocabulary (`</s>`, `<unk>`, then words by falling
count), the same stream (`</s>`, then each sentence and `</s>`) cut into `batch_size` columns,
windows of `bptt` steps with the state carried and reset each epoch, SGD on the mean loss with
gradient clipping, the rate held for `lr_decay.after_epochs` epochs and then multiplied by
`lr_decay.factor` each epoch; embeddings and output layer from U(-init_range, init_range), the
LSTM at PyTorch's default, the output bias at zero.

    python3 tools/rnn_lm_reference.py --train ptb.train.txt --valid ptb.valid.txt \
        --test ptb.test.txt --config configs/ptb-lstm-small.json [--threads 2] [--steps N]

Prints each epoch's validation perplexity, the test perplexity (batch 1, the state carried
through, as `lingo rnn-lm eval`), the training time and the rate, and a JSON line at the end.
"""
import argparse
import collections
import gzip
import json
import math
import time

import torch


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [l.split() for l in f if l.split()]


def vocabulary(sentences, size):
    counts = collections.Counter(w for s in sentences for w in s)
    for special in ("</s>", "<unk>"):
        counts.pop(special, None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if size:
        ranked = ranked[: size - 2]
    words = ["</s>", "<unk>"] + [w for w, _ in ranked]
    return {w: i for i, w in enumerate(words)}


def stream(vocab, sentences):
    ids = [0]
    for s in sentences:
        ids.extend(vocab.get(w, 1) if w != "</s>" else 1 for w in s)
        ids.append(0)
    return torch.tensor(ids, dtype=torch.long)


def columns(ids, n):
    length = len(ids) // n
    return ids[: length * n].view(n, length)


class Lm(torch.nn.Module):
    def __init__(self, vocab, m):
        super().__init__()
        cell = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[m.get("cell", "lstm")]
        r = m.get("init_range", 0.1)
        self.embed = torch.nn.Embedding(vocab, m["embed_dim"])
        self.rnn = cell(m["embed_dim"], m["hidden_size"], num_layers=m["num_layers"], batch_first=True,
                        dropout=m.get("dropout", 0.0) if m["num_layers"] > 1 else 0.0)
        self.out = torch.nn.Linear(m["hidden_size"], vocab)
        self.drop = torch.nn.Dropout(m.get("dropout", 0.0))
        torch.nn.init.uniform_(self.embed.weight, -r, r)
        torch.nn.init.uniform_(self.out.weight, -r, r)
        torch.nn.init.zeros_(self.out.bias)

    def forward(self, x, state):
        out, state = self.rnn(self.drop(self.embed(x)), state)
        return self.out(self.drop(out)), state


def detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def evaluate(model, rows, bptt):
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        length = rows.shape[1]
        start = 0
        while start + 1 < length:
            n = min(bptt, length - 1 - start)
            x, y = rows[:, start:start + n], rows[:, start + 1:start + 1 + n]
            logits, state = model(x, state)
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
            start += n
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (a speed probe)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = json.load(open(args.config))
    m, t = recipe["model"], recipe["train"]
    torch.manual_seed(t.get("seed", 42))
    train_s = read(args.train)
    vocab = vocabulary(train_s, recipe.get("vocab_size", 0))
    batch, bptt = t["batch_size"], recipe["bptt"]
    train = columns(stream(vocab, train_s), batch)
    valid = stream(vocab, read(args.valid))
    valid_rows = columns(valid, min(batch, len(valid) // 2))
    model = Lm(len(vocab), m)
    lr0 = t["optimizer"]["lr"]
    opt = torch.optim.SGD(model.parameters(), lr=lr0)
    windows = (train.shape[1] - 1) // bptt
    decay = recipe.get("lr_decay")
    print(f"vocabulary {len(vocab)}, {train.numel()} training tokens, {windows} windows an epoch")
    step, train_secs, tokens = 0, 0.0, 0
    for epoch in range(recipe["epochs"]):
        lr = lr0
        if decay and epoch >= decay["after_epochs"]:
            lr = lr0 * decay["factor"] ** (epoch - decay["after_epochs"] + 1)
        for g in opt.param_groups:
            g["lr"] = lr
        state = None
        start = time.time()
        for w in range(windows):
            x = train[:, w * bptt:(w + 1) * bptt]
            y = train[:, w * bptt + 1:(w + 1) * bptt + 1]
            logits, state = model(x, detach(state))
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            if t.get("clip_norm"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), t["clip_norm"])
            opt.step()
            step += 1
            tokens += y.numel()
            if args.steps and step >= args.steps:
                break
        train_secs += time.time() - start
        val = evaluate(model, valid_rows, bptt)
        print(f"epoch {epoch + 1}: lr {lr:.4g}, train loss {loss.item():.4f}, valid ppl {math.exp(val):.2f}, "
              f"{tokens / train_secs:.0f} words/s", flush=True)
        if args.steps and step >= args.steps:
            break
    test = stream(vocab, read(args.test))
    start = time.time()
    test_loss = evaluate(model, test.view(1, -1), 64)
    test_secs = time.time() - start
    result = {
        "valid_perplexity": math.exp(val),
        "test_perplexity": math.exp(test_loss),
        "train_seconds": train_secs,
        "words_per_second": tokens / train_secs,
        "test_words_per_second": (len(test) - 1) / test_secs,
        "steps": step,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
