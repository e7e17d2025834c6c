"""PyTorch + transformers side of `lingo bench bert` and `lingo bench gpt2`: the same random-weight
models from the default configs, timed the same way as Lingo's side.

- bert: BertModel(BertConfig()) (BERT-base: 12 layers, 768 wide, 12 heads) and a BertModel of
  all-MiniLM-L6-v2's shape (6 layers, 384 wide, 12 heads, 1536 feed-forward), forward of batch 1
  and 32 x 128 token ids, no gradients (`base_1_ms`, `base_32_ms`, `minilm_1_ms`, `minilm_32_ms`).
  When onnxruntime is installed (and not with --bf16), the same models exported with `torch.onnx`
  run in ONNX Runtime f32 too (all graph optimisations, `intra_op_num_threads` = --threads), under
  the same keys prefixed `ort_`.
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

import torch
import transformers as tf

from bench_gpt import timed


class Encoder(torch.nn.Module):
    """`model`'s last hidden state from token ids alone: the graph torch.onnx exports."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).last_hidden_state


def onnx_runtime(model, name, a, g, out):
    """Exports `model` with torch.onnx (batch and length dynamic) and times ONNX Runtime f32 at the
    same batches; skipped, with a note on stderr, when onnxruntime or the exporter is missing."""
    import os
    import sys
    import tempfile
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: no ONNX Runtime rows", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        ids = torch.randint(1000, 30000, (1, 128), generator=g)
        try:
            encoder = Encoder(model).eval()
            torch.onnx.export(encoder, (ids,), path, input_names=["input_ids"],
                              output_names=["last_hidden_state"], dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "length"}})
        except Exception as e:  # the exporter's optional dependencies (onnx, onnxscript)
            print(f"torch.onnx export failed ({e}): no ONNX Runtime rows", file=sys.stderr)
            return
        options = ort.SessionOptions()
        options.intra_op_num_threads = a.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        out["onnxruntime"] = ort.__version__
        for batch in (1, 32):
            ids = torch.randint(1000, 30000, (batch, 128), generator=g).numpy()
            out[f"ort_{name}_{batch}_ms"] = timed(lambda: session.run(None, {"input_ids": ids}), a.warmup, a.iters)


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
            out[key] = timed(fn, a.warmup, a.iters)
        print(json.dumps(out))
        return
    if a.model == "bert":
        out = {"torch": torch.__version__, "transformers": tf.__version__,
               "threads": torch.get_num_threads()}
        minilm = tf.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                               intermediate_size=1536)
        for name, cfg in [("base", tf.BertConfig()), ("minilm", minilm)]:
            model = tf.BertModel(cfg).eval()
            for batch in (1, 32):
                ids = torch.randint(1000, 30000, (batch, 128), generator=g)

                def forward():
                    with torch.no_grad(), precision:
                        model(input_ids=ids)

                out[f"{name}_{batch}_ms"] = timed(forward, a.warmup, a.iters)
            if not a.bf16:
                onnx_runtime(model, name, a, g, out)
        print(json.dumps(out))
        return
    model = tf.GPT2LMHeadModel(tf.GPT2Config()).eval()
    ids = torch.randint(1000, 50000, (1, 32), generator=g)

    def run():
        with torch.no_grad(), precision:
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=128,
                                 min_new_tokens=128, do_sample=False, pad_token_id=0)
        assert out.shape[1] == 32 + 128

    print(json.dumps({"torch": torch.__version__, "transformers": tf.__version__,
                      "threads": torch.get_num_threads(), "ms": timed(run, a.warmup, a.iters)}))


if __name__ == "__main__":
    main()
