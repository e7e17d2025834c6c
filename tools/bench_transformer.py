"""PyTorch + transformers side of `lingo bench transformer`: the Multi30k recipe's Transformer
(configs/multi30k-transformer.json: 3 + 3 post-norm layers of 256, 8 heads, ReLU feed-forward of
1024, one shared vocabulary of 8,000, sinusoidal positions) as transformers builds that
architecture, `MarianMTModel`, with random weights.

- train_ms: a training step on 128 sentence pairs (source lengths 8 + (7i mod 17), targets
  8 + (11i mod 17) then EOS, padded): forward in training mode (dropout 0.1), cross-entropy with
  label smoothing 0.1 over the non-padding targets, backward, clipping at 1.0, AdamW (lr 7e-4,
  betas 0.9/0.98, no weight decay).
- forward_ms: the same batch's forward and loss in evaluation mode.
- beam_ms: beam search (5 beams, length penalty 1) of 64 such sources at once, exactly 24 target
  tokens each (`min_new_tokens` = `max_new_tokens`, so random weights do the same work on both
  sides), with the KV cache.

Prints one JSON object with per-iteration milliseconds.

    python3 tools/bench_transformer.py --threads 2 --iters 10
"""
import argparse
import json

import torch
import torch.nn.functional as F
import transformers as tf

from bench_gpt import timed

PAD, EOS = 0, 2
VOCAB = 8000


def sources(n, g):
    lengths = [8 + (7 * i) % 17 for i in range(n)]
    ids = torch.full((n, max(lengths)), PAD, dtype=torch.long)
    for i, l in enumerate(lengths):
        ids[i, :l] = torch.randint(3, VOCAB, (l,), generator=g)
    return ids, (ids != PAD).long()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = tf.MarianConfig(
        vocab_size=VOCAB, decoder_vocab_size=VOCAB, d_model=256, encoder_layers=3, decoder_layers=3,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=1024, decoder_ffn_dim=1024,
        activation_function="relu", dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
        max_position_embeddings=128, scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
        forced_eos_token_id=None)
    model = tf.MarianMTModel(cfg)

    n = 128
    src, mask = sources(n, g)
    tgt_len = [8 + (11 * i) % 17 for i in range(n)]
    labels = torch.full((n, max(tgt_len) + 1), -100, dtype=torch.long)
    for i, l in enumerate(tgt_len):
        labels[i, :l] = torch.randint(3, VOCAB, (l,), generator=g)
        labels[i, l] = EOS
    decoder_in = torch.cat([torch.full((n, 1), PAD), labels[:, :-1].clamp(min=0)], dim=1)
    opt = torch.optim.AdamW(model.parameters(), lr=7e-4, betas=(0.9, 0.98), weight_decay=0.0)

    def train_step():
        model.train()
        logits = model(input_ids=src, attention_mask=mask, decoder_input_ids=decoder_in).logits
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100,
                               label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def forward():
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=src, attention_mask=mask, decoder_input_ids=decoder_in).logits
            F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100,
                            label_smoothing=0.1).item()

    beam_src, beam_mask = sources(64, g)

    def beam():
        model.eval()
        with torch.no_grad():
            out = model.generate(beam_src, attention_mask=beam_mask, num_beams=5, max_new_tokens=24,
                                 min_new_tokens=24, length_penalty=1.0, early_stopping=False,
                                 do_sample=False)
        assert out.shape == (64, 25), out.shape

    result = {"torch": torch.__version__, "transformers": tf.__version__, "threads": torch.get_num_threads()}
    for key, fn in [("train_ms", train_step), ("forward_ms", forward), ("beam_ms", beam)]:
        result[key] = timed(fn, a.warmup, a.iters)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
