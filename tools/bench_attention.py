"""PyTorch's side of `lingo bench attention`: causal self-attention over long sequences.

For each sequence length it times, in a fresh subprocess (so peak memory is the measurement's own):
  - `sdpa`:        torch.nn.functional.scaled_dot_product_attention(is_causal=True) — dense, O(n²) work,
                   PyTorch's fused CPU (flash) kernel;
  - `sdpa_window`: the same with a boolean band mask (each query sees the last --window keys) — how a
                   PyTorch user gets sliding-window attention without a custom kernel: O(n²) work and mask.
Each reports forward and forward+backward milliseconds (median of --iters after a warm-up) and the peak
resident memory the forward+backward added (VmHWM after minus VmRSS before, MB). Prints one JSON line.
"""
import argparse
import json
import subprocess
import sys
import time


def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def one(kind, t, heads, dim, window, iters, threads):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, heads, t, dim, requires_grad=True) for _ in range(3))
    mask = None
    if kind == "sdpa_window":
        i = torch.arange(t)
        mask = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
    base = rss("VmRSS")

    def fwd():
        with torch.no_grad():
            if mask is None:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def fwd_bwd():
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y.sum().backward()

    def timed(f):
        f()
        times = []
        for _ in range(iters):
            s = time.perf_counter()
            f()
            times.append((time.perf_counter() - s) * 1e3)
        times.sort()
        return times[len(times) // 2]

    fwd_ms = timed(fwd)
    fwd_bwd_ms = timed(fwd_bwd)
    return {"forward_ms": fwd_ms, "forward_backward_ms": fwd_bwd_ms, "peak_mb": rss("VmHWM") - base}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--one", default=None)
    a = ap.parse_args()
    if a.one:
        kind, t = a.one.split(":")
        t = int(t)
        iters = a.iters if t <= 4096 else 1
        print(json.dumps(one(kind, t, a.heads, a.dim, a.window, iters, a.threads)))
        return
    import torch
    results = {"torch": torch.__version__, "threads": a.threads}
    for kind in ["sdpa", "sdpa_window"]:
        for t in [int(x) for x in a.lengths.split(",")]:
            out = subprocess.run([sys.executable, __file__, "--one", f"{kind}:{t}", "--heads", str(a.heads),
                                  "--dim", str(a.dim), "--window", str(a.window), "--threads",
                                  str(a.threads), "--iters", str(a.iters)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                results[f"{kind}:{t}"] = {"error": out.stderr.strip().splitlines()[-1:]}
            else:
                results[f"{kind}:{t}"] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
