"""The transformers side of Lingo's fine-tuning results: the same checkpoint, data, split and recipe
(a Lingo `configs/*.json` recipe) through `transformers`' `Trainer`, on the CPU.

    python3 tools/finetune_reference.py classify --model /work/models/minilm \
        --train /work/data/sst2/train.tsv --valid /work/data/sst2/valid.tsv \
        --config configs/sst2-minilm.json --threads 2 --out /work/runs/sst2-minilm-hf
    python3 tools/finetune_reference.py ner --model /work/models/minilm \
        --train ../shared/data/conll2003/train.txt.gz --valid ../shared/data/conll2003/valid.txt.gz \
        --config configs/conll2003-minilm.json --out /work/runs/conll2003-minilm-hf
    python3 tools/finetune_reference.py qa --model /work/models/minilm \
        --train /work/data/squad/train.json --valid /work/data/squad/valid.json \
        --config configs/squad-minilm.json --out /work/runs/squad-minilm-hf

classify reads TSV/CSV (header with `sentence`/`text` [+ `sentence2`/`text_pair`] and `label`) or
JSONL, as Lingo does; labels sorted as Lingo sorts them. ner reads CoNLL column files (word first,
tag last) and labels each word's first sub-token, as transformers' token-classification example
does. qa reads SQuAD v1.1 JSON and follows transformers' `run_qa.py` (windows of `max_length` with
`doc_stride` overlap, best span of at most `max_answer_length` tokens over the 20 best starts and
ends of every window). Prints one JSON object: the validation metrics (`accuracy`; seqeval `f1`;
SQuAD `exact_match`/`f1`), the training wall time and the step count.
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
from transformers import (AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                          AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                          DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator)

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


def read_conll(path):
    opener = gzip.open if path.endswith(".gz") else open
    sentences, words, tags = [], [], []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in list(f) + [""]:
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            words.append(cols[0])
            tags.append(cols[-1])
    return sentences


class TaggedDataset(torch.utils.data.Dataset):
    def __init__(self, sentences, tok, label_ids, max_length):
        self.enc = tok([w for w, _ in sentences], is_split_into_words=True, truncation=True,
                       max_length=max_length)
        self.labels, self.tags = [], []
        for i, (_, tags) in enumerate(sentences):
            previous, row, kept = None, [], []
            for w in self.enc.word_ids(i):
                if w is not None and w != previous:
                    row.append(label_ids[tags[w]])
                    kept.append(tags[w])
                else:
                    row.append(-100)
                previous = w
            self.labels.append(row)
            self.tags.append(kept)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = self.labels[i]
        return item


def read_squad(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    out = []
    for article in data["data"]:
        for p in article["paragraphs"]:
            for q in p["qas"]:
                out.append({"id": q["id"], "question": q["question"].lstrip(), "context": p["context"],
                            "answers": q["answers"]})
    return data, out


class QaTrain(torch.utils.data.Dataset):
    """run_qa.py's prepare_train_features."""

    def __init__(self, rows, tok, max_length, stride):
        enc = qa_windows(rows, tok, max_length, stride)
        self.items = []
        for i, offsets in enumerate(enc["offset_mapping"]):
            ids = enc["input_ids"][i]
            seq = enc.sequence_ids(i)
            row = rows[enc["overflow_to_sample_mapping"][i]]
            answer = row["answers"][0]
            start_char = answer["answer_start"]
            end_char = start_char + len(answer["text"])
            first = seq.index(1)
            last = len(seq) - 1 - seq[::-1].index(1)
            if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
                start = end = 0
            else:
                start = first
                while start <= last and offsets[start][0] <= start_char:
                    start += 1
                start -= 1
                end = last
                while end >= first and offsets[end][1] >= end_char:
                    end -= 1
                end += 1
            item = {k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
            item["start_positions"], item["end_positions"] = start, end
            self.items.append(item)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def qa_windows(rows, tok, max_length, stride):
    return tok([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
               max_length=max_length, stride=stride, return_overflowing_tokens=True,
               return_offsets_mapping=True)


def best_answers(rows, enc, start_logits, end_logits, max_answer, n_best=20):
    """run_qa.py's postprocess_qa_predictions: per question, the best `start + end` logit score over
    the `n_best` best starts and ends of each of its windows, spans inside the context only."""
    best = {}
    for i in range(len(enc["input_ids"])):
        row = rows[enc["overflow_to_sample_mapping"][i]]
        seq = enc.sequence_ids(i)
        offsets = [o if seq[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])]
        s_log = np.asarray(start_logits[i])[: len(offsets)]
        e_log = np.asarray(end_logits[i])[: len(offsets)]
        for s in np.argsort(s_log)[-1:-n_best - 1:-1]:
            for e in np.argsort(e_log)[-1:-n_best - 1:-1]:
                if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer:
                    continue
                score = float(s_log[s] + e_log[e])
                if row["id"] not in best or score > best[row["id"]][0]:
                    best[row["id"]] = (score, row["context"][offsets[s][0]:offsets[e][1]])
    return {r["id"]: best.get(r["id"], (0, ""))[1] for r in rows}


def qa_predictions(rows, tok, model, max_length, stride, max_answer, batch=64):
    enc = qa_windows(rows, tok, max_length, stride)
    starts, ends = [], []
    model.eval()
    n = len(enc["input_ids"])
    with torch.no_grad():
        for b in range(0, n, batch):
            feats = [{k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
                     for i in range(b, min(n, b + batch))]
            out = model(**DataCollatorWithPadding(tok)(feats))
            starts.extend(out.start_logits.numpy())
            ends.extend(out.end_logits.numpy())
    return best_answers(rows, enc, starts, ends, max_answer)


def squad_scores(data, predictions):
    import collections
    import re
    import string

    def norm(s):
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    def f1(p, t):
        p, t = norm(p).split(), norm(t).split()
        common = collections.Counter(p) & collections.Counter(t)
        same = sum(common.values())
        if same == 0:
            return 0.0
        precision, recall = same / len(p), same / len(t)
        return 2 * precision * recall / (precision + recall)

    em = f = n = 0
    for article in data["data"]:
        for p in article["paragraphs"]:
            for q in p["qas"]:
                truths = [x["text"] for x in q["answers"]]
                pred = predictions.get(q["id"], "")
                em += max(float(norm(pred) == norm(t)) for t in truths)
                f += max(f1(pred, t) for t in truths)
                n += 1
    return {"exact_match": 100 * em / n, "f1": 100 * f / n}


def load(auto, a, **kwargs):
    """The pre-trained model, or with `--random-init` the same architecture initialised afresh."""
    if not a.random_init:
        return auto.from_pretrained(a.model, **kwargs)
    torch.manual_seed(json.load(open(a.config))["train"].get("seed", 42))
    return auto.from_config(AutoConfig.from_pretrained(a.model, **kwargs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=["classify", "ner", "qa"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--random-init", action="store_true",
                    help="the checkpoint's architecture with fresh weights (as `lingo finetune --random-init`)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    recipe = json.load(open(a.config))
    train_cfg = recipe["train"]
    opt = train_cfg.get("optimizer", {})
    os.makedirs(a.out, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(a.model)
    max_length = recipe.get("max_length", 128)
    if a.task == "classify":
        train_rows, valid_rows = read(a.train), read(a.valid)
        labels = sorted_labels(r[2] for r in train_rows)
        label_ids = {l: i for i, l in enumerate(labels)}
        model = load(AutoModelForSequenceClassification, a, num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id=label_ids)
        train_ds = Dataset(train_rows, tok, label_ids, max_length)
        valid_ds = Dataset(valid_rows, tok, label_ids, max_length)
        collator = DataCollatorWithPadding(tok)
    elif a.task == "ner":
        train_rows, valid_rows = read_conll(a.train), read_conll(a.valid)
        labels = sorted({t for _, tags in train_rows for t in tags})
        label_ids = {l: i for i, l in enumerate(labels)}
        model = load(AutoModelForTokenClassification, a, num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id=label_ids)
        train_ds = TaggedDataset(train_rows, tok, label_ids, max_length)
        valid_ds = TaggedDataset(valid_rows, tok, label_ids, max_length)
        collator = DataCollatorForTokenClassification(tok)
    else:
        _, train_rows = read_squad(a.train)
        valid_data, valid_rows = read_squad(a.valid)
        model = load(AutoModelForQuestionAnswering, a)
        stride = recipe.get("doc_stride", 128)
        train_ds = QaTrain(train_rows, tok, max_length, stride)
        valid_ds = None
        collator = DataCollatorWithPadding(tok)
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
        if a.task == "classify":
            return {"accuracy": float((pred == p.label_ids).mean())}
        from seqeval.metrics import f1_score, precision_score, recall_score
        predicted = [[labels[x] for x, y in zip(pr, gold) if y != -100] for pr, gold in zip(pred, p.label_ids)]
        return {"f1": f1_score(valid_ds.tags, predicted), "precision": precision_score(valid_ds.tags, predicted),
                "recall": recall_score(valid_ds.tags, predicted)}

    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds,
                      data_collator=collator, compute_metrics=metrics)
    start = time.time()
    out = trainer.train()
    train_secs = time.time() - start
    if a.task == "qa":
        preds = qa_predictions(valid_rows, tok, model, max_length, recipe.get("doc_stride", 128),
                               recipe.get("max_answer_length", 30))
        scores = squad_scores(valid_data, preds)
        with open(os.path.join(a.out, "predictions.json"), "w") as f:
            json.dump(preds, f)
    else:
        ev = trainer.evaluate()
        scores = {k[len("eval_"):]: v for k, v in ev.items() if k.startswith("eval_") and "runtime" not in k
                  and "per_second" not in k}
    result = {
        **scores,
        "train_secs": train_secs,
        "steps": out.global_step,
        "train_loss": out.training_loss,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
    }
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
