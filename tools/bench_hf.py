"""PyTorch + transformers side of `lingo bench bert` and `lingo bench gpt2`: the same random-weight
models from the default configs, timed the same way as Lingo's side.

- bert: BertModel(BertConfig()) (BERT-base: 12 layers, 768 wide, 12 heads), forward of batch 1 x 128
  token ids, no gradients.
- gpt2: GPT2LMHeadModel(GPT2Config()) (GPT-2 small, 124M), greedy `generate` of 128 new tokens
  after a 32-token prompt, with the KV cache.
- finetune: BertForSequenceClassification with all-MiniLM-L6-v2's shape (6 layers, 384 wide, 12
  heads, 1536 feed-forward, dropout 0.1), a fine-tuning step on 32 × 64 tokens: forward in training
  mode, cross-entropy, backward, global-norm clipping at 1.0, AdamW (lr 5e-5, weight decay 0.01 on
  everything but biases and LayerNorm weights, as Trainer groups them); `train_ms` and `forward_ms`.
- pretrain: BertForMaskedLM of bert-mini's shape (4 layers, 256 wide, 4 heads, 1024 feed-forward,
  vocabulary 16,000), a masked-LM pre-training step on 32 × 128 tokens with 15% of the positions
  labelled: forward in training mode, loss, backward, clipping at 1.0, AdamW (lr 5e-4, decay as
  above); `train_ms` and `forward_ms`.

With --bf16, every forward (and the loss) runs under `torch.autocast("cpu", dtype=torch.bfloat16)`,
PyTorch's mixed precision on the CPU: bf16 matrix products, f32 weights and optimizer.

Prints one JSON object with per-iteration milliseconds (`ms`).

    python3 tools/bench_hf.py bert --threads 2 --iters 10
"""
import argparse
import json
import time

import torch
import transformers as tf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["bert", "gpt2", "finetune", "pretrain"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    precision = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    if a.model in ("finetune", "pretrain"):
        if a.model == "finetune":
            cfg = tf.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                intermediate_size=1536, num_labels=2)
            model = tf.BertForSequenceClassification(cfg).train()
            ids = torch.randint(1000, 30000, (32, 64), generator=g)
            labels = torch.randint(0, 2, (32,), generator=g)
            lr = 5e-5
        else:
            cfg = tf.BertConfig(vocab_size=16000, hidden_size=256, num_hidden_layers=4,
                                num_attention_heads=4, intermediate_size=1024,
                                max_position_embeddings=128)
            model = tf.BertForMaskedLM(cfg).train()
            ids = torch.randint(5, 16000, (32, 128), generator=g)
            chosen = torch.rand((32, 128), generator=g) < 0.15
            labels = torch.where(chosen, ids, torch.full_like(ids, -100))
            lr = 5e-4
        decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
        rest = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                 {"params": rest, "weight_decay": 0.0}], lr=lr)

        def step():
            with precision:
                loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        def forward():
            with torch.no_grad(), precision:
                model(input_ids=ids, labels=labels).loss.item()

        out = {"torch": torch.__version__, "transformers": tf.__version__,
               "threads": torch.get_num_threads()}
        for key, fn in [("train_ms", step), ("forward_ms", forward)]:
            for _ in range(a.warmup):
                fn()
            times = []
            for _ in range(a.iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            out[key] = times
        print(json.dumps(out))
        return
    if a.model == "bert":
        model = tf.BertModel(tf.BertConfig()).eval()
        ids = torch.randint(1000, 30000, (1, 128), generator=g)

        def run():
            with torch.no_grad(), precision:
                model(input_ids=ids)
    else:
        model = tf.GPT2LMHeadModel(tf.GPT2Config()).eval()
        ids = torch.randint(1000, 50000, (1, 32), generator=g)

        def run():
            with torch.no_grad(), precision:
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=128,
                                     min_new_tokens=128, do_sample=False, pad_token_id=0)
            assert out.shape[1] == 32 + 128

    for _ in range(a.warmup):
        run()
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"torch": torch.__version__, "transformers": tf.__version__,
                      "threads": torch.get_num_threads(), "ms": times}))


if __name__ == "__main__":
    main()
