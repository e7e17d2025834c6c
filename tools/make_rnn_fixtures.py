"""Writes tests/fixtures/rnn/*.safetensors: tiny random torch.nn.LSTM / GRU / RNN layers (2 layers,
bidirectional), their weights under PyTorch's own names, a padded batch with per-sequence lengths, and
PyTorch's outputs for it (via pack_padded_sequence, so padding is handled as PyTorch handles it).

    pip install torch safetensors && python3 tools/make_rnn_fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "rnn")
INPUT, HIDDEN, LAYERS, BATCH, TIME = 4, 6, 2, 3, 5
LENGTHS = [5, 3, 1]


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    cases = {
        "lstm": torch.nn.LSTM(INPUT, HIDDEN, LAYERS, bidirectional=True, batch_first=True),
        "gru": torch.nn.GRU(INPUT, HIDDEN, LAYERS, bidirectional=True, batch_first=True),
        "rnn_tanh": torch.nn.RNN(INPUT, HIDDEN, LAYERS, nonlinearity="tanh", bidirectional=True, batch_first=True),
        "rnn_relu": torch.nn.RNN(INPUT, HIDDEN, LAYERS, nonlinearity="relu", bidirectional=True, batch_first=True),
    }
    for name, layer in cases.items():
        layer.eval()
        x = torch.randn(BATCH, TIME, INPUT)
        lengths = torch.tensor(LENGTHS)
        with torch.no_grad():
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, state = layer(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=TIME)
        tensors = {k: v.contiguous() for k, v in layer.state_dict().items()}
        tensors["input"] = x
        tensors["lengths"] = lengths.to(torch.int64)
        tensors["output"] = out.contiguous()
        if isinstance(state, tuple):
            tensors["h_n"], tensors["c_n"] = state[0].contiguous(), state[1].contiguous()
        else:
            tensors["h_n"] = state.contiguous()
        meta = {"cell": name, "input_size": INPUT, "hidden_size": HIDDEN, "num_layers": LAYERS, "bidirectional": True,
                "generator": f"torch {torch.__version__}"}
        save_file(tensors, os.path.join(OUT, f"{name}.safetensors"), metadata={"config": json.dumps(meta)})
        print(name, {k: tuple(v.shape) for k, v in tensors.items() if not k.startswith(("weight", "bias"))})


if __name__ == "__main__":
    main()
