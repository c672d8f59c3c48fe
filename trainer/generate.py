"""Text generation from a checkpoint: a sanity check that the model really learned.

Each new token is sampled from the softmax of the last position's logits divided by
the temperature, among the top-k (Fan et al. 2018); temperature 0 takes the argmax.
The context is the last ``seq`` tokens, a window that slides as the text grows, so any
length can be generated; with no KV cache every token costs one forward pass over the
window (this is a check, not a server), so at most ``MAX_TOKENS`` are generated.
"""

from __future__ import annotations

import numpy as np

from fpcore.errors import SpecError, check_float, check_int

from .checkpoint import read_arrays, read_header
from .data import BYTE_VOCAB, decode_bytes, encode_bytes
from .gpt import Activations, gpt_forward
from .memory import check_fits, training_need
from .params import allocate

MAX_TOKENS = 10_000


def prompt_tokens(prompt: str, vocab: int) -> list[int]:
    """The prompt as token ids: its UTF-8 bytes for a byte-level model, else token ids
    written as whole numbers separated by spaces (no tokenizer ships with fugakuperf)."""
    if vocab == BYTE_VOCAB:
        return [int(t) for t in encode_bytes(prompt)]
    ids = []
    for i, word in enumerate(prompt.split()):
        if not word.isascii() or not word.isdigit():
            raise SpecError("prompt", f"this model's vocabulary is {vocab}, not bytes: give "
                                      f"token ids separated by spaces; word {i + 1} is "
                                      f"{word[:40]!r}")
        ids.append(check_int("prompt", int(word), lo=0, hi=vocab - 1))
    return ids


def next_token(logits: np.ndarray, temperature: float, top_k: int, rng) -> int:
    """Sample from softmax(logits / temperature) among the top_k (0: all); temperature 0
    takes the argmax. The largest logit is subtracted before dividing, so a tiny
    temperature cannot overflow into inf - inf."""
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64)
    if 0 < top_k < len(z):
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z < cut, -np.inf, z)
    with np.errstate(over="ignore", under="ignore"):
        p = np.exp((z - z.max()) / temperature)
    return int(rng.choice(len(p), p=p / p.sum()))


def generate(path, prompt: str = "", n_tokens: int = 200, temperature: float = 0.8,
             top_k: int = 40, seed: int = 0) -> dict:
    n_tokens = check_int("tokens", n_tokens, hi=MAX_TOKENS)
    temperature = check_float("temperature", temperature, lo=0.0, lo_open=False)
    top_k = check_int("top_k", top_k, lo=0)
    c = read_header(path, field="checkpoint")
    model = c.model
    check_fits(training_need(model, 1, optimizer=False), f"running {model.name}",
               field="checkpoint")
    context = prompt_tokens(prompt, model.vocab)
    params = allocate(model)
    read_arrays(c, {"params": params.buffer}, field="checkpoint")
    byte_level = model.vocab == BYTE_VOCAB
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
        context.append(next_token(acts.logits[0, -1], temperature, top_k, rng))
    new = context[start:]
    return {"checkpoint": str(c.path), "step": c.step, "prompt": prompt,
            "tokens": new, "text": (prompt + decode_bytes(new)) if byte_level else None}
