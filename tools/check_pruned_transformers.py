"""Does `transformers` load a folder `lingo prune --method heads|neurons` wrote, and agree with Lingo?

Head pruning is stored as `transformers` 4.x stores it (smaller q/k/v/output shapes, `pruned_heads` in
config.json); `transformers` 5 no longer prunes heads, so run this under a 4.x release:

    /tmp/tf4/bin/python tools/check_pruned_transformers.py PRUNED_DIR DATA.tsv [--lingo target/release/lingo]

It classifies DATA.tsv (a `sentence<TAB>label` file, e.g. SST-2's held-out split) with the folder in
`transformers`, prints its accuracy, and compares the label probabilities of the first --compare
sentences with `lingo classify --json` on the same folder (largest absolute difference).
"""
import argparse
import csv
import json
import subprocess

import torch
import transformers as tf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--lingo", default="target/release/lingo")
    ap.add_argument("--compare", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(2)
    tok = tf.AutoTokenizer.from_pretrained(a.model)
    model = tf.AutoModelForSequenceClassification.from_pretrained(a.model).eval()
    with open(a.data, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    text_key = [k for k in rows[0] if k != "label"][0]
    texts, labels = [r[text_key] for r in rows], [r["label"] for r in rows]
    id2label = model.config.id2label
    probs = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            enc = tok(texts[i:i + 64], padding=True, truncation=True, max_length=a.max_length,
                      return_tensors="pt")
            probs.append(model(**enc).logits.softmax(-1))
    probs = torch.cat(probs)
    predicted = [id2label[int(i)] for i in probs.argmax(-1)]
    accuracy = sum(p == l for p, l in zip(predicted, labels)) / len(labels)
    print(f"transformers {tf.__version__}: pruned_heads {model.config.pruned_heads}, "
          f"intermediate_size {model.config.intermediate_size}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    print(f"transformers accuracy on {len(labels)} examples: {accuracy:.4f}")
    out = subprocess.run([a.lingo, "classify", "--model", a.model, "--json", "--", *texts[:a.compare]],
                         capture_output=True, text=True, check=True).stdout
    decoder, pos, lingo = json.JSONDecoder(), 0, []
    while pos < len(out):
        while pos < len(out) and out[pos].isspace():
            pos += 1
        if pos >= len(out):
            break
        obj, pos = decoder.raw_decode(out, pos)
        lingo.append({d["label"]: d["score"] for d in obj})
    label2id = model.config.label2id
    diff = max(abs(scores[label] - float(probs[i, label2id[label]]))
               for i, scores in enumerate(lingo) for label in scores)
    print(f"largest probability difference from Lingo on {len(lingo)} sentences: {diff:.2e}")


if __name__ == "__main__":
    main()
