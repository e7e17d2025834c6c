"""The reference run of `lingo pretrain` for a BERT masked LM: transformers' BertForMaskedLM and
PyTorch's AdamW on the same data, tokenizer and recipe, so their validation losses can be set side
by side.

Same as Lingo: the corpus read as blank-line-separated documents, each sentence (line) tokenised
without special tokens, each document followed by [SEP], the stream cut into blocks of
max_length − 2 tokens framed by [CLS] … [SEP]; whole words (a piece and its ## continuations)
chosen with probability 0.15, 80% [MASK] / 10% random non-special token / 10% kept, new masks
each epoch; AdamW (β 0.9/0.999, ε 1e-6, weight decay 0.01 except biases and LayerNorm weights),
linear warm-up then linear decay to 0, gradient clipping at 1.0; validation on the first
`eval_batches` batches of the validation corpus with fixed masks. The model is built from the
config.json of the Lingo run (same shape, same vocabulary), freshly initialised by transformers.

    python3 tools/pretrain_reference.py --lingo-run /work/runs/pretrain-bert-mini-600 \\
        --corpus ../shared/data/wikitext2/wiki.train.tokens.gz \\
        --valid ../shared/data/wikitext2/wiki.valid.tokens.gz --steps 600 --out ref.jsonl
"""
import argparse
import gzip
import json
import math
import time

import numpy as np
import torch
import transformers as tf


def documents(path):
    opener = gzip.open if path.endswith(".gz") else open
    doc = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line.strip():
                doc.append(line)
            elif doc:
                yield doc
                doc = []
    if doc:
        yield doc


def blocks(path, tok, length):
    sep = tok.sep_token_id
    stream = []
    for doc in documents(path):
        for ids in tok(doc, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
        stream.append(sep)
    n = len(stream) // length
    return np.array(stream[: n * length], dtype=np.int64).reshape(n, length)


class Masker:
    def __init__(self, tok):
        vocab = len(tok)
        pieces = tok.convert_ids_to_tokens(list(range(vocab)))
        self.special = np.zeros(vocab, dtype=bool)
        self.special[tok.all_special_ids] = True
        self.continues = np.array([p.startswith("##") for p in pieces])
        self.ordinary = np.flatnonzero(~self.special)
        self.mask_id = tok.mask_token_id

    def __call__(self, ids, rng):
        special = self.special[ids]
        starts = ~self.continues[ids] | np.roll(special, 1)
        starts[:, 0] = True
        chosen_word = rng.random(ids.shape) < 0.15
        # A token is chosen when the first piece of its word was.
        first = np.where(starts, np.arange(ids.shape[1])[None, :], 0)
        first = np.maximum.accumulate(first, axis=1)
        chosen = np.take_along_axis(chosen_word, first, axis=1) & ~special
        labels = np.where(chosen, ids, -100)
        r = rng.random(ids.shape)
        inputs = ids.copy()
        inputs[chosen & (r < 0.8)] = self.mask_id
        random = chosen & (r >= 0.8) & (r < 0.9)
        inputs[random] = rng.choice(self.ordinary, size=int(random.sum()))
        return inputs, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lingo-run", required=True, help="the Lingo run's folder (config, tokenizer)")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    tok = tf.AutoTokenizer.from_pretrained(a.lingo_run)
    config = tf.BertConfig.from_pretrained(a.lingo_run)
    model = tf.BertForMaskedLM(config).train()
    train = blocks(a.corpus, tok, a.max_length - 2)
    valid = blocks(a.valid, tok, a.max_length - 2)[: a.eval_batches * a.batch_size]
    frame = lambda b: np.concatenate(
        [np.full((len(b), 1), tok.cls_token_id), b, np.full((len(b), 1), tok.sep_token_id)], axis=1)
    masker = Masker(tok)
    valid_in, valid_labels = masker(frame(valid), np.random.default_rng(a.seed + 1))
    decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
    rest = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-6)
    sched = tf.get_linear_schedule_with_warmup(opt, a.warmup, a.steps)
    print(f"{len(train)} training and {len(valid)} validation blocks; "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)

    def evaluate():
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(valid_in), a.batch_size):
                x = torch.from_numpy(valid_in[i:i + a.batch_size])
                y = torch.from_numpy(valid_labels[i:i + a.batch_size])
                total += model(input_ids=x, labels=y).loss.item() * len(x)
                count += len(x)
        model.train()
        return total / count

    order, at = rng.permutation(len(train)), 0
    log = open(a.out, "w")
    train_secs = 0.0
    for step in range(1, a.steps + 1):
        if at + a.batch_size > len(order):
            order, at = rng.permutation(len(train)), 0
        picks = order[at:at + a.batch_size]
        at += a.batch_size
        inputs, labels = masker(frame(train[picks]), rng)
        t0 = time.perf_counter()
        loss = model(input_ids=torch.from_numpy(inputs), labels=torch.from_numpy(labels)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        train_secs += time.perf_counter() - t0
        record = {"step": step, "loss": loss.item()}
        if step % a.eval_every == 0 or step == a.steps:
            val = evaluate()
            record.update(val_loss=val, perplexity=math.exp(val),
                          ms_per_step=train_secs / step * 1e3)
            print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
    log.close()


if __name__ == "__main__":
    main()
