"""Click options shared by the prediction commands (model, system, layout pins).

Only click is imported here: ``fugakuperf --help`` must stay instant.
"""

from __future__ import annotations

from pathlib import Path

import click


class _Checked(click.ParamType):
    """A value parsed and checked by fpcore (the one validation layer); a bad one is a
    usage error naming the option. Subclasses give ``parse(value, field)``."""

    def convert(self, value, param, ctx):
        from fpcore.errors import SpecError
        field = param.opts[0] if param is not None and param.opts else "value"
        try:
            return self.parse(value, field)
        except SpecError as e:
            self.fail(e.message, param, ctx)


class Registered(click.Choice):
    """The names of a registry of perfmodel (schedules, precisions, recompute modes),
    read when first needed (a command's --help or its parsing), so that importing the
    options stays as light as click. ``registry``: "module:attribute", an iterable of
    names."""

    def __init__(self, registry: str):
        self.registry = registry
        self.case_sensitive = True

    @property
    def choices(self) -> tuple:
        import importlib
        module, name = self.registry.split(":")
        return tuple(getattr(importlib.import_module(module), name))

    @choices.setter
    def choices(self, value) -> None:       # click.Choice's own __init__ is not used
        raise AttributeError("the choices are the registry's")


class Number(_Checked):
    """A count written as 13e9, 13B, 380 B or 1.5T."""

    name = "NUMBER"

    def parse(self, value, field):
        from fpcore.errors import check_float
        from fpcore.units import parse_count
        if isinstance(value, (int, float)):
            return check_float(field, value, lo=None)
        return parse_count(value, field)


class ByteSize(_Checked):
    """Bytes written as 8, 8B, 4KB (4,000), 4MiB (4,194,304) or 1e9."""

    name = "BYTES"

    def parse(self, value, field):
        from fpcore.errors import SpecError, check_float
        from fpcore.units import parse_bytes
        if isinstance(value, (int, float)):
            value = check_float(field, value, lo=0.0, lo_open=False)
        else:
            value = parse_bytes(value, field)
        value = check_float(field, value, lo=0.0, lo_open=False, unit="bytes")
        if not value.is_integer():
            raise SpecError(field, f"must be a whole number of bytes; got {value:g}")
        return value


class Real(_Checked):
    """A finite number in a range (NaN and infinities are refused, unlike
    click.FloatRange, whose comparisons let NaN through)."""

    name = "X"

    def __init__(self, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False, unit: str = ""):
        self.lo, self.hi, self.lo_open, self.hi_open, self.unit = lo, hi, lo_open, hi_open, unit

    def parse(self, value, field):
        from fpcore.errors import SpecError, check_float
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise SpecError(field, f"must be a number, got {value[:80]!r}") from None
        return check_float(field, value, lo=self.lo, hi=self.hi, lo_open=self.lo_open,
                           hi_open=self.hi_open, unit=self.unit)


class IntList(click.ParamType):
    """Comma-separated positive integers, e.g. 384,1536,13824."""

    name = "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        out = []
        for part in str(value).replace(" ", "").split(","):
            try:
                n = int(part.replace("_", ""))
            except ValueError:
                self.fail(f"must be whole numbers separated by commas; got {value!r}", param, ctx)
            if n <= 0:
                self.fail(f"must be positive; got {n}", param, ctx)
            out.append(n)
        return out


NUMBER = Number()
BYTES = ByteSize()
INT_LIST = IntList()


def model_options(f):
    opts = [
        click.option("--params", type=NUMBER, help="Target parameter count (13e9, 13B). The "
                     "shape follows the documented sizing rule; the exact count is reported."),
        click.option("--from-megatron", metavar="SCRIPT|ARGS",
                     help="A Megatron-LM / Megatron-DeepSpeed launch script, or its argument "
                          "list in quotes: the model, layout and batch it runs (flags it "
                          "ignores are said on stderr)."),
        click.option("--model", "model_name", metavar="PRESET|FILE",
                     help="A model preset (see `fugakuperf presets`), a TOML file, or a "
                          "Hugging Face config.json (GPT-2, GPT-NeoX, Llama, Mistral, Qwen2)."),
        click.option("--layers", "--num-layers", type=click.IntRange(min=1), help="Transformer layers."),
        click.option("--hidden", "--hidden-size", type=click.IntRange(min=1), help="Hidden size."),
        click.option("--heads", "--num-attention-heads", type=click.IntRange(min=1), help="Attention heads."),
        click.option("--kv-heads", "--num-query-groups", type=click.IntRange(min=1), help="Key/value heads (GQA)."),
        click.option("--ffn", "--ffn-hidden-size", type=click.IntRange(min=1), help="FFN size (default 4 x hidden)."),
        click.option("--vocab", type=click.IntRange(min=1), help="Vocabulary (default 49152)."),
        click.option("--seq", "--seq-length", type=click.IntRange(min=1), help="Sequence length (default 2048)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def system_options(f):
    opts = [
        click.option("--system", "system_name", default="fugaku", show_default=True,
                     metavar="PRESET|FILE|host",
                     help="System preset or TOML file; `host` is the machine a --calibration "
                          "file was measured on."),
        click.option("--calibration", "calibration_path", metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="Calibration file (`fugakuperf calibrate`): measured FP32 compute "
                          "rates, and collectives if measured under mpiexec, overlay the "
                          "system preset. Only a file measured on the system's node (its CPU, "
                          "all its cores, its ranks per node) is applied; see "
                          "--force-calibration."),
        click.option("--force-calibration", is_flag=True, default=None,
                     help="Apply --calibration even when it was measured on another machine "
                          "than the system's node (every output then says so)."),
        click.option("--stack", metavar="NAME",
                     help="Software stack of the system preset (`fugakuperf presets --system "
                          "fugaku` lists them): fugaku-llm, Fugaku-LLM's tuned stack (default), "
                          "or deepspeedfugaku-2023, the early PyTorch port whose runs are "
                          "logged in the validation data."),
        click.option("--clock", type=Real(lo=0, lo_open=True, unit="GHz"), help="Clock in GHz (Fugaku: 2.0 or 2.2; default 2.2)."),
        click.option("--eco/--no-eco", default=None,
                     help="Eco mode: one FP pipe, half the FP peak (default off)."),
        click.option("--ppn", type=click.IntRange(min=1), help="Ranks per node (Fugaku: 1, or 4 = one per CMG)."),
        click.option("--network", "network_model",
                     type=Registered("topologies.interface:NETWORK_MODELS"),
                     help="Network model: routed flows sharing links on the job's torus "
                          "shape (default), or contention-free alpha-beta."),
        click.option("--mapping", type=Registered("topologies.interface:MAPPINGS"),
                     help="Rank placement: tofu (TP in the Tofu unit, PP along Z; default) "
                          "or linear rank order."),
        click.option("--shape", metavar="SHAPE",
                     help="The job's torus shape instead of the allocator's: physical "
                          "24x2x24x2x3x2 or virtual 48x6x48:torus."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def layout_options(f):
    opts = [
        click.option("--tp", "--tensor-model-parallel-size", type=click.IntRange(min=1),
                     help="Pin tensor parallelism (it must divide heads, kv_heads and ffn)."),
        click.option("--pp", "--pipeline-model-parallel-size", type=click.IntRange(min=1), help="Pin pipeline parallelism."),
        click.option("--dp", type=click.IntRange(min=1), help="Pin data parallelism."),
        click.option("--micro-batch", "--micro-batch-size", type=click.IntRange(min=1), help="Pin the micro-batch size."),
        click.option("--schedule", type=Registered("perfmodel.schedules:SCHEDULES"),
                     help="Pin the pipeline schedule (`fugakuperf presets` says what each "
                          "is and the least pp frameworks run it on)."),
        click.option("--partition", type=Registered("perfmodel.partitions:PARTITIONS"),
                     help="Pin how the pipeline places the layers on its stages: even (pp "
                          "divides the layers), or DeepSpeed's uneven fills where the stack "
                          "runs them (`fugakuperf presets` says what each does)."),
        click.option("--virtual-stages", "--virtual-pipeline-model-parallel-size", type=click.IntRange(min=1),
                     help="Pin virtual stages per rank (for a schedule that runs them; "
                          "`fugakuperf presets` says which)."),
        click.option("--zero", type=click.IntRange(0, 3),
                     help="Pin the ZeRO stage: the states sharded over dp, run as the stack's "
                          "framework names it (fsdp 3: FULL_SHARD; megatron 1: distributed "
                          "optimizer; `fugakuperf presets` lists them); 2 and 3 only without "
                          "pipeline parallelism, as DeepSpeed."),
        click.option("--shard-ranks", type=click.IntRange(min=0),
                     help="Pin a sharding group: ZeRO's shards split over K data-parallel "
                          "ranks, a replica per group (FSDP HYBRID_SHARD, where K is "
                          "usually a node's ranks); 0: over all of dp."),
        click.option("--recompute", "--recompute-granularity", type=Registered("perfmodel.layout:RECOMPUTE"),
                     help="Pin activation recomputation."),
        click.option("--recompute-stages", type=click.IntRange(min=1),
                     help="With --recompute full: only the first K pipeline stages recompute "
                          "(Fugaku-LLM: 4 of 8)."),
        click.option("--sequence-parallel/--no-sequence-parallel", default=None,
                     help="Pin sequence parallelism."),
        click.option("--precision", type=Registered("perfmodel.precisions:PRECISIONS"),
                     help="Training precision (default fp32; fp16 = mixed precision)."),
        click.option("--cp", "--context-parallel-size", type=click.IntRange(min=1),
                     help="Pin context parallelism: each sequence split over CP ranks, "
                          "their keys and values passed round a ring (Megatron-Core's; "
                          "2 x CP must divide seq). Searched (powers of two up to 32) for "
                          "sequences of 8192 tokens or more, else 1."),
        click.option("--ep", "--expert-model-parallel-size", type=click.IntRange(min=1),
                     help="Pin expert parallelism (a mixture of experts: the experts split "
                          "over EP data-parallel ranks; it must divide the experts and dp)."),
        click.option("--expert-tp/--no-expert-tp", "expert_tp", default=None,
                     help="Pin how a mixture of experts' routed experts sit on the TP ranks: "
                          "split as the dense MLP is (--expert-tp; Megatron-Core, and "
                          "Megatron-DeepSpeed with --enable-expert-tensor-parallelism) or "
                          "whole on every TP rank, each running 1/TP of their tokens "
                          "(--no-expert-tp; DeepSpeed's default). Searched where the stack "
                          "runs both (`fugakuperf presets` says)."),
        click.option("--moe-load", type=click.FloatRange(1.0, 1000.0),
                     help="A mixture of experts' busiest expert-parallel rank's tokens over "
                          "the mean (default 1: evenly routed, as published benchmarks "
                          "force it; 1.5 prices a router that sends it half again as many)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def pins_from(kw: dict) -> dict:
    """The layout fields the user pinned; pops every layout option from ``kw``."""
    from perfmodel.layout import PINNABLE
    values = {n: kw.pop(n, None) for n in PINNABLE}
    return {n: v for n, v in values.items() if v is not None}


def resolve_inputs(kw: dict):
    """(model, system) from the shared options; pops them from ``kw``. With
    ``--from-megatron``, the launch's layout and batch fill the pins the user left
    unset (perfmodel.megatron), and the flags it ignored are said on stderr."""
    from perfmodel.inputs import resolve_model
    shape = {k: kw.pop(k) for k in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab",
                                    "seq")}
    launch = kw.pop("from_megatron", None)
    if launch is not None:
        return _from_megatron(launch, kw, shape), system_from(kw)
    model = resolve_model(params=kw.pop("params"), model=kw.pop("model_name"), **shape)
    return model, system_from(kw)


def _from_megatron(launch: str, kw: dict, shape: dict):
    from fpcore.errors import SpecError
    from perfmodel.megatron import read_megatron
    from perfmodel.model import ModelSpec
    from perfmodel.sizing import DEFAULT_SEQ, DEFAULT_VOCAB
    for name in ("params", "model_name"):
        if kw.pop(name) is not None:
            raise SpecError("from-megatron", f"gives the model; leave out --"
                                             f"{name.replace('_name', '')}")
    fields, pins, batch, ignored, where = read_megatron(launch)
    fields = {**fields, **{k: v for k, v in shape.items() if v is not None}}
    fields.setdefault("vocab", DEFAULT_VOCAB)       # a tokenizer file gives it, not a flag
    fields.setdefault("seq", DEFAULT_SEQ)
    try:
        model = ModelSpec(name=f"megatron launch ({Path(where).name})",
                          source=f"Megatron-LM arguments of {where}", **fields)
    except SpecError as e:
        raise e.within(where) from None
    for key, value in pins.items():
        if key in kw and kw[key] is None:
            kw[key] = value
    if "global_batch" in kw and kw["global_batch"] is None:
        kw["global_batch"] = batch
    click.echo(f"[from-megatron] {where}: {model.params:,} parameters; pins "
               + (", ".join(f"{k}={v}" for k, v in pins.items()) or "none")
               + (f"; global batch {batch}" if batch else "")
               + (f"; flags ignored (they change nothing predicted, or the software stack "
                  f"states it): {' '.join(ignored)}" if ignored else ""), err=True)
    return model


def system_from(kw: dict):
    """The system from the shared system options; pops them from ``kw``."""
    from fpcore.errors import SpecError
    from perfmodel.inputs import resolve_system
    name, cal = kw.pop("system_name"), kw.pop("calibration_path", None)
    force = bool(kw.pop("force_calibration", None))
    if force and cal is None:
        raise SpecError("force-calibration", "applies to a --calibration FILE; none was given")
    options = dict(clock_ghz=kw.pop("clock"), eco=kw.pop("eco"), ppn=kw.pop("ppn"),
                   network_model=kw.pop("network_model"), mapping=kw.pop("mapping"),
                   shape=kw.pop("shape"), stack=kw.pop("stack", None))
    if name == "host":
        if cal is None:
            raise SpecError("system", "host is the machine of a calibration: give "
                                      "--calibration FILE (made by `fugakuperf calibrate`)")
        given = [k for k, v in options.items() if v is not None]
        if given:
            raise SpecError(given[0].replace("_ghz", ""), "does not apply to --system host "
                                                          "(its figures are measured)")
        from calibration import calfile
        from calibration.host import host_system
        return host_system(calfile.load(cal), cal)
    system = resolve_system(name, **options)
    if cal is not None:
        from calibration import calfile
        from calibration.host import mismatch, overlay
        data = calfile.load(cal)
        forced = force and mismatch(system, data) is not None
        system = overlay(system, data, cal, force=force)
        if forced:
            click.echo(f"warning: calibration: {system.calibration}", err=True)
    return system
