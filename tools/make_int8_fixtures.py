"""Reference for Lingo's int8 tests: how far PyTorch's dynamic int8 quantization
(`torch.ao.quantization.quantize_dynamic` of every nn.Linear, qint8 weights) moves each tiny
fixture model's output on the fixture's padded batch, as ||int8 - f32|| / ||f32||.

crates/lingo-models/tests/quantized.rs checks Lingo's int8 model is no further from f32 than this.

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


def main():
    torch.manual_seed(0)
    errors = {}
    for name, cls in MODELS.items():
        model = cls.from_pretrained(FIXTURES / name).eval()
        expected = load_file(FIXTURES / name / "expected.safetensors")
        inputs = {k[len("batch."):]: v.long() for k, v in expected.items()
                  if k.startswith("batch.") and k[len("batch."):] in INPUTS}
        with torch.no_grad():
            reference = output(model, inputs)
            quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            int8 = output(quantized, inputs)
        errors[name] = float((int8 - reference).norm() / reference.norm())
        print(f"{name}: {errors[name]:.4f}")
    out = FIXTURES.parent / "int8_reference.json"
    out.write_text(json.dumps({"torch": torch.__version__, "relative_error": errors}, indent=2) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
