"""ModelSpec: the architecture of a decoder-only transformer, and its exact size.

The parameter count is defined here and nowhere else (one formula, one place); the
trainer's own count is tested equal to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

from fpcore.caches import KeptHash
from fpcore.errors import SpecError, check_bool, check_choice, check_float, check_int

NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")


@dataclass(frozen=True)
class ModelSpec(KeptHash):
    """A decoder-only transformer.

    ``ffn`` defaults to 4 * hidden for GELU models; SwiGLU models must give it.
    ``kv_heads`` defaults to ``heads`` (multi-head attention); fewer means
    grouped-query attention. ``dropout`` says whether dropout layers exist (they
    cost a 1-byte mask per element of activation memory, Korthikanti et al. 2022).

    A mixture of experts (``experts`` > 0; Shazeer et al. 2017, Fedus et al. 2022):
    its MoE layers replace the MLP by a router (hidden x experts, no bias) and
    ``experts`` MLPs of ``expert_ffn`` (default ``ffn``), of which each token runs
    ``top_k``, plus ``shared_experts`` MLPs of ``expert_ffn`` every token runs
    (DeepSeekMoE, Dai et al. 2024). The first ``first_dense`` layers are dense, and
    after them every ``moe_every``-th layer is an MoE layer (the others dense, of
    ``ffn``). ``capacity_factor`` caps the tokens an expert takes at that many times
    its even share (Fedus et al. 2022; the rest are dropped); 0 is dropless.
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
    experts: int = 0
    top_k: int = 0
    expert_ffn: int | None = None
    shared_experts: int = 0
    moe_every: int = 1
    first_dense: int = 0
    capacity_factor: float = 0.0
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
        self._check_experts()

    # a model keys the caches of its op lists, FLOPs and memory: its hash is kept
    __hash__ = KeptHash.__hash__

    def _check_experts(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen)
        set_("experts", check_int("experts", self.experts, lo=0, hi=100_000))
        moe_only = ("top_k", "expert_ffn", "shared_experts", "first_dense")
        if not self.experts:
            for name in moe_only:
                if getattr(self, name):
                    raise SpecError(name, "needs experts > 0 (a mixture of experts)")
            if self.capacity_factor:
                raise SpecError("capacity_factor", "needs experts > 0 (a mixture of experts)")
            set_("moe_every", check_int("moe_every", self.moe_every, hi=10_000))
            return
        set_("top_k", check_int("top_k", self.top_k, hi=self.experts))
        set_("expert_ffn", check_int("expert_ffn", self.ffn if self.expert_ffn is None
                                     else self.expert_ffn, hi=10_000_000))
        set_("shared_experts", check_int("shared_experts", self.shared_experts, lo=0, hi=1000))
        set_("moe_every", check_int("moe_every", self.moe_every, hi=self.layers))
        set_("first_dense", check_int("first_dense", self.first_dense, lo=0,
                                      hi=self.layers - 1))
        set_("capacity_factor", check_float("capacity_factor", self.capacity_factor, lo=0.0,
                                            lo_open=False, hi=1000.0, unit="(0: dropless)"))
        if 0 < self.capacity_factor < 1:
            raise SpecError("capacity_factor", f"must be 0 (dropless) or at least 1 (an "
                                               f"expert takes its even share); got "
                                               f"{self.capacity_factor}")

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
        return self._mlp_params(self.ffn)

    def _mlp_params(self, f: int) -> int:
        h = self.hidden
        if self.activation == "gelu":
            return 2 * h * f + ((f + h) if self.bias else 0)
        return 3 * h * f + ((2 * f + h) if self.bias else 0)   # gate, up, down

    @cached_property
    def layer_params(self) -> int:
        """Parameters of a dense layer."""
        return self.attention_params + self.mlp_params + 2 * self.norm_params

    # ------------------------------------------------------------------ experts
    def is_moe_layer(self, layer: int) -> bool:
        """Whether layer ``layer`` (0-based) is a mixture-of-experts layer."""
        return (self.experts > 0 and layer >= self.first_dense
                and (layer - self.first_dense) % self.moe_every == 0)

    def moe_layers_in(self, first: int, count: int) -> int:
        """The MoE layers among layers first .. first + count - 1."""
        if not self.experts or count <= 0:
            return 0
        before = lambda n: 0 if n <= self.first_dense else \
            -(-(n - self.first_dense) // self.moe_every)      # noqa: E731
        return before(first + count) - before(first)

    def routed_load(self, load: float) -> float:
        """The tokens the busiest expert rank takes over its even share, for a router
        whose busiest rank gets ``load`` times it: capped by the capacity factor (the
        rest dropped), none with 0 (dropless)."""
        return min(load, self.capacity_factor) if self.capacity_factor else load

    @cached_property
    def moe_layers(self) -> int:
        return self.moe_layers_in(0, self.layers)

    @cached_property
    def expert_params(self) -> int:
        """Parameters of one expert: an MLP of ``expert_ffn`` (0 for a dense model)."""
        return self._mlp_params(self.expert_ffn) if self.experts else 0

    @cached_property
    def router_params(self) -> int:
        return self.hidden * self.experts

    @cached_property
    def moe_layer_params(self) -> int:
        """Parameters of an MoE layer: attention, norms, router, every expert."""
        return (self.attention_params + 2 * self.norm_params + self.router_params
                + (self.experts + self.shared_experts) * self.expert_params)

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
        """Exact parameter count (Narayanan et al. 2021 Eq. 2 plus the final norm; an
        MoE layer counts every expert)."""
        moe = self.moe_layers
        return ((self.layers - moe) * self.layer_params + moe * self.moe_layer_params
                + self.embedding_params)

    @cached_property
    def active_params(self) -> int:
        """Parameters one token runs through: an MoE layer's router, its top_k experts
        and its shared ones (all of them for a dense model)."""
        idle = (self.experts - self.top_k) * self.expert_params
        return self.params - self.moe_layers * idle

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["params"] = self.params
        if self.experts:
            d["active_params"] = self.active_params
        return d

    def describe(self) -> str:
        moe = ""
        if self.experts:
            moe = (f"; {self.moe_layers} MoE layers of {self.experts} experts"
                   f"{f' + {self.shared_experts} shared' if self.shared_experts else ''}"
                   f" (ffn {self.expert_ffn}), top {self.top_k}: "
                   f"{self.active_params / 1e9:.2f} B active")
        return (f"{self.name}: {self.params / 1e9:.2f} B parameters ({self.params:,}), "
                f"{self.layers} layers x {self.hidden} hidden, {self.heads} heads"
                f"{'' if self.kv_heads == self.heads else f' ({self.kv_heads} kv)'}, "
                f"ffn {self.ffn}, vocab {self.vocab}, seq {self.seq}{moe}")
