"""Reference for Lingo's int8 and bf16 tests: how far PyTorch's dynamic int8 quantization
(`torch.ao.quantization.quantize_dynamic` of every nn.Linear, qint8 weights) moves each tiny
fixture model's output on the fixture's padded batch, as ||int8 - f32|| / ||f32||; and how far
bf16 weights move it — `bf16_linear`: every linear layer (GPT-2's Conv1D too) multiplying
bf16-rounded inputs by bf16-rounded weights with f32 sums, embedding tables rounded to bf16,
everything else f32, which is Lingo's `--dtype bf16`; `bf16_autocast`: `torch.autocast("cpu", torch.bfloat16)` for comparison.

crates/lingo-models/tests/quantized.rs checks Lingo's int8 model is no further from f32 than
PyTorch's, and its bf16 model as far as the bf16_linear emulation (summation order aside).

    python3 tools/make_int8_fixtures.py
"""
import json
import pathlib

import torch
import transformers as tf
from safetensors.torch import load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates/lingo-models/tests/fixtures/hf"
MODELS = {
    "bert-cls": tf.BertForSequenceClassification,
    "bert-mlm": tf.BertForMaskedLM,
    "albert-mlm": tf.AlbertForMaskedLM,
    "distilbert-qa": tf.DistilBertForQuestionAnswering,
    "electra-generator": tf.ElectraForMaskedLM,
    "gpt2": tf.GPT2LMHeadModel,
    "bart": tf.BartForConditionalGeneration,
    "t5": tf.T5ForConditionalGeneration,
    "marian": tf.MarianMTModel,
}
INPUTS = ("input_ids", "attention_mask", "token_type_ids", "decoder_input_ids")


def output(model, inputs):
    out = model(**inputs)
    if hasattr(out, "logits"):
        return out.logits
    return torch.stack([out.start_logits, out.end_logits], dim=-1)


def bf16(t):
    return t.bfloat16().float()


def bf16_linear_output(model, inputs):
    """The model's output with every linear product in bf16 operands (f32 sums), by patching the
    linear modules' forwards, and every embedding table rounded to bf16 for the call."""
    patched = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            def forward(x, m=module):
                return torch.nn.functional.linear(bf16(x), bf16(m.weight), m.bias)
        elif type(module).__name__ == "Conv1D":  # GPT-2: weight [in, out]
            def forward(x, m=module):
                y = bf16(x).reshape(-1, x.shape[-1]) @ bf16(m.weight) + m.bias
                return y.reshape(*x.shape[:-1], -1)
        else:
            continue
        patched.append(module)
        module.forward = forward
    # Embedding tables (subclasses scale or offset their lookups: keep their forwards) are
    # rounded in place for the call and restored. BART's and Marian's position tables stay f32,
    # as in Lingo (a plain parameter there; Marian's sines are computed).
    tables = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)
              and "Positional" not in type(m).__name__]
    saved = [t.detach().clone() for t in tables]
    for t in tables:
        t.data.copy_(bf16(t.data))
    out = output(model, inputs)
    for t, v in zip(tables, saved):
        t.data.copy_(v)
    for module in patched:
        del module.forward
    return out


def main():
    torch.manual_seed(0)
    errors, bf16_errors = {}, {}
    for name, cls in MODELS.items():
        model = cls.from_pretrained(FIXTURES / name).eval()
        expected = load_file(FIXTURES / name / "expected.safetensors")
        inputs = {k[len("batch."):]: v.long() for k, v in expected.items()
                  if k.startswith("batch.") and k[len("batch."):] in INPUTS}
        with torch.no_grad():
            reference = output(model, inputs)
            quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            int8 = output(quantized, inputs)
            linear = bf16_linear_output(model, inputs)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                autocast = output(model, inputs).float()
        rel = lambda y: float((y - reference).norm() / reference.norm())
        errors[name] = rel(int8)
        bf16_errors[name] = {"bf16_linear": rel(linear), "bf16_autocast": rel(autocast)}
        print(f"{name}: int8 {errors[name]:.4f}, bf16 {bf16_errors[name]}")
    out = FIXTURES.parent / "int8_reference.json"
    record = {"torch": torch.__version__, "relative_error": errors, "bf16_relative_error": bf16_errors}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
