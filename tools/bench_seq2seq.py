"""PyTorch side of `lingo bench seq2seq`: the same attention LSTM encoder–decoder as Lingo's, timed the same way.

The model is Lingo's `RnnSeq2Seq` with the Multi30k recipe's sizes (configs/multi30k-lstm.json), written
the way a PyTorch user writes it (Bahdanau et al., 2015):
- encoder: embedding → bidirectional `nn.LSTM` over a packed padded batch;
- bridge: `tanh(W [h_fwd; h_bwd])` starts the decoder (cell state zero);
- decoder, at each target step: additive attention `vᵀ tanh(W₁ h_j + W₂ s_{i-1})` over the encoder
  outputs (padding masked), `nn.LSTMCell` on `[embedding; context]`, `h̃ = tanh(W_c [s; context])`;
- one output layer over every step's `h̃`, cross-entropy over the non-padding targets, dropout 0.3;
- AdamW, global-norm clipping at 1.0, f32 on the CPU.

The batch is fixed and identical to Lingo's: `batch` pairs whose source and target lengths are
`8 + (7i mod 17)` and `8 + (11i mod 17)` tokens (8–24, mean 16). Prints one JSON object: per-iteration
milliseconds of a training step and of a forward pass, and the number of target tokens per step.

    python3 tools/bench_seq2seq.py --threads 2 --iters 10
"""
import argparse
import json

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bench_gpt import timed

PAD, BOS, EOS = 0, 1, 2


class Seq2Seq(nn.Module):
    def __init__(self, src_vocab, tgt_vocab, embed, hidden, dropout):
        super().__init__()
        self.src_embed = nn.Embedding(src_vocab, embed, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, embed, padding_idx=PAD)
        self.encoder = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.memory_proj = nn.Linear(2 * hidden, hidden, bias=False)
        self.query_proj = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, 1, bias=False)
        self.decoder = nn.LSTMCell(embed + 2 * hidden, hidden)
        self.combine = nn.Linear(3 * hidden, hidden)
        self.out = nn.Linear(hidden, tgt_vocab)
        self.drop = nn.Dropout(dropout)

    def forward(self, src, src_lengths, tgt_in, tgt_out):
        emb = self.drop(self.src_embed(src))
        packed = pack_padded_sequence(emb, src_lengths, batch_first=True, enforce_sorted=False)
        memory, (h_n, _) = self.encoder(packed)
        memory, _ = pad_packed_sequence(memory, batch_first=True, total_length=src.shape[1])
        keys = self.memory_proj(memory)
        pad = (src == PAD)
        h = torch.tanh(self.bridge(torch.cat([h_n[0], h_n[1]], dim=1)))
        c = torch.zeros_like(h)
        tgt_emb = self.drop(self.tgt_embed(tgt_in))
        states = []
        for i in range(tgt_in.shape[1]):
            scores = self.v(torch.tanh(keys + self.query_proj(h).unsqueeze(1))).squeeze(2)
            weights = torch.softmax(scores.masked_fill(pad, float("-inf")), dim=1)
            context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
            h, c = self.decoder(torch.cat([tgt_emb[:, i], context], dim=1), (h, c))
            states.append(torch.tanh(self.combine(torch.cat([h, context], dim=1))))
        logits = self.out(self.drop(torch.stack(states, dim=1)))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=PAD)


def batch(n, src_vocab, tgt_vocab, generator):
    src_len = [8 + (7 * i) % 17 for i in range(n)]
    tgt_len = [8 + (11 * i) % 17 for i in range(n)]
    src = torch.zeros(n, max(src_len), dtype=torch.long)
    tgt_in = torch.zeros(n, max(tgt_len) + 1, dtype=torch.long)
    tgt_out = torch.zeros_like(tgt_in)
    for i in range(n):
        src[i, : src_len[i]] = torch.randint(3, src_vocab, (src_len[i],), generator=generator)
        words = torch.randint(3, tgt_vocab, (tgt_len[i],), generator=generator)
        tgt_in[i, 0] = BOS
        tgt_in[i, 1 : tgt_len[i] + 1] = words
        tgt_out[i, : tgt_len[i]] = words
        tgt_out[i, tgt_len[i]] = EOS
    return src, torch.tensor(src_len), tgt_in, tgt_out, sum(tgt_len) + n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--embed", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Seq2Seq(a.vocab, a.vocab, a.embed, a.hidden, a.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    src, src_len, tgt_in, tgt_out, tokens = batch(a.batch, a.vocab, a.vocab, torch.Generator().manual_seed(0))

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = model(src, src_len, tgt_in, tgt_out)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    def forward():
        model.eval()
        with torch.no_grad():
            return model(src, src_len, tgt_in, tgt_out).item()

    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "target_tokens": tokens}
    for name, fn in (("train_ms", train_step), ("forward_ms", forward)):
        result[name] = timed(fn, a.warmup, a.iters)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
