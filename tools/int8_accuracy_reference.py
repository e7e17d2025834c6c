"""Reference for `lingo evaluate classify --int8`: a sequence classifier's accuracy in f32 and after
PyTorch's dynamic int8 quantization (`torch.ao.quantization.quantize_dynamic`, every nn.Linear,
qint8 weights), on the same TSV (`sentence<TAB>label`) with the same truncation.

    python3 tools/int8_accuracy_reference.py runs/sst2-minilm data/sst2/valid.tsv --threads 2
"""
import argparse
import csv
import json
import warnings

import torch
import transformers as tf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(a.data, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    text_key = next(k for k in ("sentence", "text", "sentence1") if k in rows[0])
    texts = [r[text_key] for r in rows]
    tokenizer = tf.AutoTokenizer.from_pretrained(a.model)
    model = tf.AutoModelForSequenceClassification.from_pretrained(a.model).eval()
    label2id = {str(k): v for k, v in model.config.label2id.items()}
    gold = [label2id[r["label"].strip()] for r in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    out = {"torch": torch.__version__, "examples": len(texts)}
    for name, m in [("f32", model), ("int8", int8)]:
        predicted = []
        with torch.no_grad():
            for i in range(0, len(texts), a.batch_size):
                batch = tokenizer(texts[i:i + a.batch_size], truncation=True,
                                  max_length=a.max_length, padding=True, return_tensors="pt")
                predicted += m(**batch).logits.argmax(-1).tolist()
        out[f"accuracy_{name}"] = sum(p == g for p, g in zip(predicted, gold)) / len(gold)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
