"""transformers side of `lingo bench load`: loads a model folder with `from_pretrained` (safetensors,
float32 as stored) in this fresh process and prints the resident memory just before, the peak
during the load and after a first forward pass of 8 tokens (from /proc/self/status, the peak
reset first) and the load's time, as JSON. transformers leaves parameters as views of the
memory-mapped file, so the load alone reads only part of it; the forward pass reads the rest.

    python3 tools/bench_load.py /path/to/model-folder
"""
import json
import sys
import time

import torch  # noqa: F401  (imported before the baseline, as any user's script has it)
import transformers as tf


def status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/self/status")


def main():
    folder = sys.argv[1]
    config = tf.AutoConfig.from_pretrained(folder)
    cls = tf.AutoModelForCausalLM if config.model_type == "gpt2" else tf.AutoModel
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = status_mib("VmRSS:")
    t0 = time.perf_counter()
    model = cls.from_pretrained(folder, dtype=torch.float32)
    seconds = time.perf_counter() - t0
    peak = status_mib("VmHWM:")
    with torch.no_grad():
        model(input_ids=torch.tensor([[101, 2023, 2003, 1037, 3231, 1012, 2009, 102]]))
    print(json.dumps({"before_mib": before, "peak_mib": peak,
                      "first_forward_peak_mib": status_mib("VmHWM:"), "seconds": seconds}))


if __name__ == "__main__":
    main()
