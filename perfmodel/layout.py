"""Layout: how one training run is parallelised (the execution half of the inputs).

``validate_layout`` checks a layout against a model and a rank count and names
the field that is wrong.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fpcore.errors import SpecError, check_bool, check_choice, check_int

from .model import ModelSpec

SCHEDULES = ("gpipe", "1f1b", "interleaved")
RECOMPUTE = ("none", "selective", "full")
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Layout:
    """Tensor (tp), pipeline (pp) and data (dp) parallel degrees and their settings.

    ``recompute_stages`` limits full recomputation to the first k pipeline stages
    (Fugaku-LLM recomputed on the first 4 of 8); ``None`` means every stage.
    ``precision`` fp16 is mixed precision (fp16 compute, fp32 master weights).
    ``overlap_dp`` lets the data-parallel gradient reduction overlap the last
    backward pass (bucketed, as DeepSpeed's overlap_comm and Megatron-LM's
    --overlap-grad-reduce do); it is a setting, not searched.
    """

    tp: int = 1
    pp: int = 1
    dp: int = 1
    micro_batch: int = 1
    global_batch: int = 1
    schedule: str = "1f1b"
    virtual_stages: int = 1
    zero: int = 0
    recompute: str = "none"
    recompute_stages: int | None = None
    sequence_parallel: bool = False
    precision: str = "fp32"
    overlap_dp: bool = True

    def __post_init__(self):
        for name, hi in (("tp", 1_000_000), ("pp", 100_000), ("dp", 10_000_000),
                         ("micro_batch", 1_000_000), ("global_batch", 1_000_000_000),
                         ("virtual_stages", 1_000)):
            check_int(name, getattr(self, name), hi=hi)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("zero", self.zero, lo=0, hi=3)
        check_choice("recompute", self.recompute, RECOMPUTE)
        check_bool("sequence_parallel", self.sequence_parallel)
        check_bool("overlap_dp", self.overlap_dp)
        check_choice("precision", self.precision, PRECISIONS)
        if self.schedule == "interleaved":
            if self.virtual_stages < 2:
                raise SpecError("virtual_stages", "must be >= 2 with the interleaved schedule")
            if self.pp < 2:
                raise SpecError("schedule", "interleaved needs pp >= 2")
        elif self.virtual_stages != 1:
            raise SpecError("virtual_stages", f"must be 1 with the {self.schedule} schedule "
                                              "(virtual stages need --schedule interleaved)")
        if self.recompute_stages is not None:
            check_int("recompute_stages", self.recompute_stages, lo=1, hi=self.pp)
            if self.recompute != "full":
                raise SpecError("recompute_stages", "needs recompute = full")
        if self.sequence_parallel and self.tp == 1:
            raise SpecError("sequence_parallel", "needs tp > 1")
        if self.global_batch % (self.dp * self.micro_batch):
            raise SpecError("global_batch", f"must be divisible by dp x micro_batch = "
                                            f"{self.dp} x {self.micro_batch}; got {self.global_batch}")

    @property
    def ranks(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per iteration (gradient accumulation steps)."""
        return self.global_batch // (self.dp * self.micro_batch)

    def stage_recomputes(self, stage: int) -> str:
        """The recompute mode pipeline stage ``stage`` (0-based) runs."""
        if self.recompute == "full" and self.recompute_stages is not None:
            return "full" if stage < self.recompute_stages else "none"
        return self.recompute

    def replace(self, **changes) -> "Layout":
        return dataclasses.replace(self, **changes)

    def with_recompute(self, recompute: str, stages: int | None = None) -> "Layout":
        """This layout with another recompute setting, which is valid for any layout
        (stages 1..pp with full): the search derives thousands, so they skip the
        field-by-field checks a user's layout gets."""
        if recompute not in RECOMPUTE or (stages is not None and not (
                recompute == "full" and 1 <= stages <= self.pp)):
            return self.replace(recompute=recompute, recompute_stages=stages)
        new = object.__new__(Layout)
        new.__dict__.update(self.__dict__, recompute=recompute, recompute_stages=stages)
        return new

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def label(self) -> str:
        """Compact one-line description, e.g. ``TP6 PP8 DP288 mb1 1f1b``."""
        parts = [f"TP{self.tp}", f"PP{self.pp}", f"DP{self.dp}", f"mb{self.micro_batch}",
                 self.schedule + (f"/v{self.virtual_stages}" if self.virtual_stages > 1 else "")]
        if self.zero:
            parts.append(f"ZeRO-{self.zero}")
        if self.recompute != "none":
            parts.append("rc:" + self.recompute +
                         (f"[:{self.recompute_stages}]" if self.recompute_stages else ""))
        if self.sequence_parallel:
            parts.append("SP")
        if self.precision != "fp32":
            parts.append(self.precision)
        return " ".join(parts)


def validate_layout(layout: Layout, model: ModelSpec, ranks: int | None = None) -> None:
    """Check that ``layout`` can run ``model`` (on ``ranks`` ranks, if given)."""
    if model.heads % layout.tp:
        raise SpecError("tp", f"must divide the number of heads ({model.heads}); got {layout.tp}")
    if model.kv_heads % layout.tp and layout.tp % model.kv_heads:
        raise SpecError("tp", f"must divide kv_heads ({model.kv_heads}) or be a multiple of it; "
                              f"got {layout.tp}")
    if model.ffn % layout.tp:
        raise SpecError("tp", f"must divide ffn ({model.ffn}); got {layout.tp}")
    chunks = layout.pp * layout.virtual_stages
    if model.layers % chunks:
        raise SpecError("pp", f"pp x virtual_stages ({layout.pp} x {layout.virtual_stages}) "
                              f"must divide the number of layers ({model.layers})")
    if layout.sequence_parallel and model.seq % layout.tp:
        raise SpecError("sequence_parallel", f"tp ({layout.tp}) must divide seq ({model.seq})")
    if layout.schedule == "interleaved" and layout.micro_batches % layout.pp:
        raise SpecError("global_batch", f"interleaved needs micro-batches per pipeline "
                                        f"({layout.micro_batches}) divisible by pp ({layout.pp})")
    if ranks is not None and layout.ranks != ranks:
        raise SpecError("dp", f"tp x pp x dp = {layout.tp} x {layout.pp} x {layout.dp} = "
                              f"{layout.ranks} must equal the number of ranks ({ranks})")
