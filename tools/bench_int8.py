"""PyTorch and ONNX Runtime side of `lingo bench int8` / `lingo bench bf16`: dynamic int8
quantization and bf16 weights of the same random-weight models Lingo times, timed the same way.

- bert: BertModel(BertConfig()) (BERT-base), forward of 1 x 128 token ids, no gradients:
  PyTorch f32; PyTorch `torch.ao.quantization.quantize_dynamic` (every nn.Linear, qint8 weights);
  PyTorch bf16 (`model.to(torch.bfloat16)`: the whole model in bf16, the way PyTorch users run
  bf16 inference); ONNX Runtime f32 on the model exported to ONNX; ONNX Runtime after
  `onnxruntime.quantization.quantize_dynamic` (QInt8 weights, its defaults).
- gpt2: GPT2LMHeadModel(GPT2Config()) (124M), greedy `generate` of 128 new tokens after 32 with
  the KV cache: PyTorch f32, quantize_dynamic and bf16.

Needs torch, transformers, onnxruntime and onnx (`pip install onnxruntime onnx`); without the ONNX
packages the ONNX Runtime rows are left out with the reason.
ONNX Runtime runs with intra_op_num_threads = --threads, as PyTorch with set_num_threads.
Prints one JSON object with per-iteration milliseconds under each key.

    python3 tools/bench_int8.py --threads 2 --iters 10
"""
import argparse
import copy
import json
import os
import tempfile
import time
import warnings

import torch
import transformers as tf


def timed(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def quantized(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class LastHidden(torch.nn.Module):
    """BertModel with one tensor in and out, for the ONNX export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).last_hidden_state


def bench_onnx(model, ids, threads, iters, warmup, out):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "bert.onnx")
        int8 = os.path.join(tmp, "bert-int8.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHidden(model), (ids,), f32, input_names=["input_ids"],
                              output_names=["last_hidden_state"], dynamo=False, opset_version=17)
        quantize_dynamic(f32, int8, weight_type=QuantType.QInt8)
        for key, path in [("bert_ort_f32", f32), ("bert_ort_int8", int8)]:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            feed = {"input_ids": ids.numpy()}
            out[key] = timed(lambda: session.run(None, feed), iters, warmup)
        out["onnxruntime"] = ort.__version__


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    out = {"torch": torch.__version__, "transformers": tf.__version__,
           "threads": torch.get_num_threads()}

    bert = tf.BertModel(tf.BertConfig()).eval()
    ids = torch.randint(1000, 30000, (1, 128), generator=g)
    bert_bf16 = copy.deepcopy(bert).to(torch.bfloat16)
    for key, model in [("bert_torch_f32", bert), ("bert_torch_int8", quantized(bert)),
                       ("bert_torch_bf16", bert_bf16)]:
        def run(model=model):
            with torch.no_grad():
                model(input_ids=ids)
        out[key] = timed(run, a.iters, a.warmup)
    try:
        bench_onnx(bert, ids, a.threads, a.iters, a.warmup, out)
    except Exception as e:  # noqa: BLE001 - report, and keep PyTorch's figures
        out["onnxruntime_error"] = f"{type(e).__name__}: {e}"

    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config()).eval()
    prompt = torch.randint(1000, 50000, (1, 32), generator=g)
    gpt2_bf16 = copy.deepcopy(gpt2).to(torch.bfloat16)
    for key, model in [("gpt2_torch_f32", gpt2), ("gpt2_torch_int8", quantized(gpt2)),
                       ("gpt2_torch_bf16", gpt2_bf16)]:
        def run(model=model):
            with torch.no_grad():
                new = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                     max_new_tokens=128, min_new_tokens=128, do_sample=False,
                                     pad_token_id=0)
            assert new.shape[1] == 32 + 128
        out[key] = timed(run, max(2, a.iters // 2), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
