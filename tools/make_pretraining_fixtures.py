"""Writes tests/fixtures/pretraining/objectives.json: what transformers' data collators do, for
Lingo's pre-training objectives (crates/lingo-data/src/pretraining) to be tested against.

- span_corruption: T5's span corruption as `DataCollatorForT5MLM` in transformers'
  examples/flax/language-modeling/run_t5_mlm_flax.py computes it (the functions below are that
  file's, unchanged but for being free functions): `compute_input_and_target_lengths` for several
  lengths; the number of noise tokens and of noise spans `random_spans_noise_mask` gives for every
  length 4..600 (deterministic, though the arrangement is random); and inputs/labels of
  `create_sentinel_ids` + `filter_input_ids` for fixed masks.
- mlm: the rates `DataCollatorForLanguageModeling` achieves (token-level and whole_word_mask) on one
  sentence of the WordPiece fixture tokenizer, over 20,000 draws: share of non-special tokens
  chosen, and of the chosen ones the share set to [MASK], left as they were, or randomised.

    pip install transformers torch numpy && python3 tools/make_pretraining_fixtures.py
"""
import json
import os

import numpy as np
import torch
from transformers import AutoTokenizer, DataCollatorForLanguageModeling

ROOT = os.path.join(os.path.dirname(__file__), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "pretraining")


# --- run_t5_mlm_flax.py ---------------------------------------------------------------------
def compute_input_and_target_lengths(inputs_length, noise_density, mean_noise_span_length):
    def _tokens_length_to_inputs_length_targets_length(tokens_length):
        num_noise_tokens = int(round(tokens_length * noise_density))
        num_nonnoise_tokens = tokens_length - num_noise_tokens
        num_noise_spans = int(round(num_noise_tokens / mean_noise_span_length))
        _input_length = num_nonnoise_tokens + num_noise_spans + 1
        _output_length = num_noise_tokens + num_noise_spans + 1
        return _input_length, _output_length

    tokens_length = inputs_length
    while _tokens_length_to_inputs_length_targets_length(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    inputs_length, targets_length = _tokens_length_to_inputs_length_targets_length(tokens_length)
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def random_spans_noise_mask(length, noise_density, mean_noise_span_length):
    orig_length = length
    num_noise_tokens = int(np.round(length * noise_density))
    num_nonnoise_tokens = length - num_noise_tokens
    num_noise_tokens = min(max(num_noise_tokens, 1), length - 1)
    num_noise_spans = int(np.round(min(num_noise_tokens, num_nonnoise_tokens) / mean_noise_span_length))
    num_noise_spans = max(num_noise_spans, 1)

    def _random_segmentation(num_items, num_segments):
        mask_indices = np.arange(num_items - 1) < (num_segments - 1)
        np.random.shuffle(mask_indices)
        first_in_segment = np.pad(mask_indices, [[1, 0]])
        segment_id = np.cumsum(first_in_segment)
        _, segment_length = np.unique(segment_id, return_counts=True)
        return segment_length

    noise_span_lengths = _random_segmentation(num_noise_tokens, num_noise_spans)
    nonnoise_span_lengths = _random_segmentation(num_nonnoise_tokens, num_noise_spans)
    interleaved_span_lengths = np.reshape(
        np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1), [num_noise_spans * 2]
    )
    span_starts = np.cumsum(interleaved_span_lengths)[:-1]
    span_start_indicator = np.zeros((length,), dtype=np.int8)
    span_start_indicator[span_starts] = True
    span_num = np.cumsum(span_start_indicator)
    is_noise = np.equal(span_num % 2, 1)
    return is_noise[:orig_length]


def create_sentinel_ids(mask_indices, vocab_len):
    start_indices = mask_indices - np.roll(mask_indices, 1, axis=-1) * mask_indices
    start_indices[:, 0] = mask_indices[:, 0]
    sentinel_ids = np.where(start_indices != 0, np.cumsum(start_indices, axis=-1), start_indices)
    sentinel_ids = np.where(sentinel_ids != 0, (vocab_len - sentinel_ids), 0)
    sentinel_ids -= mask_indices - start_indices
    return sentinel_ids


def filter_input_ids(input_ids, sentinel_ids, eos_token_id):
    batch_size = input_ids.shape[0]
    input_ids_full = np.where(sentinel_ids != 0, sentinel_ids, input_ids)
    input_ids = input_ids_full[input_ids_full >= 0].reshape((batch_size, -1))
    input_ids = np.concatenate(
        [input_ids, np.full((batch_size, 1), eos_token_id, dtype=np.int32)], axis=-1
    )
    return input_ids
# ----------------------------------------------------------------------------------------------


def span_corruption():
    np.random.seed(0)
    lengths = [
        {"input_length": n, "noise_density": d, "mean_noise_span_length": m,
         "tokens": t, "targets": g}
        for n in [8, 16, 32, 64, 100, 128, 256, 512]
        for d, m in [(0.15, 3.0), (0.5, 3.0), (0.3, 2.0)]
        for t, g in [compute_input_and_target_lengths(n, d, m)]
    ]
    counts = []
    for length in range(4, 601):
        mask = random_spans_noise_mask(length, 0.15, 3.0)
        spans = int(np.sum(mask[1:] & ~mask[:-1]) + mask[0])
        counts.append([length, int(mask.sum()), spans])
    cases = []
    vocab_len, eos = 100, 1
    for length in [10, 20, 37, 64]:
        mask = random_spans_noise_mask(length, 0.15, 3.0)[None, :].astype(np.int8)
        ids = (np.arange(length, dtype=np.int32) + 10)[None, :]
        inputs = filter_input_ids(ids, create_sentinel_ids(mask, vocab_len), eos)
        labels = filter_input_ids(ids, create_sentinel_ids(1 - mask, vocab_len), eos)
        cases.append({"ids": ids[0].tolist(), "mask": mask[0].astype(bool).tolist(),
                      "input": inputs[0].tolist(), "labels": labels[0].tolist()})
    # A mask that starts with noise, which random_spans_noise_mask never draws.
    mask = np.array([[1, 1, 0, 0, 1, 0, 1, 1]], dtype=np.int8)
    ids = (np.arange(8, dtype=np.int32) + 10)[None, :]
    cases.append({"ids": ids[0].tolist(), "mask": mask[0].astype(bool).tolist(),
                  "input": filter_input_ids(ids, create_sentinel_ids(mask, vocab_len), eos)[0].tolist(),
                  "labels": filter_input_ids(ids, create_sentinel_ids(1 - mask, vocab_len), eos)[0].tolist()})
    return {"vocab_len": vocab_len, "eos": eos, "lengths": lengths, "noise_counts": counts,
            "cases": cases}


def mlm_rates(whole_word):
    tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "tests", "fixtures", "tokenizers", "wordpiece"))
    text = "Unbelievably, the encoder pre-trains on naïve baselines and long documents."
    enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    collator = DataCollatorForLanguageModeling(tok, whole_word_mask=whole_word, seed=0)
    draws = 20000
    example = {k: enc[k] for k in ["input_ids", "offset_mapping", "special_tokens_mask"]} if whole_word \
        else {"input_ids": enc["input_ids"], "special_tokens_mask": enc["special_tokens_mask"]}
    batch = collator([example] * draws)
    ids = torch.tensor(enc["input_ids"])
    special = torch.tensor(enc["special_tokens_mask"]).bool()
    chosen = batch["labels"] != -100
    inputs = batch["input_ids"]
    n_chosen = chosen.sum().item()
    return {
        "text": text,
        "ids": enc["input_ids"],
        "draws": draws,
        "chosen_rate": n_chosen / (draws * (~special).sum().item()),
        "special_chosen": int(chosen[:, special].sum().item()),
        "mask_share": ((inputs == tok.mask_token_id) & chosen).sum().item() / n_chosen,
        "kept_share": ((inputs == ids[None, :]) & chosen).sum().item() / n_chosen,
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    fixture = {
        "span_corruption": span_corruption(),
        "mlm": mlm_rates(False),
        "mlm_whole_word": mlm_rates(True),
    }
    with open(os.path.join(OUT, "objectives.json"), "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
    print({k: {kk: vv for kk, vv in v.items() if "rate" in kk or "share" in kk}
           for k, v in fixture.items() if k.startswith("mlm")})


if __name__ == "__main__":
    main()
