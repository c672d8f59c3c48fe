"""Choose an architecture for a requested parameter count (``--params N``).

The rule (docs/planning.md points here rather than repeating it):

1. Depth follows a power law fitted (least squares in log-log space) to the depth
   and size of 18 published GPT models: the GPT-3 family (Brown et al. 2020,
   Table 2.1) and the Megatron-LM scaling series (Narayanan et al. 2021, Table 1):
   ``depth(N) = 0.1500 * N ** 0.2425``.
2. Heads are 128 wide from 10 B parameters up (as in GPT-3 13B and larger,
   Megatron and Llama), with a head count that is a multiple of 4 (so tensor
   parallelism of 2 and 4 always divides it) and a depth that is a multiple of 4;
   below 10 B they are 64 wide (GPT-3 Small and Medium), with any head count and
   an even depth, since coarser steps cannot get within a few % of N at that
   size. FFN is 4 * hidden.
3. Among shapes with such a depth within [0.75, 1.33] x depth(N), those whose
   exact count is within 1% of N are kept and the one whose depth is nearest
   depth(N) wins; if none is within 1%, the count nearest N (relative) wins.
4. Everything else is the Fugaku-LLM architecture (docs/facts.md): GPT-2 style, pre-LN
   LayerNorm with bias, learned positions, GELU, biases, tied embeddings, vocabulary
   49,152 and sequence 2,048, unless the caller overrides vocab or seq.

The exact count of the chosen shape is reported, never N itself: the model is named
by it to three significant digits (``gpt-20.2B`` for a request of 20.861e9, which
gets 20,249,432,064 parameters), and its source keeps the requested N. Over [1e8, 1e13]
it is within 3.7% of N (worst near 12 B, where the 128-wide steps are coarsest).
"""

from __future__ import annotations

import math

from fpcore.errors import SpecError, check_float

from .model import ModelSpec

# (parameters, layers): Brown et al. 2020 Table 2.1 and Narayanan et al. 2021 Table 1.
PUBLISHED_DEPTHS = (
    (125e6, 12), (350e6, 24), (760e6, 24), (1.3e9, 24), (2.7e9, 32), (6.7e9, 32),
    (13e9, 40), (175e9, 96),
    (1.7e9, 24), (3.6e9, 30), (7.5e9, 36), (18.4e9, 40), (39.1e9, 48), (76.1e9, 60),
    (145.6e9, 80), (310.1e9, 96), (529.6e9, 105), (1008e9, 128),
)
DEPTH_COEFF = 0.1500     # fitted to PUBLISHED_DEPTHS (tests refit and compare)
DEPTH_EXPONENT = 0.2425
MIN_PARAMS, MAX_PARAMS = 1e8, 1e13
DEFAULT_VOCAB = 49_152   # Fugaku-LLM (docs/facts.md)
DEFAULT_SEQ = 2048       # Fugaku-LLM (docs/facts.md)


def fitted_depth(n_params: float) -> float:
    return DEPTH_COEFF * n_params ** DEPTH_EXPONENT


def granularity(n_params: float) -> tuple[int, int, int]:
    """(head width, head-count step, depth step) for ``n_params`` parameters."""
    return (128, 4, 4) if n_params >= 1e10 else (64, 1, 2)


def model_for_params(n_params: float, *, vocab: int = DEFAULT_VOCAB,
                     seq: int = DEFAULT_SEQ) -> ModelSpec:
    """The architecture the documented rule gives for ``n_params`` parameters."""
    n_params = check_float("params", n_params)
    if not MIN_PARAMS <= n_params <= MAX_PARAMS:
        raise SpecError("params", f"must be between {MIN_PARAMS:.0e} and {MAX_PARAMS:.0e}, "
                                  f"got {n_params:.3g}")
    target = fitted_depth(n_params)
    head_dim, step, depth_step = granularity(n_params)
    shapes = []   # (relative count error, relative depth error, layers, heads)
    for layers in range(depth_step * math.ceil(0.75 * target / depth_step),
                        int(1.33 * target) + 1, depth_step):
        # Solve 12 l h^2 + (V + s) h = N for h, then look at the head counts around it.
        a, b = 12 * layers, vocab + seq
        h = (-b + math.sqrt(b * b + 4 * a * n_params)) / (2 * a)
        guess = step * round(h / head_dim / step)
        for heads in range(max(step, guess - 2 * step), guess + 3 * step, step):
            count = _shape(layers, heads, head_dim, vocab, seq).params
            shapes.append((abs(count / n_params - 1), abs(math.log(layers / target)),
                           layers, heads))
    close = [s for s in shapes if s[0] <= 0.01]
    _, _, layers, heads = (min(close, key=lambda s: s[1]) if close else min(shapes))
    spec = _shape(layers, heads, head_dim, vocab, seq)
    return spec.replace(name=f"gpt-{_short(spec.params)}",
                        source=f"fugakuperf --params rule (perfmodel/sizing.py) for "
                               f"{n_params:,.0f} parameters requested")


def _shape(layers: int, heads: int, head_dim: int, vocab: int, seq: int) -> ModelSpec:
    return ModelSpec(layers=layers, hidden=head_dim * heads, heads=heads, vocab=vocab, seq=seq)


def _short(n: float) -> str:
    """``n`` to three significant digits in M, B or T (12,847,728,640 -> 12.8B)."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        x = float(f"{n / div:.3g}")
        if x >= 1:
            return f"{x:g}{suffix}"
    return f"{n:.3g}"
