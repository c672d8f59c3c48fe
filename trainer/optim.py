"""AdamW on the flat parameter buffer, gradient clipping and the learning-rate schedule.

AdamW: Loshchilov & Hutter 2019 (decoupled weight decay) over Kingma & Ba 2015,
with bias correction. Defaults are Fugaku-LLM's (docs/facts.md, launch scripts): betas
(0.9, 0.95), weight decay 0.1, gradient clipping at global norm 1.0. Eps 1e-8 is
Adam's (Kingma & Ba 2015). As in Megatron-LM and GPT-2 training practice, weight
decay applies to the weight matrices and embeddings, not to biases or LayerNorm.

Schedule: linear warmup to ``lr`` over ``warmup`` steps, then cosine decay to
``min_lr`` at ``decay_steps`` (GPT-3, Brown et al. 2020, Sec. B; min_lr = lr / 10
there), flat afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from fpcore.errors import SpecError

from .params import FlatTensors

DECAYED = ("wte", "wpe", "lm_head")


def decays(name: str) -> bool:
    """Whether weight decay applies to the named tensor."""
    if name in DECAYED:
        return True
    if name.startswith("ln"):
        return False
    return not name.endswith("b")


@dataclass(frozen=True)
class AdamWConfig:
    lr: float = 6e-4                 # GPT-3 Small's peak rate (Brown et al. 2020, Table 2.1)
    min_lr: float | None = None      # default lr / 10
    warmup: int = 0
    decay_steps: int | None = None   # default: the run's steps
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip: float = 1.0                # global gradient norm; 0 turns clipping off

    def __post_init__(self):
        for field in ("lr", "eps"):
            if not getattr(self, field) > 0:
                raise SpecError(field, f"must be > 0; got {getattr(self, field)}")
        for field in ("beta1", "beta2"):
            if not 0 <= getattr(self, field) < 1:
                raise SpecError(field, f"must be in [0, 1); got {getattr(self, field)}")
        for field in ("weight_decay", "clip", "warmup"):
            if getattr(self, field) < 0:
                raise SpecError(field, f"must be >= 0; got {getattr(self, field)}")
        if self.min_lr is not None and not 0 <= self.min_lr <= self.lr:
            raise SpecError("min_lr", f"must be in [0, lr = {self.lr}]; got {self.min_lr}")

    def rate(self, step: int, steps: int) -> float:
        """Learning rate of 0-based ``step`` in a run of ``steps``."""
        min_lr = self.lr / 10 if self.min_lr is None else self.min_lr
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        end = self.decay_steps or steps
        if end <= self.warmup:
            return self.lr
        progress = min(1.0, (step - self.warmup) / (end - self.warmup))
        return min_lr + 0.5 * (self.lr - min_lr) * (1.0 + math.cos(math.pi * progress))


@njit(cache=True, parallel=True)
def _sum_squares(x):
    # float64 accumulation, a fixed split over threads (deterministic for a thread count)
    s = 0.0
    for i in prange(x.size):
        v = np.float64(x[i])
        s += v * v
    return s


def sum_squares(x: np.ndarray) -> float:
    """The sum of squares of a 1-D array, in float64."""
    return float(_sum_squares(x))


def grad_norm(grads: np.ndarray) -> float:
    return math.sqrt(_sum_squares(grads))


@njit(cache=True, parallel=True)
def adamw_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step, scale):
    # params, grads, m, v (n,) one contiguous segment; step counts from 1; grads * scale
    # is the clipped gradient. m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    # p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p)
    c1 = 1.0 - beta1 ** step
    c2 = 1.0 - beta2 ** step
    for i in prange(params.size):
        g = grads[i] * scale
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i] = mi
        v[i] = vi
        params[i] -= lr * ((mi / c1) / (math.sqrt(vi / c2) + eps) + weight_decay * params[i])


class AdamW:
    """AdamW over a FlatTensors parameter buffer; state is two more flat buffers."""

    def __init__(self, params: FlatTensors, config: AdamWConfig):
        self.config = config
        self.m = np.zeros_like(params.buffer)
        self.v = np.zeros_like(params.buffer)
        self.step_count = 0
        # contiguous (start, stop, decays) segments of the flat buffer, in buffer order
        base = params.buffer.__array_interface__["data"][0]
        item = params.buffer.itemsize
        self.segments = []
        for name, view in params.views.items():
            start = (view.__array_interface__["data"][0] - base) // item
            self.segments.append((start, start + view.size, decays(name)))

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float, norm: float) -> None:
        """One update with the pre-clipping global gradient norm ``norm``."""
        c = self.config
        self.step_count += 1
        scale = min(1.0, c.clip / (norm + 1e-6)) if c.clip > 0 else 1.0
        for start, stop, decay in self.segments:
            adamw_update(params[start:stop], grads[start:stop], self.m[start:stop],
                         self.v[start:stop], lr, c.beta1, c.beta2, c.eps,
                         c.weight_decay if decay else 0.0, self.step_count, scale)
