"""Head-pruned checkpoints made by `transformers` itself, for Lingo's pruning parity tests.

`transformers` 5 dropped head pruning, so this runs under a 4.x release (4.46 here), e.g.

    python3 -m venv --system-site-packages /tmp/tf4 && /tmp/tf4/bin/pip install transformers==4.46.3
    /tmp/tf4/bin/python tools/make_pruning_fixtures.py

For the tiny `bert-cls` and `distilbert-cls` fixtures (tools/make_hf_fixtures.py) it calls
`model.prune_heads(HEADS)`, saves the result with `save_pretrained` (smaller q/k/v/output shapes,
`pruned_heads` in config.json) as `<name>-pruned`, and writes `expected.safetensors` beside it in
make_hf_fixtures.py's layout (inputs, hidden states, attention maps with each layer's remaining
heads, logits), from the same inputs as the unpruned fixture's.
"""
import os
import shutil

import torch
import transformers as tf
from safetensors.torch import load_file, save_file

FIXTURES = os.path.join("crates", "lingo-models", "tests", "fixtures", "hf")
# Layer -> heads to remove (of 4): one layer loses two, the other one.
HEADS = {0: [1, 3], 1: [2]}


def main():
    assert tf.__version__.startswith("4."), "head pruning needs transformers 4.x"
    for name, cls in [("bert-cls", tf.BertForSequenceClassification),
                      ("distilbert-cls", tf.DistilBertForSequenceClassification)]:
        src = os.path.join(FIXTURES, name)
        out = src + "-pruned"
        model = cls.from_pretrained(src, attn_implementation="eager").eval()
        model.prune_heads(HEADS)
        model.save_pretrained(out, safe_serialization=True)
        for f in ["tokenizer.json", "tokenizer_config.json"]:
            if os.path.exists(os.path.join(src, f)):
                shutil.copy(os.path.join(src, f), out)
        reference = load_file(os.path.join(src, "expected.safetensors"))
        tensors = {}
        for case in ["single", "batch"]:
            d = {k: reference[f"{case}.{k}"] for k in ["input_ids", "attention_mask", "token_type_ids"]
                 if f"{case}.{k}" in reference}
            tensors.update({f"{case}.{k}": v for k, v in d.items()})
            with torch.no_grad():
                o = model(**d, output_hidden_states=True, output_attentions=True)
            for i, h in enumerate(o.hidden_states):
                tensors[f"{case}.hidden.{i}"] = h
            for i, a in enumerate(o.attentions):
                tensors[f"{case}.attention.{i}"] = a
            tensors[f"{case}.output"] = o.logits
        save_file({k: v.contiguous() for k, v in tensors.items()},
                  os.path.join(out, "expected.safetensors"))
        print("wrote", out)


if __name__ == "__main__":
    main()
