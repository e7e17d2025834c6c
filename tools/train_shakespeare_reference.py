"""PyTorch reference for Lingo's character-level Shakespeare recipe (configs/shakespeare-char.json).

nanoGPT's recipe — 4 layers, 4 heads, d_model 128, context 64, batch 12, dropout 0, biases on, tied
embeddings, AdamW lr 1e-3, beta2 0.99, weight decay 0.1 on matrices, 100 warm-up steps then cosine to
1e-4, clip 1.0, 2000 steps — evaluated exactly as Lingo evaluates: mean loss over every non-overlapping
64-character window of the last 10% of the text. Prints the validation curve and the wall time.

    python3 tools/train_shakespeare_reference.py ../shared/data/tinyshakespeare/input.txt
"""
import math
import sys
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
    torch.set_num_threads(2)
    torch.manual_seed(int(sys.argv[2]) if len(sys.argv) > 2 else 1337)
    text = open(sys.argv[1], encoding="utf-8").read()
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
            print(f"step {step + 1}: train {loss.item():.4f} val {evaluate():.4f} ({time.time() - t0:.0f}s)", flush=True)
    print(f"wall time {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
