"""The server a Python user would write instead of `lingo serve`: a minimal FastAPI app on uvicorn
serving a model folder with `transformers` — `/v1/completions` (streamed with server-sent events,
token by token with the KV cache, as `lingo serve` streams), `/v1/embeddings` (mean pooling, unit
length if the folder is a sentence-transformers one) and `/health`. `lingo bench serve` starts it
beside Lingo's server and sends both the same load.

    pip install torch transformers fastapi uvicorn
    python tools/serve_reference.py --model DIR --port 8081
"""

import argparse
import json
import os
import time

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--port", type=int, default=8081)
parser.add_argument("--kind", choices=["generate", "embed"], required=True)
args = parser.parse_args()

torch.set_grad_enabled(False)
if os.path.exists(os.path.join(args.model, "tokenizer_config.json")):
    tokenizer = AutoTokenizer.from_pretrained(args.model)
else:
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.model, "tokenizer.json"))
if args.kind == "generate":
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
else:
    model = AutoModel.from_pretrained(args.model, dtype=torch.float32).eval()
normalize = "Normalize" in open(os.path.join(args.model, "modules.json")).read() if os.path.exists(
    os.path.join(args.model, "modules.json")) else False
eos = model.config.eos_token_id
app = FastAPI()


@app.get("/health")
def health():
    return {"status": "ok"}


def tokens(prompt, max_tokens, temperature, ignore_eos, seed):
    """Yields each new token id, one forward per token after the prompt's."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([tokenizer.encode(prompt)])
    past = None
    for _ in range(max_tokens):
        out = model(input_ids=ids, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1]
        if temperature == 0:
            next_id = int(logits.argmax())
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        yield next_id
        if next_id == eos and not ignore_eos:
            return
        ids = torch.tensor([[next_id]])


@app.post("/v1/completions")
async def completions(request: Request):
    body = await request.json()
    settings = (body["prompt"], body.get("max_tokens", 16), body.get("temperature", 1.0),
                body.get("ignore_eos", False), body.get("seed", 0))
    created = int(time.time())

    def chunk(text, finish=None):
        return "data: " + json.dumps({"object": "text_completion", "created": created, "model": args.model,
                                      "choices": [{"index": 0, "text": text, "finish_reason": finish}]}) + "\n\n"

    if body.get("stream"):
        def events():
            generated, shown = [], ""
            for t in tokens(*settings):
                generated.append(t)
                text = tokenizer.decode(generated, skip_special_tokens=True)
                yield chunk(text[len(shown):])
                shown = text
            yield chunk("", "length")
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")
    generated = list(tokens(*settings))
    return {"object": "text_completion", "created": created, "model": args.model,
            "choices": [{"index": 0, "text": tokenizer.decode(generated, skip_special_tokens=True),
                         "finish_reason": "length"}],
            "usage": {"completion_tokens": len(generated)}}


@app.post("/v1/embeddings")
def embeddings(body: dict):
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return JSONResponse({"object": "list", "data": [
        {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(pooled.tolist())]})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
