"""Writes tests/fixtures/metrics/*.json: inputs and what the reference packages say about them.
Lingo's metrics (crates/lingo-eval) are tested against these files.

- classification.json: scikit-learn (accuracy, precision/recall/F1 binary/macro/micro/weighted, MCC,
  confusion matrix, ROC-AUC, log loss), binary and multi-class cases, and regression (MSE/MAE/RMSE/R²).
- seqeval.json: seqeval entity-level precision/recall/F1, default (conlleval-like) and strict IOB2 modes,
  overall (micro) and per entity type.
- squad.json: the official SQuAD v1.1 evaluation (its normalisation, exact match and F1, 0–100).
- rouge.json: rouge-score ROUGE-1/2/L/Lsum F-measures, with and without the Porter stemmer, and the
  stems NLTK's PorterStemmer gives a list of words (rouge-score's stemmer).

    pip install scikit-learn seqeval rouge-score nltk && python3 tools/make_metric_fixtures.py
"""
import collections
import json
import os
import random
import re
import string

import numpy as np
import sklearn.metrics as skm
from nltk.stem import porter
from rouge_score import rouge_scorer
from seqeval.metrics import classification_report as seq_report
from seqeval.metrics import f1_score as seq_f1
from seqeval.metrics import precision_score as seq_precision
from seqeval.metrics import recall_score as seq_recall
from seqeval.scheme import IOB2

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "metrics")
rng = random.Random(7)


def classification_case(name, y_true, y_pred, probs=None):
    labels = sorted(set(y_true) | set(y_pred))
    binary = set(labels) <= {0, 1} and isinstance(labels[0], int)
    case = {
        "name": name,
        "references": [str(y) for y in y_true],
        "predictions": [str(y) for y in y_pred],
        "labels": [str(l) for l in labels],
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "mcc": skm.matthews_corrcoef(y_true, y_pred),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    for avg in ["macro", "micro", "weighted"]:
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average=avg, zero_division=0
        )
        case[f"{avg}_precision"], case[f"{avg}_recall"], case[f"{avg}_f1"] = p, r, f
    if binary:
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average="binary", pos_label=1, zero_division=0
        )
        case["precision"], case["recall"], case["f1"] = p, r, f
    if probs is not None:
        case["probabilities"] = probs.tolist()
        case["log_loss"] = skm.log_loss(y_true, probs, labels=labels)
        if binary:
            case["roc_auc"] = skm.roc_auc_score(y_true, probs[:, 1])
        else:
            case["roc_auc"] = skm.roc_auc_score(
                y_true, probs, multi_class="ovr", average="macro", labels=labels
            )
    return case


def random_probs(y_true, k, skill):
    rows = []
    for y in y_true:
        logits = np.array([rng.gauss(0, 1) for _ in range(k)])
        logits[y] += skill
        e = np.exp(logits - logits.max())
        rows.append(e / e.sum())
    return np.array(rows)


def classification():
    cases = []
    y = [rng.randint(0, 1) for _ in range(60)]
    probs = random_probs(y, 2, 1.2)
    pred = [int(p[1] > 0.5) for p in probs]
    cases.append(classification_case("binary", y, pred, probs))
    # Ties in the scores (ROC-AUC's trapezoids) and a perfect-precision predictor.
    y = [0, 0, 1, 1, 0, 1, 1, 0, 1, 0]
    p1 = np.array([0.1, 0.4, 0.4, 0.8, 0.4, 0.9, 0.2, 0.1, 0.8, 0.3])
    probs = np.stack([1 - p1, p1], 1)
    cases.append(classification_case("binary_ties", y, [int(p > 0.5) for p in p1], probs))
    y = [rng.randint(0, 3) for _ in range(80)]
    probs = random_probs(y, 4, 1.5)
    pred = [int(np.argmax(p)) for p in probs]
    cases.append(classification_case("multiclass", y, pred, probs))
    # String labels, one class never predicted (zero division), one never true.
    names = ["negative", "neutral", "positive"]
    y = [rng.choice(names[:2] + ["positive"] * 2) for _ in range(40)]
    pred = [rng.choice(["negative", "positive", "positive", "mixed"]) for _ in range(40)]
    cases.append(classification_case("strings", y, pred))
    # Regression (STS-B style scores).
    t = [round(rng.uniform(0, 5), 2) for _ in range(50)]
    p = [round(v + rng.gauss(0, 0.7), 2) for v in t]
    regression = {
        "references": t,
        "predictions": p,
        "mse": skm.mean_squared_error(t, p),
        "mae": skm.mean_absolute_error(t, p),
        "rmse": float(np.sqrt(skm.mean_squared_error(t, p))),
        "r2": skm.r2_score(t, p),
    }
    return {"cases": cases, "regression": regression}


TYPES = ["PER", "ORG", "LOC", "MISC"]


def random_tags(n, noisy):
    tags, prev = [], "O"
    for _ in range(n):
        r = rng.random()
        if r < 0.55:
            tag = "O"
        elif r < 0.75 or prev == "O":
            tag = "B-" + rng.choice(TYPES)
        else:
            kind = prev[2:] if not noisy or rng.random() < 0.7 else rng.choice(TYPES)
            tag = "I-" + kind
        if noisy and rng.random() < 0.08:
            tag = "I-" + rng.choice(TYPES)  # an I- that starts nothing in strict IOB2
        tags.append(tag)
        prev = tag
    return tags


def perturb(tags):
    out = list(tags)
    for i in range(len(out)):
        r = rng.random()
        if r < 0.07:
            out[i] = "O"
        elif r < 0.14:
            out[i] = "B-" + rng.choice(TYPES)
        elif r < 0.18 and i > 0 and out[i - 1] != "O":
            out[i] = "I-" + out[i - 1][2:]
        elif r < 0.21:
            out[i] = "I-" + rng.choice(TYPES)
    return out


def seqeval_fixture():
    refs = [random_tags(rng.randint(1, 25), noisy=False) for _ in range(40)]
    preds = [perturb(t) for t in refs]
    case = {"references": refs, "predictions": preds}
    for mode, kw in [("default", {}), ("strict", {"mode": "strict", "scheme": IOB2})]:
        rep = seq_report(refs, preds, output_dict=True, zero_division=0, **kw)
        case[mode] = {
            "precision": float(seq_precision(refs, preds, zero_division=0, **kw)),
            "recall": float(seq_recall(refs, preds, zero_division=0, **kw)),
            "f1": float(seq_f1(refs, preds, zero_division=0, **kw)),
            "per_type": {
                k: {m: float(v[m]) for m in ["precision", "recall", "f1-score", "support"]}
                for k, v in rep.items()
                if k in TYPES
            },
        }
    return case


# The official SQuAD v1.1 evaluation script's functions, verbatim in behaviour.
def normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_f1(prediction, ground_truth):
    p, g = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0
    precision, recall = same / len(p), same / len(g)
    return (2 * precision * recall) / (precision + recall)


def squad_em(prediction, ground_truth):
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def squad_fixture():
    contexts = [
        ("The Grand Canal of the city was dug in 1602 by the Dutch engineers, who also built the "
         "An-Lo bridge across it.",
         [("When was the canal dug?", ["1602", "in 1602", "1602"], "in 1602 by"),
          ("Who dug the canal?", ["the Dutch engineers", "Dutch engineers"], "Dutch"),
          ("What crosses the canal?", ["the An-Lo bridge", "An-Lo bridge"], "The An Lo Bridge!")]),
        ("Marie read three books: a novel, an atlas and the 'Book of Days' (1864 edition).",
         [("How many books?", ["three"], "3"),
          ("Which edition?", ["1864 edition", "the 1864 edition"], "(1864 edition)"),
          ("What did she read?", ["a novel, an atlas and the 'Book of Days'"], "a novel an atlas"),
          ("What atlas?", ["an atlas"], "")]),
    ]
    data, predictions, exact, f1 = [], {}, [], []
    qid = 0
    for ctx, qas in contexts:
        paragraph = {"context": ctx, "qas": []}
        for question, answers, pred in qas:
            qid += 1
            key = f"q{qid}"
            paragraph["qas"].append({
                "id": key,
                "question": question,
                "answers": [{"text": a, "answer_start": max(ctx.find(a), 0)} for a in answers],
            })
            predictions[key] = pred
            exact.append(max(squad_em(pred, a) for a in answers))
            f1.append(max(squad_f1(pred, a) for a in answers))
        data.append({"title": "synthetic", "paragraphs": [paragraph]})
    normalized = {s: normalize_answer(s) for s in
                  ["The  Cat's  hat!", "an apple a day", "Theory of the Atom", "U.S.-led (2001)"]}
    return {
        "dataset": {"version": "1.1", "data": data},
        "predictions": predictions,
        "exact_match": 100.0 * sum(exact) / len(exact),
        "f1": 100.0 * sum(f1) / len(f1),
        "normalized": normalized,
    }


WORDS = """caresses flies dies mules denied died agreed owned humbled sized meeting stating siezing itemization
sensational traditional reference colonizer plotted happy sky skies dying lying tying news innings inning
outings canning proceed exceeded succeeding generalizations oscillators relational conditional rational
valency hesitancy digitizer conformably radically differently vilely analogously vietnamization predication
operator feudalism decisiveness hopefulness callousness formality sensitivity sensibility triplicate formative
formalize electriciti electrical hopeful goodness revival allowance inference airliner gyroscopic adjustable
defensible irritant replacement adjustment dependent adoption homologou communism activate angulariti
homologous effective bowdlerize probate rate cease controll roll running runner ran happily happiness
cats ponies ties caress cats feed agreed disabled matting mating meeting milling messing meetings
filing failing hopping hoping tanned falling hissing fizzed conflated troubled sized plastered bled motoring
sing conflating troubling sizing fizzing filing bowdlerizing logically archaeology analogies biology
dogs children summarization summaries summarized translations translating models modelling fine tuned
tuning tokenizers tokenization embeddings attention attentive quickly quick yearly beautifully generously
argued arguing argument arguments organization organizational international nationally national relate
related relativity relatively relations y yy ay by ly abyss enjoying enjoyed toy toys flying flyer""".split()

SUMMARIES = [
    ("The cat sat on the mat.\nIt was happy.", "A cat was sitting on a mat.\nThe cat seemed happy."),
    ("Police arrested two men after the robbery on Tuesday.",
     "Two men were arrested by police following Tuesday's robbery."),
    ("Generalizations about running models are tricky; runners disagree.",
     "Runners disagree about generalizing the running of models."),
    ("Amanda baked cookies and will bring Jerry some tomorrow.",
     "Amanda baked cookies. She will bring some to Jerry tomorrow."),
    ("", "Nothing was predicted."),
    ("The the the the.", "The cat."),
    ("Organizational changes: 3 teams merged, 12 people moved.\nThe CEO approved it.\nStaff were told.",
     "Three teams merged in an organizational change.\nTwelve people moved."),
    ("Sunny weather is expected across the region through the weekend, forecasters said.",
     "Forecasters expect sunny weather across the region for the weekend."),
]


def rouge_fixture():
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    cases = []
    for stem in [False, True]:
        scorer = rouge_scorer.RougeScorer(types, use_stemmer=stem)
        for pred, ref in SUMMARIES:
            s = scorer.score(ref, pred)
            cases.append({
                "prediction": pred,
                "reference": ref,
                "stem": stem,
                **{t: {"precision": s[t].precision, "recall": s[t].recall, "fmeasure": s[t].fmeasure}
                   for t in types},
            })
    stemmer = porter.PorterStemmer()
    return {"cases": cases, "stems": {w: stemmer.stem(w) for w in WORDS}}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, make in [("classification", classification), ("seqeval", seqeval_fixture),
                       ("squad", squad_fixture), ("rouge", rouge_fixture)]:
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(make(), f, indent=1, ensure_ascii=False)
            f.write("\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
