"""ModelSpec: the architecture of a decoder-only transformer, and its exact size.

The parameter count is defined here and nowhere else (one formula, one place); the
trainer's own count is tested equal to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

from fpcore.errors import SpecError, check_bool, check_choice, check_int

NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer.

    ``ffn`` defaults to 4 * hidden for GELU models; SwiGLU models must give it.
    ``kv_heads`` defaults to ``heads`` (multi-head attention); fewer means
    grouped-query attention. ``dropout`` says whether dropout layers exist (they
    cost a 1-byte mask per element of activation memory, Korthikanti et al. 2022).
    """

    layers: int
    hidden: int
    heads: int
    vocab: int
    seq: int
    ffn: int | None = None
    kv_heads: int | None = None
    tied_embeddings: bool = True
    norm: str = "layernorm"
    activation: str = "gelu"
    position: str = "learned"
    bias: bool = True
    dropout: bool = True
    name: str = "custom"
    source: str = ""

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen)
        set_("layers", check_int("layers", self.layers, hi=10_000))
        set_("hidden", check_int("hidden", self.hidden, hi=1_000_000))
        set_("heads", check_int("heads", self.heads, hi=100_000))
        set_("vocab", check_int("vocab", self.vocab, hi=100_000_000))
        set_("seq", check_int("seq", self.seq, hi=10_000_000))
        check_choice("norm", self.norm, NORMS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("position", self.position, POSITIONS)
        for flag in ("tied_embeddings", "bias", "dropout"):
            check_bool(flag, getattr(self, flag))
        if self.hidden % self.heads:
            raise SpecError("heads", f"must divide hidden ({self.hidden}); got {self.heads}")
        if self.ffn is None:
            if self.activation == "swiglu":
                raise SpecError("ffn", "is required for swiglu models (no standard default)")
            set_("ffn", 4 * self.hidden)
        set_("ffn", check_int("ffn", self.ffn, hi=10_000_000))
        kv = self.heads if self.kv_heads is None else self.kv_heads
        kv = check_int("kv_heads", kv, hi=self.heads)
        if self.heads % kv:
            raise SpecError("kv_heads", f"must divide heads ({self.heads}); got {kv}")
        set_("kv_heads", kv)

    # ------------------------------------------------------------------ sizes
    @cached_property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @cached_property
    def kv_dim(self) -> int:
        """Width of the K (and of the V) projection."""
        return self.kv_heads * self.head_dim

    @cached_property
    def norm_params(self) -> int:
        """Parameters of one normalisation layer (LayerNorm: weight and bias)."""
        return 2 * self.hidden if self.norm == "layernorm" else self.hidden

    @cached_property
    def attention_params(self) -> int:
        h, kv = self.hidden, self.kv_dim
        weights = h * h + 2 * h * kv + h * h          # Q, K, V, output projection
        biases = (h + 2 * kv + h) if self.bias else 0
        return weights + biases

    @cached_property
    def mlp_params(self) -> int:
        h, f = self.hidden, self.ffn
        if self.activation == "gelu":
            return 2 * h * f + ((f + h) if self.bias else 0)
        return 3 * h * f + ((2 * f + h) if self.bias else 0)   # gate, up, down

    @cached_property
    def layer_params(self) -> int:
        return self.attention_params + self.mlp_params + 2 * self.norm_params

    @cached_property
    def embedding_params(self) -> int:
        """Token embedding, learned positions, final norm and an untied LM head."""
        p = self.vocab * self.hidden + self.norm_params
        if self.position == "learned":
            p += self.seq * self.hidden
        if not self.tied_embeddings:
            p += self.vocab * self.hidden
        return p

    @cached_property
    def params(self) -> int:
        """Exact parameter count (Narayanan et al. 2021 Eq. 2 plus the final norm)."""
        return self.layers * self.layer_params + self.embedding_params

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["params"] = self.params
        return d

    def describe(self) -> str:
        return (f"{self.name}: {self.params / 1e9:.2f} B parameters ({self.params:,}), "
                f"{self.layers} layers x {self.hidden} hidden, {self.heads} heads"
                f"{'' if self.kv_heads == self.heads else f' ({self.kv_heads} kv)'}, "
                f"ffn {self.ffn}, vocab {self.vocab}, seq {self.seq}")
