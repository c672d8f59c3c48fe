"""Text generation from a checkpoint: a sanity check that the model really learned.

Each new token is sampled from the softmax of the last position's logits divided by
the temperature, among the top-k (Fan et al. 2018); temperature 0 takes the argmax.
The context is the last ``seq`` tokens (no KV cache: this is a check, not a server).
"""

from __future__ import annotations

import numpy as np

from .checkpoint import load
from .data import BYTE_VOCAB, decode_bytes, encode_bytes
from .gpt import Activations, gpt_forward
from .params import allocate


def generate(path, prompt: str = "", n_tokens: int = 200, temperature: float = 0.8,
             top_k: int = 40, seed: int = 0) -> dict:
    c = load(path)
    model = c.model
    params = allocate(model)
    params.buffer[...] = c.params
    byte_level = model.vocab == BYTE_VOCAB
    context = list(encode_bytes(prompt)) if (prompt and byte_level) else []
    if prompt and not byte_level:
        context = [int(t) for t in prompt.split()]       # token ids for other vocabularies
    if not context:
        context = [int(encode_bytes("\n")[0])] if byte_level else [0]
    rng = np.random.default_rng(seed)
    start = len(context)
    acts = None
    for _ in range(n_tokens):
        window = np.array(context[-model.seq:], dtype=np.int32)[None, :]
        if acts is None or not acts.fits(1, window.shape[1]):
            acts = Activations(model, 1, window.shape[1])
        gpt_forward(model, params, acts, window)
        logits = acts.logits[0, -1].astype(np.float64)
        if temperature == 0:
            nxt = int(np.argmax(logits))
        else:
            logits = logits / temperature
            if 0 < top_k < len(logits):
                cut = np.partition(logits, -top_k)[-top_k]
                logits = np.where(logits < cut, -np.inf, logits)
            p = np.exp(logits - logits.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
        context.append(nxt)
    new = context[start:]
    return {"checkpoint": str(c.path), "step": c.step, "prompt": prompt,
            "tokens": new, "text": (prompt + decode_bytes(new)) if byte_level else None}
