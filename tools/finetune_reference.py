"""The transformers side of Lingo's fine-tuning results: the same checkpoint, data, split and recipe
(a Lingo `configs/*.json` classification recipe) through `transformers`' `Trainer`, on the CPU.

    python3 tools/finetune_reference.py classify --model /work/models/minilm \
        --train /work/data/sst2/train.tsv --valid /work/data/sst2/valid.tsv \
        --config configs/sst2-minilm.json --threads 2 --out /work/runs/sst2-minilm-hf

Reads TSV/CSV (header with `sentence`/`text` [+ `sentence2`/`text_pair`] and `label`) or JSONL, as
Lingo does; labels sorted as Lingo sorts them. Prints one JSON object: validation accuracy, the
training wall time and the step count.
"""
import argparse
import csv
import gzip
import json
import math
import os
import time

import numpy as np
import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments)

TEXT = ["text", "sentence", "sentence1", "question"]
PAIR = ["text_pair", "sentence2", "context", "question2"]


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    name = path[:-3] if path.endswith(".gz") else path
    with opener(path, "rt", encoding="utf-8") as f:
        if name.endswith(".jsonl"):
            rows = [json.loads(l) for l in f if l.strip()]
        else:
            delim = "," if name.endswith(".csv") else "\t"
            quoting = csv.QUOTE_MINIMAL if delim == "," else csv.QUOTE_NONE
            rows = list(csv.DictReader(f, delimiter=delim, quoting=quoting))
    out = []
    for r in rows:
        r = {k.strip().lower(): v for k, v in r.items()}
        text = next(r[k] for k in TEXT if k in r)
        pair = next((r[k] for k in PAIR if k in r), None)
        out.append((str(text).strip(), None if pair is None else str(pair).strip(), str(r["label"]).strip()))
    return out


def sorted_labels(labels):
    s = sorted(set(labels))
    try:
        return sorted(s, key=float)
    except ValueError:
        return s


class Dataset(torch.utils.data.Dataset):
    def __init__(self, rows, tok, label_ids, max_length):
        texts = [r[0] for r in rows]
        pairs = [r[1] for r in rows]
        self.enc = tok(texts, pairs if pairs[0] is not None else None, truncation=True,
                       max_length=max_length)
        self.labels = [label_ids[r[2]] for r in rows]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = self.labels[i]
        return item


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=["classify"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    recipe = json.load(open(a.config))
    train_cfg = recipe["train"]
    opt = train_cfg.get("optimizer", {})
    train_rows, valid_rows = read(a.train), read(a.valid)
    labels = sorted_labels(r[2] for r in train_rows)
    label_ids = {l: i for i, l in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        a.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_ids)
    max_length = recipe.get("max_length", 128)
    train_ds = Dataset(train_rows, tok, label_ids, max_length)
    valid_ds = Dataset(valid_rows, tok, label_ids, max_length)
    batch = train_cfg.get("batch_size", 32)
    args = TrainingArguments(
        output_dir=a.out,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=64,
        gradient_accumulation_steps=train_cfg.get("grad_accum", 1),
        learning_rate=opt.get("lr", 5e-5),
        weight_decay=opt.get("weight_decay", 0.01),
        adam_beta1=opt.get("beta1", 0.9),
        adam_beta2=opt.get("beta2", 0.999),
        adam_epsilon=opt.get("eps", 1e-8),
        max_grad_norm=train_cfg.get("clip_norm", 1.0),
        num_train_epochs=recipe.get("epochs", 1),
        lr_scheduler_type=train_cfg.get("schedule", {}).get("kind", "linear"),
        warmup_steps=recipe.get("warmup_ratio", 0.0),
        seed=train_cfg.get("seed", 42),
        eval_strategy="no",
        save_strategy="no",
        logging_steps=100,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )

    def metrics(p):
        pred = np.argmax(p.predictions, axis=-1)
        return {"accuracy": float((pred == p.label_ids).mean())}

    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics)
    start = time.time()
    out = trainer.train()
    train_secs = time.time() - start
    ev = trainer.evaluate()
    result = {
        "accuracy": ev["eval_accuracy"],
        "eval_loss": ev["eval_loss"],
        "train_secs": train_secs,
        "steps": out.global_step,
        "train_loss": out.training_loss,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
