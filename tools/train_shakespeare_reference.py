"""PyTorch reference for Lingo's character-level Shakespeare recipe (configs/shakespeare-char.json).

nanoGPT's recipe — 4 layers, 4 heads, d_model 128, context 64, batch 12, dropout 0, biases on, tied
embeddings, AdamW lr 1e-3, beta2 0.99, weight decay 0.1 on matrices, 100 warm-up steps then cosine to
1e-4, clip 1.0, 2000 steps — evaluated exactly as Lingo evaluates: mean loss over every non-overlapping
64-character window of the last 10% of the text. Prints the validation curve and the wall time.

    python3 tools/train_shakespeare_reference.py ../shared/data/tinyshakespeare/input.txt [SEED] [--json] [--threads N]

With --json the last line is a JSON object (torch version, threads, wall_ms, the final val_loss),
which `lingo bench recipe` reads.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from bench_gpt import GPT

STEPS, BATCH, CONTEXT, WARMUP, LR, MIN_LR = 2000, 12, 64, 100, 1e-3, 1e-4


def lr_at(step):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * progress)) * (LR - MIN_LR)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("seed", type=int, nargs="?", default=1337)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, help="ignored: the recipe is one run")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    text = open(a.data, encoding="utf-8").read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(data))
    train, val = data[:cut], data[cut:]
    model = GPT(len(chars), CONTEXT, 128, 4, 4, 512, tied=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=(0.9, 0.99))

    def evaluate():
        model.eval()
        starts = list(range(0, len(val) - CONTEXT, CONTEXT))
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(starts), BATCH):
                s = starts[i:i + BATCH]
                x = torch.stack([val[j:j + CONTEXT] for j in s])
                y = torch.stack([val[j + 1:j + CONTEXT + 1] for j in s])
                total += model(x, y).item() * len(s)
        model.train()
        return total / len(starts)

    t0 = time.time()
    for step in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        ix = torch.randint(len(train) - CONTEXT, (BATCH,))
        x = torch.stack([train[i:i + CONTEXT] for i in ix])
        y = torch.stack([train[i + 1:i + CONTEXT + 1] for i in ix])
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 250 == 0:
            val_loss = evaluate()
            print(f"step {step + 1}: train {loss.item():.4f} val {val_loss:.4f} ({time.time() - t0:.0f}s)", flush=True)
    wall = time.time() - t0
    print(f"wall time {wall:.1f}s")
    if a.json:
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                          "wall_ms": [wall * 1e3], "val_loss": val_loss}))


if __name__ == "__main__":
    main()
