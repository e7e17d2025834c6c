"""Tiny random-weight Hugging Face checkpoints and their reference outputs, for Lingo's parity tests.

For every architecture Lingo loads, this builds a tiny model from a config object (no download), with
every bias and every LayerNorm weight perturbed away from its 0/1 initialisation (so a missing bias or a
dropped norm shows), saves it with `save_pretrained` (config.json + model.safetensors), and runs it on
two inputs: one sequence, and a padded batch of two with an attention mask (and token types where the
model has them). It writes `expected.safetensors` beside the checkpoint:

    {case}.input_ids, {case}.attention_mask, [{case}.token_type_ids], [{case}.decoder_input_ids],
    {case}.hidden.{i}           hidden states after the embeddings (i = 0) and after every layer
                                (encoder side for encoder-decoders),
    {case}.decoder_hidden.{i}   decoder hidden states (encoder-decoders),
    {case}.attention.{i}        attention probabilities [batch, heads, q, k] of layer i (encoder side),
    {case}.decoder_attention.{i}, {case}.cross_attention.{i}   the decoder's (encoder-decoders),
    {case}.output               the model's main output: logits of the head, [batch, seq, 2] start/end
                                logits for extractive QA, or the last hidden state for a bare model,

for case in (single, batch). Run from the repository root:

    python3 tools/make_hf_fixtures.py            # writes crates/lingo-models/tests/fixtures/hf/*
"""
import json
import os
import sys

import torch
import transformers as tf
from safetensors.torch import save_file

OUT = os.path.join("crates", "lingo-models", "tests", "fixtures", "hf")
VOCAB = 99

# Shared tiny sizes: hidden 32, 2 layers, 4 heads, an odd feed-forward width so a transposed
# weight cannot pass by accident.
ENC = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
           intermediate_size=37, max_position_embeddings=64)


def bert_like(config_cls, **extra):
    return config_cls(**ENC, **extra)


def cases():
    """(folder name, model class, config) for every architecture and head."""
    bert = lambda **kw: bert_like(tf.BertConfig, type_vocab_size=2, **kw)
    yield "bert", tf.BertModel, bert()
    yield "bert-mlm", tf.BertForMaskedLM, bert()
    yield "bert-cls", tf.BertForSequenceClassification, bert(num_labels=3)
    yield "bert-ner", tf.BertForTokenClassification, bert(
        id2label={0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"},
        label2id={"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4})
    yield "bert-qa", tf.BertForQuestionAnswering, bert()
    yield "bert-pretraining", tf.BertForPreTraining, bert()
    roberta = lambda **kw: bert_like(tf.RobertaConfig, type_vocab_size=1, pad_token_id=1, **kw)
    yield "roberta", tf.RobertaModel, roberta()
    yield "roberta-mlm", tf.RobertaForMaskedLM, roberta()
    yield "roberta-cls", tf.RobertaForSequenceClassification, roberta(num_labels=3)
    yield "roberta-ner", tf.RobertaForTokenClassification, roberta(num_labels=5)
    yield "roberta-qa", tf.RobertaForQuestionAnswering, roberta()
    albert = dict(ENC, embedding_size=16, num_hidden_groups=1)
    yield "albert", tf.AlbertModel, tf.AlbertConfig(**albert)
    yield "albert-mlm", tf.AlbertForMaskedLM, tf.AlbertConfig(**albert)
    yield "albert-cls", tf.AlbertForSequenceClassification, tf.AlbertConfig(**albert, num_labels=3)
    yield "albert-pretraining", tf.AlbertForPreTraining, tf.AlbertConfig(**albert)
    distil = dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
    yield "distilbert", tf.DistilBertModel, tf.DistilBertConfig(**distil)
    yield "distilbert-mlm", tf.DistilBertForMaskedLM, tf.DistilBertConfig(**distil)
    yield "distilbert-qa", tf.DistilBertForQuestionAnswering, tf.DistilBertConfig(**distil)
    yield "distilbert-cls", tf.DistilBertForSequenceClassification, tf.DistilBertConfig(**distil, num_labels=3)
    yield "distilbert-ner", tf.DistilBertForTokenClassification, tf.DistilBertConfig(**distil, num_labels=5)
    electra = dict(ENC, embedding_size=16)
    yield "electra-discriminator", tf.ElectraForPreTraining, tf.ElectraConfig(**electra)
    yield "electra-generator", tf.ElectraForMaskedLM, tf.ElectraConfig(**electra)
    yield "electra-cls", tf.ElectraForSequenceClassification, tf.ElectraConfig(**electra, num_labels=3)
    yield "electra-qa", tf.ElectraForQuestionAnswering, tf.ElectraConfig(**electra)
    gpt2 = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=98,
                eos_token_id=98)
    yield "gpt2", tf.GPT2LMHeadModel, tf.GPT2Config(**gpt2)
    # Encoder-decoders get a wider initialisation than the default so that greedy and beam decoding
    # depend on the input instead of repeating one token.
    t5 = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, initializer_factor=3.0,
              relative_attention_num_buckets=8, relative_attention_max_distance=20,
              decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    yield "t5", tf.T5ForConditionalGeneration, tf.T5Config(**t5, feed_forward_proj="relu")
    v1_1 = tf.T5Config(**t5, feed_forward_proj="gated-gelu")
    v1_1.tie_word_embeddings = False  # as google/t5-v1_1-*: an untied head, no d_model**-0.5 rescale
    yield "t5-v1_1", tf.T5ForConditionalGeneration, v1_1
    seq2seq = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
                   encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
                   decoder_ffn_dim=37, max_position_embeddings=64, pad_token_id=1,
                   bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, init_std=0.3)
    yield "bart", tf.BartForConditionalGeneration, tf.BartConfig(**seq2seq)
    # As the Helsinki-NLP/opus-mt-* checkpoints: swish, embeddings scaled by √d_model, sinusoidal positions.
    yield "marian", tf.MarianMTModel, tf.MarianConfig(**dict(seq2seq, pad_token_id=98, decoder_start_token_id=98,
                                                              activation_function="swish", scale_embedding=True))


# A tiny lower-cased corpus for the WordPiece tokenizers of the pipeline fixtures (written here, not
# taken from any dataset).
CORPUS = ["the cat sat on the mat", "a dog runs in the park", "paris is the capital of france",
          "alice lives in london with bob", "the quick brown fox jumps over the lazy dog",
          "rust makes models fast", "where does alice live ?", "bob works at the bank in paris",
          "the weather is good today", "models learn from data"] * 3

# Folders that get a tokenizer.json and the outputs of `transformers` pipelines (pipelines.json).
PIPELINES = {"bert", "bert-mlm", "bert-cls", "bert-ner", "bert-qa"}


def wordpiece_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    return tf.BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def t5_tokenizer():
    """A WordPiece tokenizer with T5's special ids (<pad> 0, </s> 1, <unk> 2) that appends </s>."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.decoder = decoders.WordPiece()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def pipeline_outputs(name, model, tokenizer):
    """What the `transformers` pipeline (or, for embeddings, the usual pooling) gives on fixed inputs."""
    if name == "bert-mlm":
        p = tf.pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=5)
        inputs = ["paris is the [MASK] of france", "alice lives in [MASK] ."]
        return {"inputs": inputs, "outputs": [p(t) for t in inputs]}
    if name == "bert-cls":
        p = tf.pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)
        inputs = ["the cat sat on the mat", "bob works at the bank"]
        return {"inputs": inputs, "outputs": [p(t) for t in inputs]}
    if name == "bert-ner":
        p = tf.pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple")
        inputs = ["alice lives in paris with bob", "the quick brown fox jumps over the lazy dog"]
        return {"inputs": inputs, "outputs": [[{k: (float(v) if k == "score" else v) for k, v in e.items()}
                                               for e in p(t)] for t in inputs]}
    if name == "bert-qa":
        # transformers 5 has no question-answering pipeline; this is the rule Lingo implements: the
        # span (start <= end, at most 15 tokens, both in the context) maximising P(start) P(end), with
        # each distribution a softmax over the context tokens only.
        inputs = [{"question": "where does alice live ?", "context": "alice lives in paris with bob ."},
                  {"question": "what is fast ?", "context": "rust makes models fast ."}]
        outputs = []
        for q in inputs:
            enc = tokenizer(q["question"], q["context"], return_offsets_mapping=True, return_tensors="pt")
            offsets = enc.pop("offset_mapping")[0].tolist()
            with torch.no_grad():
                out = model(**enc)
            ctx = [i for i, s in enumerate(enc.sequence_ids(0)) if s == 1]
            ps = torch.softmax(out.start_logits[0, ctx], 0)
            pe = torch.softmax(out.end_logits[0, ctx], 0)
            best = max(((float(ps[a] * pe[b]), a, b) for a in range(len(ctx))
                        for b in range(a, min(a + 15, len(ctx)))))
            score, a, b = best
            start, end = offsets[ctx[a]][0], offsets[ctx[b]][1]
            outputs.append({"score": score, "start": start, "end": end, "answer": q["context"][start:end]})
        return {"inputs": inputs, "outputs": outputs}
    if name == "bert":
        inputs = ["the cat sat on the mat", "models learn"]
        enc = tokenizer(inputs, padding=True, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return {"inputs": inputs, "outputs": {
            "mean": ((h * m).sum(1) / m.sum(1)).tolist(),
            "cls": h[:, 0].tolist(),
            "max": h.masked_fill(m == 0, float("-inf")).max(1).values.tolist()}}
    raise ValueError(name)


def perturb(model, generator):
    """Biases, norm weights and the final logits bias away from 0 / 1, so none can be ignored."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
            elif "LayerNorm.weight" in name or "layer_norm.weight" in name or "ln_" in name \
                    or name.endswith("layernorm_embedding.weight") or name.endswith("final_layer_norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=generator))
        for name, b in model.named_buffers():
            if name.endswith("final_logits_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=generator))


def inputs(config, is_encoder_decoder, has_token_types, generator):
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    lo = 3  # keep clear of the special ids 0-2
    single = torch.randint(lo, VOCAB - 2, (1, 9), generator=generator)
    batch = torch.randint(lo, VOCAB - 2, (2, 11), generator=generator)
    mask = torch.ones_like(batch)
    batch[1, 6:] = pad
    mask[1, 6:] = 0
    out = {}
    for case, ids, m in (("single", single, torch.ones_like(single)), ("batch", batch, mask)):
        d = {"input_ids": ids, "attention_mask": m}
        if has_token_types:
            tt = torch.zeros_like(ids)
            tt[:, ids.shape[1] // 2:] = 1
            d["token_type_ids"] = tt
        if is_encoder_decoder:
            d["decoder_input_ids"] = torch.randint(lo, VOCAB - 2, (ids.shape[0], 5), generator=generator)
        out[case] = d
    return out


def main_output(out):
    if getattr(out, "prediction_logits", None) is not None:
        return out.prediction_logits
    if hasattr(out, "start_logits") and out.start_logits is not None:
        return torch.stack([out.start_logits, out.end_logits], dim=-1)
    if getattr(out, "logits", None) is not None:
        return out.logits
    return out.last_hidden_state


def main():
    torch.manual_seed(0)
    only = set(sys.argv[1:])
    for k, (name, cls, config) in enumerate(cases()):
        if only and name not in only:
            continue
        config._attn_implementation = "eager"
        torch.manual_seed(k)
        model = cls(config).eval()
        g = torch.Generator().manual_seed(1000 + k)
        perturb(model, g)
        folder = os.path.join(OUT, name)
        model.save_pretrained(folder, safe_serialization=True)
        enc_dec = config.is_encoder_decoder
        has_tt = getattr(config, "type_vocab_size", 0) and config.type_vocab_size > 1
        tensors = {}
        for case, d in inputs(config, enc_dec, has_tt, g).items():
            with torch.no_grad():
                out = model(**d, output_hidden_states=True, output_attentions=True)
            for key, v in d.items():
                tensors[f"{case}.{key}"] = v.to(torch.int64)
            hidden = out.encoder_hidden_states if enc_dec else out.hidden_states
            for i, h in enumerate(hidden):
                tensors[f"{case}.hidden.{i}"] = h
            attentions = out.encoder_attentions if enc_dec else out.attentions
            for i, a in enumerate(attentions):
                tensors[f"{case}.attention.{i}"] = a
            if enc_dec:
                for i, h in enumerate(out.decoder_hidden_states):
                    tensors[f"{case}.decoder_hidden.{i}"] = h
                for i, a in enumerate(out.decoder_attentions):
                    tensors[f"{case}.decoder_attention.{i}"] = a
                for i, a in enumerate(out.cross_attentions):
                    tensors[f"{case}.cross_attention.{i}"] = a
            tensors[f"{case}.output"] = main_output(out)
            pair = getattr(out, "seq_relationship_logits", None)
            pair = pair if pair is not None else getattr(out, "sop_logits", None)
            if pair is not None:
                tensors[f"{case}.pair_output"] = pair
        if name == "gpt2":
            # Greedy continuations (KV cache), plain and with a repetition penalty.
            prompt = torch.tensor([[5, 17, 33, 8, 40, 12]])
            runs = {}
            for key, penalty in (("greedy", 1.0), ("penalty_1.5", 1.5)):
                with torch.no_grad():
                    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                                         min_new_tokens=20, do_sample=False, repetition_penalty=penalty,
                                         pad_token_id=0)
                runs[key] = out[0, prompt.shape[1]:].tolist()
            # Beam search: with the config's EOS (never reached here) and with EOS = the token greedy
            # repeats, so beams finish early.
            for key, eos in (("beam3", config.eos_token_id), ("beam3_eos78", 78)):
                with torch.no_grad():
                    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                         num_beams=3, do_sample=False, length_penalty=1.0, early_stopping=True,
                                         eos_token_id=eos, pad_token_id=0)
                runs[key] = out[0, prompt.shape[1]:].tolist()
            with open(os.path.join(folder, "generate.json"), "w") as f:
                json.dump({"prompt": prompt[0].tolist(), **runs}, f)
        if enc_dec:
            # Greedy and beam-search outputs for the padded batch (no forced tokens, no n-gram rules).
            d = inputs(config, enc_dec, has_tt, torch.Generator().manual_seed(7))["batch"]
            runs = {}
            for key, beams in (("greedy", 1), ("beam3", 3)):
                with torch.no_grad():
                    out = model.generate(input_ids=d["input_ids"], attention_mask=d["attention_mask"],
                                         max_new_tokens=12, num_beams=beams, do_sample=False,
                                         length_penalty=1.0, early_stopping=True, no_repeat_ngram_size=0,
                                         forced_bos_token_id=None, forced_eos_token_id=None, min_length=0)
                runs[key] = out[:, 1:].tolist()
            # Every generation constraint at once: a forced first and last token, a minimum length,
            # no repeated bigram, and banned words (one token, and a pair) taken from greedy's output.
            first = runs["greedy"][0]
            constraints = {"num_beams": 3, "max_length": 13, "min_length": 6, "no_repeat_ngram_size": 2,
                           "bad_words_ids": [[first[1]], [first[2], first[3]]], "forced_bos_token_id": 5,
                           "forced_eos_token_id": config.eos_token_id, "early_stopping": False,
                           "length_penalty": 1.0}
            with torch.no_grad():
                out = model.generate(input_ids=d["input_ids"], attention_mask=d["attention_mask"], do_sample=False,
                                     **constraints)
            runs["constrained"] = out[:, 1:].tolist()
            with open(os.path.join(folder, "generate.json"), "w") as f:
                json.dump({"input_ids": d["input_ids"].tolist(), "attention_mask": d["attention_mask"].tolist(),
                           "pad": config.pad_token_id, "eos": config.eos_token_id, "constraints": constraints,
                           **runs}, f)
        if name == "t5":
            # Text in, text out: what `lingo translate` must print for this folder.
            tokenizer = t5_tokenizer()
            tokenizer.save_pretrained(folder)
            texts = ["the cat sat on the mat", "alice lives in paris"]
            enc = tokenizer(texts, return_tensors="pt", padding=True)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=12, num_beams=3, do_sample=False, length_penalty=1.0,
                                     early_stopping=True, no_repeat_ngram_size=0)
            with open(os.path.join(folder, "translate.json"), "w") as f:
                json.dump({"inputs": texts, "outputs": tokenizer.batch_decode(out, skip_special_tokens=True)}, f)
        if name in PIPELINES:
            tokenizer = wordpiece_tokenizer()
            tokenizer.save_pretrained(folder)
            with open(os.path.join(folder, "pipelines.json"), "w") as f:
                json.dump(pipeline_outputs(name, model, tokenizer), f, indent=1)
        save_file({k: v.contiguous().clone() for k, v in tensors.items()}, os.path.join(folder, "expected.safetensors"),
                  metadata={"class": cls.__name__, "transformers": tf.__version__, "torch": torch.__version__})
        print(f"{name:24s} {cls.__name__:36s} {sum(p.numel() for p in model.parameters()):7d} params")
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("Generated by `python3 tools/make_hf_fixtures.py` with transformers "
                f"{tf.__version__} and torch {torch.__version__}; see the script's docstring.\n")


if __name__ == "__main__":
    main()
