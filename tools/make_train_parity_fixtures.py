"""Training parity fixtures: for the tiny random checkpoints of `tools/make_hf_fixtures.py` with a task
head, PyTorch computes the task loss on a fixed padded batch (dropout off: `model.eval()`), every
parameter's gradient, and the weights after one `torch.optim.AdamW` step and, from the same start,
after one `transformers` `Adafactor` step. Written beside each checkpoint as `train.safetensors`:

    input_ids, attention_mask, [token_type_ids], labels | start_positions, end_positions,
    loss, grad.<name>, adamw.<name>, adafactor.<name>

Run from the repository root after make_hf_fixtures.py:

    python3 tools/make_train_parity_fixtures.py
"""
import os

import torch
import transformers as tf
from safetensors.torch import save_file
from transformers.optimization import Adafactor

ROOT = os.path.join("crates", "lingo-models", "tests", "fixtures", "hf")
CASES = ["bert-cls", "roberta-cls", "albert-cls", "distilbert-cls", "electra-cls",
         "bert-ner", "roberta-ner", "distilbert-ner", "bert-qa", "roberta-qa", "distilbert-qa", "electra-qa"]
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def batch(model, name, g):
    config = model.config
    b, t = 3, 9
    ids = torch.randint(5, config.vocab_size, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    ids[mask == 0] = pad
    out = {"input_ids": ids, "attention_mask": mask}
    if getattr(config, "type_vocab_size", 0) and config.type_vocab_size > 1:
        types = torch.zeros(b, t, dtype=torch.long)
        types[:, 5:] = 1
        out["token_type_ids"] = types * mask
    if name.endswith("-cls"):
        out["labels"] = torch.randint(0, config.num_labels, (b,), generator=g)
    elif name.endswith("-ner"):
        labels = torch.randint(0, config.num_labels, (b, t), generator=g)
        labels[mask == 0] = -100
        labels[:, 0] = -100
        out["labels"] = labels
    else:
        out["start_positions"] = torch.tensor([2, 3, 0])
        out["end_positions"] = torch.tensor([4, 3, 1])
    return out


def record(model, out):
    """After `loss.backward()`: every parameter's gradient (zeros where nothing reads it, as for
    t5-v1_1's `shared`), the weights after one AdamW step and, from the same start, after one
    Adafactor step, into `out` as `grad.*`, `adamw.*`, `adafactor.*`."""
    params = dict(model.named_parameters())
    for k, p in params.items():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        out[f"grad.{k}"] = grad.detach().clone().contiguous()
    start = {k: p.detach().clone() for k, p in params.items()}
    torch.optim.AdamW(params.values(), **ADAMW).step()
    for k, p in params.items():
        out[f"adamw.{k}"] = p.detach().clone().contiguous()
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(start[k])
    Adafactor(params.values(), lr=None, relative_step=True, scale_parameter=True).step()
    for k, p in params.items():
        out[f"adafactor.{k}"] = p.detach().clone().contiguous()
    return len(params)


def gpt2():
    """The causal-LM loss of GPT2LMHeadModel on an unpadded batch (labels = inputs, shifted inside)."""
    folder = os.path.join(ROOT, "gpt2")
    g = torch.Generator().manual_seed(7)
    model = tf.GPT2LMHeadModel.from_pretrained(folder)
    model.eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 10), generator=g)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    out = {"input_ids": ids, "loss": loss.detach().reshape(1)}
    n = record(model, out)
    save_file(out, os.path.join(folder, "train.safetensors"))
    print("gpt2", f"loss {loss.item():.5f}", n, "parameters")


def seq2seq(name, cls):
    """The sequence-to-sequence loss with `labels` (decoder inputs: the labels shifted right behind
    the decoder start token), as transformers trains T5, BART and Marian."""
    folder = os.path.join(ROOT, name)
    g = torch.Generator().manual_seed(7)
    model = cls.from_pretrained(folder)
    model.eval()
    vocab = model.config.vocab_size
    ids = torch.randint(5, vocab, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    ids[mask == 0] = model.config.pad_token_id
    labels = torch.randint(5, vocab, (2, 5), generator=g)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    start = model.config.decoder_start_token_id
    decoder_ids = torch.cat([torch.full((2, 1), start), labels[:, :-1]], dim=1)
    res = {"input_ids": ids, "attention_mask": mask, "labels": labels, "decoder_input_ids": decoder_ids,
           "loss": out.loss.detach().reshape(1)}
    n = record(model, res)
    save_file(res, os.path.join(folder, "train.safetensors"))
    print(name, f"loss {out.loss.item():.5f}", n, "parameters")


def main():
    gpt2()
    seq2seq("t5", tf.T5ForConditionalGeneration)
    seq2seq("t5-v1_1", tf.T5ForConditionalGeneration)
    seq2seq("bart", tf.BartForConditionalGeneration)
    seq2seq("marian", tf.MarianMTModel)
    for name in CASES:
        folder = os.path.join(ROOT, name)
        g = torch.Generator().manual_seed(7)
        model = tf.AutoModelForSequenceClassification if name.endswith("-cls") else (
            tf.AutoModelForTokenClassification if name.endswith("-ner") else tf.AutoModelForQuestionAnswering)
        model = model.from_pretrained(folder)
        model.eval()
        inputs = batch(model, name, g)
        loss = model(**inputs).loss
        loss.backward()
        out = {k: v.contiguous() for k, v in inputs.items()}
        out["loss"] = loss.detach().reshape(1)
        n = record(model, out)
        save_file(out, os.path.join(folder, "train.safetensors"))
        print(name, f"loss {loss.item():.5f}", n, "parameters")


if __name__ == "__main__":
    main()
