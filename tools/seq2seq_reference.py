"""The transformers side of Lingo's sequence-to-sequence fine-tuning result, and the starting
checkpoint both sides fine-tune.

No pretrained encoder-decoder is reachable from this machine, so the comparison starts both
libraries from the same randomly initialised BART-architecture checkpoint with a byte-level BPE
tokenizer trained on the training pairs:

    python3 tools/seq2seq_reference.py init --source ../shared/data/multi30k/train.en.gz \
        --target ../shared/data/multi30k/train.de.gz --config configs/multi30k-bart.json \
        --out /work/models/bart-multi30k-init     # BART, 3+3 layers of 256, 4 heads, 8,000 BPE tokens

then trains it with `Seq2SeqTrainer` on the same pairs with the same recipe (a Lingo
`configs/*.json` fine-tuning recipe: AdamW, schedule, warm-up ratio, batch, epochs, label
smoothing, dropout as the checkpoint sets it, source and target lengths, beam) and reports
sacreBLEU on a test split, decoded with the recipe's beam:

    python3 tools/seq2seq_reference.py train --model /work/models/bart-multi30k-init \
        --train ../shared/data/multi30k/train.en.gz --train-target ../shared/data/multi30k/train.de.gz \
        --test ../shared/data/multi30k/test_2016_flickr.en.gz \
        --test-target ../shared/data/multi30k/test_2016_flickr.de.gz \
        --config configs/multi30k-bart.json --out /work/runs/m30k-bart-hf

Prints one JSON object: test BLEU, the training wall time and the step count. `decode` scores any
folder (one Lingo wrote, say) the same way, with transformers' `generate`:

    python3 tools/seq2seq_reference.py decode --model /work/runs/m30k-bart-lingo \
        --test ../shared/data/multi30k/test_2016_flickr.en.gz \
        --test-target ../shared/data/multi30k/test_2016_flickr.de.gz --config configs/multi30k-bart.json \
        --out /tmp/decoded
"""
import argparse
import gzip
import json
import os
import time


def lines(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [l.rstrip("\n").rstrip("\r") for l in f]


def init(a):
    import torch
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig, PreTrainedTokenizerFast

    recipe = json.load(open(a.config))
    text = lines(a.source) + lines(a.target)
    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(text, vocab_size=a.vocab_size, min_frequency=2, special_tokens=specials)
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                  unk_token="<unk>", mask_token="<mask>")
    config = BartConfig(
        vocab_size=len(tok), d_model=a.d_model, encoder_layers=a.layers, decoder_layers=a.layers,
        encoder_attention_heads=a.heads, decoder_attention_heads=a.heads, encoder_ffn_dim=a.ffn,
        decoder_ffn_dim=a.ffn, max_position_embeddings=a.positions, dropout=a.dropout, attention_dropout=0.0,
        activation_dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        forced_eos_token_id=2)
    torch.manual_seed(a.seed)
    model = BartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=2, bos_token_id=0, eos_token_id=2, pad_token_id=1, forced_eos_token_id=2,
        num_beams=recipe["beam"]["beam_size"], max_length=recipe["beam"]["max_length"] + 1)
    model.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tok)}))


def train(a):
    import torch
    from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer,
                              Seq2SeqTrainingArguments)

    torch.set_num_threads(a.threads)
    recipe = json.load(open(a.config))
    cfg = recipe["train"]
    opt = cfg.get("optimizer", {})
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(a.model)
    prefix = recipe.get("source_prefix", "")
    max_source, max_target = recipe.get("max_length", 128), recipe.get("max_target_length", 128)
    sources, targets = lines(a.train), lines(a.train_target)

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, src, tgt):
            self.enc = tok([prefix + s for s in src], text_target=tgt, max_length=max_source, truncation=True)
            # Targets cut to max_target tokens, as Lingo cuts them (the end token kept).
            self.enc["labels"] = [l if len(l) <= max_target else l[:max_target - 1] + [l[-1]] for l in self.enc["labels"]]

        def __len__(self):
            return len(self.enc["input_ids"])

        def __getitem__(self, i):
            return {k: v[i] for k, v in self.enc.items()}

    train_ds = Pairs(sources, targets)
    batch = cfg.get("batch_size", 32)
    steps_per_epoch = -(-len(train_ds) // (batch * cfg.get("grad_accum", 1)))
    steps = recipe.get("epochs", 1) * steps_per_epoch
    args = Seq2SeqTrainingArguments(
        output_dir=a.out, per_device_train_batch_size=batch, gradient_accumulation_steps=cfg.get("grad_accum", 1),
        learning_rate=opt.get("lr", 5e-5), weight_decay=opt.get("weight_decay", 0.0),
        adam_beta1=opt.get("beta1", 0.9), adam_beta2=opt.get("beta2", 0.999), adam_epsilon=opt.get("eps", 1e-8),
        max_grad_norm=cfg.get("clip_norm", 1.0), max_steps=steps,
        lr_scheduler_type=cfg.get("schedule", {}).get("kind", "linear"),
        warmup_steps=int(-(-recipe.get("warmup_ratio", 0.0) * steps // 1)),
        label_smoothing_factor=recipe.get("label_smoothing", 0.0), seed=cfg.get("seed", 42),
        eval_strategy="no", save_strategy="no", logging_steps=100, report_to=[], use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train_ds,
                             data_collator=DataCollatorForSeq2Seq(tok, model=model))
    start = time.time()
    out = trainer.train()
    train_secs = time.time() - start
    model.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    bleu = decode_test(model, tok, recipe, a)
    print(json.dumps({"bleu": bleu, "train_seconds": train_secs, "steps": out.global_step,
                      "train_loss": out.training_loss}))


def decode_test(model, tok, recipe, a):
    """sacreBLEU of the test sources decoded with the recipe's beam; the outputs go to OUT/test.hyp."""
    import sacrebleu
    import torch

    beam, prefix = recipe["beam"], recipe.get("source_prefix", "")
    model.eval()
    test_src, test_ref = lines(a.test), lines(a.test_target)
    hyps = []
    with torch.no_grad():
        for b in range(0, len(test_src), 32):
            enc = tok([prefix + s for s in test_src[b:b + 32]], max_length=recipe.get("max_length", 128),
                      truncation=True, padding=True, return_tensors="pt")
            gen = model.generate(**enc, num_beams=beam["beam_size"], max_length=beam["max_length"] + 1,
                                 length_penalty=beam.get("length_penalty", 1.0), early_stopping=False)
            hyps.extend(tok.batch_decode(gen, skip_special_tokens=True))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "test.hyp"), "w") as f:
        f.write("\n".join(hyps) + "\n")
    return sacrebleu.corpus_bleu(hyps, [test_ref]).score


def decode(a):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    recipe = json.load(open(a.config))
    model = AutoModelForSeq2SeqLM.from_pretrained(a.model)
    tok = AutoTokenizer.from_pretrained(a.model)
    print(json.dumps({"bleu": decode_test(model, tok, recipe, a)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["init", "train", "decode"])
    ap.add_argument("--source")
    ap.add_argument("--target")
    ap.add_argument("--model")
    ap.add_argument("--train")
    ap.add_argument("--train-target")
    ap.add_argument("--test")
    ap.add_argument("--test-target")
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    # init: the architecture of the starting checkpoint and its tokenizer.
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--positions", type=int, default=128)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    {"init": init, "train": train, "decode": decode}[a.mode](a)


if __name__ == "__main__":
    main()
