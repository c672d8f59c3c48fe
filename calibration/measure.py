"""Measurements on the node this runs on: GEMMs, memory-bound kernels, trainer steps.

Every record is ``{"kind", "name", "ops": [perfmodel ops], "seconds", "calls"}``
(seconds per call), or for a whole training step ``{"kind": "step", "config": {...},
"seconds"}``. Seconds are the fastest of the repeats after one warm-up (timeit's
convention): on a shared machine other work only ever adds time, in bursts - on the
2-core VM this was built on, /proc/stat showed up to 28% of CPU time stolen by the
hypervisor during a run, and single steps took up to 7x their fastest time. A kernel
record is its fastest call, a step record its fastest step (medians are kept beside).
The kernels timed
are the trainer's own (trainer.kernels, numpy BLAS for GEMMs), so the fit describes
what the trainer and, on a real node, a framework of the same structure, run.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np

from perfmodel.model import ModelSpec
from perfmodel.ops import ACT_BYTES, FLOPS_PER_ELEMENT, gemm, mem

from .collectives import MAX_BYTES
from .opmap import both, kernel_ops, optimizer_op, to_dicts

E = ACT_BYTES["fp32"]

# Trainer configurations the fit uses (validate.py holds out others). Byte vocabulary.
FIT_CONFIGS = (         # tokens per micro-batch 64 ... 512, widths 64 ... 448
    dict(layers=2, hidden=128, heads=4, seq=128, micro_batch=2, global_batch=2),
    dict(layers=1, hidden=256, heads=4, seq=64, micro_batch=2, global_batch=4),
    dict(layers=3, hidden=64, heads=2, seq=256, micro_batch=2, global_batch=2),
    dict(layers=1, hidden=448, heads=7, seq=64, micro_batch=1, global_batch=1),
)
SWEEP = (64, 256, 1024)


def fastest(fn, repeat: int) -> tuple[float, float]:
    """The fastest and the median of ``repeat`` timed calls after one warm-up (and Numba
    compilation): the figure, and how far the repeats spread above it."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def record(kind: str, name: str, ops, seconds: float, median_seconds: float | None = None,
           calls: int = 1, **extra) -> dict:
    out = {"kind": kind, "name": name, "ops": to_dicts(ops), "seconds": seconds,
           "calls": calls, **extra}
    if median_seconds is not None:
        out["median_seconds"] = median_seconds
    return out


# ------------------------------------------------------------------ GEMMs
def gemm_shapes(model: ModelSpec | None, quick: bool) -> list[tuple[int, int, int, str]]:
    """(m, n, k, what): a size sweep, and the model's GEMMs on each TP split."""
    sweep = SWEEP
    shapes = [(m, n, k, "sweep") for m in sweep for n in sweep for k in sweep]
    if model is not None:
        tokens = min(model.seq, 256 if quick else 1024)   # rows: one micro-batch, capped
        h, f, v = model.hidden, model.ffn, model.vocab
        for t in tp_splits(model, quick):
            for what, n, k in (("qkv", (h + 2 * model.kv_dim) // t, h), ("proj", h, h // t),
                                ("fc1", f // t, h), ("fc2", h, f // t), ("logits", -(-v // t), h)):
                shapes.append((tokens, n, k, f"{model.name} {what} tp{t}"))
    return shapes


def tp_splits(model: ModelSpec, quick: bool) -> list[int]:
    """The TP sizes calibrate times the model on: those of 1, 2, 4, 6, 8 that divide its
    heads (quick: the first and the last only)."""
    splits = [t for t in (1, 2, 4, 6, 8) if model.heads % t == 0]
    return splits[::max(1, len(splits) - 1)] if quick else splits


def message_sizes(model: ModelSpec | None, quick: bool) -> list[int]:
    """Bytes of the model's own messages, one sequence per micro-batch, on each TP split
    gemm_shapes times: a layer's TP all-reduce (the activations, seq x hidden, float32)
    and a pipeline send (one TP rank's share of them); at most collectives.MAX_BYTES."""
    if model is None:
        return []
    activations = model.seq * model.hidden * E
    return sorted({min(MAX_BYTES, size) for t in tp_splits(model, quick)
                   for size in (activations, activations // t)})


COLD_BYTES = 64 * 2**20       # more than the last-level cache of common nodes


def measure_gemms(shapes, repeat: int, progress=None) -> list[dict]:
    """Each GEMM as the trainer meets it: cold. The operands rotate through enough
    copies (up to 16) to fill COLD_BYTES, so a timed call does not find its inputs in
    cache from the call before (a tight loop on one pair of matrices would)."""
    out = []
    rng = np.random.default_rng(0)
    for i, (m, n, k, what) in enumerate(shapes):
        if progress:
            progress(f"GEMM {m}x{n}x{k}", i, len(shapes))
        copies = int(min(16, max(2, COLD_BYTES // (4 * (m * k + n * k)))))
        a = [rng.random((m, k), dtype=np.float32) for _ in range(copies)]
        w = [rng.random((n, k), dtype=np.float32) for _ in range(copies)]
        c = np.empty((m, n), dtype=np.float32)
        turn = iter(range(1 << 62))

        def one():
            j = next(turn) % copies
            np.matmul(a[j], w[j].T, out=c)
        out.append(record("gemm", what, [gemm("matmul", m, n, k, E)], *fastest(one, repeat)))
    return out


# ------------------------------------------------------------------ memory-bound kernels
def measure_kernels(repeat: int, quick: bool, progress=None) -> list[dict]:
    """The trainer's memory-bound kernels, forward and backward together, at a few sizes."""
    from trainer import kernels as K
    from trainer.optim import AdamW, AdamWConfig, grad_norm
    from trainer.params import FlatTensors

    rng = np.random.default_rng(0)
    sizes = (1 << 16, 1 << 20) if quick else (1 << 16, 1 << 19, 1 << 22)
    out = []
    for i, n in enumerate(sizes):
        if progress:
            progress(f"memory-bound kernels, {n:,} elements", i, len(sizes))
        C = 256
        N = n // C
        x = rng.standard_normal((N, C), dtype=np.float32)
        w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
        o, dx = np.empty_like(x), np.zeros_like(x)
        mean, rstd = np.empty(N, np.float32), np.empty(N, np.float32)
        dw, db = np.zeros(C, np.float32), np.zeros(C, np.float32)

        def norm():
            K.layernorm_forward(o, mean, rstd, x, w, b)
            K.layernorm_backward(dx, dw, db, x, x, w, mean, rstd)
        out.append(record("kernel", "layernorm", both(
            mem("norm1", n, 1, 1, E, FLOPS_PER_ELEMENT["layernorm"])), *fastest(norm, repeat)))

        def gelu():
            K.gelu_forward(o, x)
            K.gelu_backward(dx, x, o)
        out.append(record("kernel", "gelu", both(
            mem("gelu", n, 1, 1, E, FLOPS_PER_ELEMENT["gelu"])), *fastest(gelu, repeat)))

        out.append(record("kernel", "residual", both(
            mem("residual1", n, 2, 1, E, FLOPS_PER_ELEMENT["residual"])),
            *fastest(lambda: np.add(x, o, out=dx), repeat)))

        # the tiled attention's softmax on one strip of scores (4 heads, a tile of queries
        # against every key), forward and the backward's elementwise passes, as the
        # trainer runs them between the strip's products (trainer.kernels)
        T = max(16, int(np.sqrt(n // 4)))
        tile = min(K.ATTENTION_TILE, T)
        scores = rng.random((4, tile, T), dtype=np.float32)
        strip, grad = np.empty_like(scores), np.empty_like(scores)
        lse, rows = np.empty((4, T), np.float32), rng.random((4, T), dtype=np.float32)
        scale = np.float32(0.125)

        def softmax():              # the last tile: its queries see every key
            strip[...] = scores
            K.causal_softmax_strip(strip, tile, T, T - tile, scale, lse)
            grad[...] = scores
            K.causal_softmax_strip_backward(grad, strip, tile, T, T - tile, rows, scale)
        out.append(record("kernel", "softmax", both(
            mem("softmax", 4 * tile * T, 1, 1, E, FLOPS_PER_ELEMENT["softmax"])),
            *fastest(softmax, repeat)))

        V = 256
        rows = max(1, n // V)
        logits = rng.standard_normal((1, rows, V), dtype=np.float32)
        probs, dlogits = np.empty_like(logits), np.zeros_like(logits)
        losses = np.empty((1, rows), np.float32)
        targets = rng.integers(0, V, (1, rows)).astype(np.int32)
        dloss = np.full((1, rows), 1.0 / rows, np.float32)

        def xent():
            K.crossentropy_forward(losses, probs, logits, targets)
            dlogits.fill(0.0)
            K.crossentropy_backward(dlogits, probs, targets, dloss)
        out.append(record("kernel", "crossentropy", both(
            mem("cross_entropy", rows * V, 1, 1, 4, FLOPS_PER_ELEMENT["cross_entropy"])),
            *fastest(xent, repeat)))

        Tp = 64
        Bp = max(1, N // Tp)
        wte = rng.standard_normal((256, C), dtype=np.float32)
        wpe = rng.standard_normal((Tp, C), dtype=np.float32)
        tok = rng.integers(0, 256, (Bp, Tp))
        enc, denc = np.empty((Bp, Tp, C), np.float32), rng.standard_normal((Bp, Tp, C),
                                                                            dtype=np.float32)
        dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)

        def encoder():
            K.encoder_forward(enc, tok, wte, wpe)
            K.encoder_backward(dwte, dwpe, denc, tok)
        out.append(record("kernel", "encoder", both(
            mem("embedding", Bp * Tp * C, 2, 1, E, 1)), *fastest(encoder, repeat)))

        params = FlatTensors(rng.standard_normal(4 * n, dtype=np.float32), {})
        params.views["w"] = params.buffer
        grads = rng.standard_normal(4 * n, dtype=np.float32) * 1e-3
        opt = AdamW(params, AdamWConfig())

        def optimizer():
            opt.step(params.buffer, grads, 1e-4, grad_norm(grads))
        out.append(record("kernel", "optimizer", [optimizer_op(4 * n)],
                          *fastest(optimizer, repeat)))
    return out


# ------------------------------------------------------------------ storage
def measure_checkpoint(directory: str, nbytes: int, repeat: int = 2) -> dict:
    """Write a checkpoint of ``nbytes`` (the trainer's format: three flat buffers, atomic,
    fsync'd) into ``directory`` and time it; the fastest write's bytes per second."""
    import tempfile

    from trainer.checkpoint import save

    n = max(1, nbytes // 12)                      # params, m and v: 4 bytes each
    buffers = [np.random.default_rng(i).random(n, dtype=np.float32) for i in range(3)]
    model = ModelSpec(layers=1, hidden=8, heads=1, vocab=8, seq=8, name="checkpoint-probe")
    times = []
    with tempfile.TemporaryDirectory(prefix=".fugakuperf-ckpt-", dir=directory) as tmp:
        for i in range(repeat):
            t = time.perf_counter()
            save(tmp, i, model, {}, *buffers, keep=1)
            times.append(time.perf_counter() - t)
    written = 3 * n * 4
    return {"kind": "checkpoint", "name": "checkpoint write", "ops": [], "calls": 1,
            "bytes": written, "seconds": min(times), "directory": str(directory)}


# ------------------------------------------------------------------ trainer steps
def trainer_model(cfg: dict) -> ModelSpec:
    shape = {k: v for k, v in cfg.items() if k not in ("micro_batch", "global_batch")}
    return ModelSpec(vocab=256, dropout=False, name="calibration", **shape)


def run_configs(configs, steps: int, comm=None, timed: bool = False, progress=None, seed=0,
                layouts=None):
    """Train every configuration ``steps`` times after one warm-up step each, taking
    the configurations in turn (round robin), so a slow spell of the machine falls on
    all of them alike. ``layouts``: each configuration's (tp, pp) (default: data
    parallel over the ranks; ``global_batch`` is per data-parallel replica). Returns
    [(cfg, trainer, step seconds)]."""
    from trainer.timers import Timers
    from trainer.train import Trainer, TrainSettings

    world = comm.size if comm is not None else 1
    runs = []
    for i, cfg in enumerate(configs):
        if progress:
            progress(f"trainer {label(cfg)}", i, len(configs))
        tp, pp = layouts[i] if layouts else (1, 1)
        tokens = np.random.default_rng(seed + i).integers(0, 256, 200_000).astype(np.uint16)
        run = Trainer(trainer_model(cfg), tokens,
                      TrainSettings(steps=steps + 1, micro_batch=cfg["micro_batch"],
                                    global_batch=cfg["global_batch"] * world // (tp * pp),
                                    val_fraction=0.0, tp=tp, pp=pp),
                      comm, timers=Timers() if timed else None)
        run.step()                                   # compiles and warms up
        if timed:
            run.timers.reset()
        runs.append((cfg, run, []))
    for _ in range(steps):
        for cfg, run, times in runs:
            times.append(run.step().seconds)
    return runs


def kernel_records(timer_records, model: ModelSpec, micro_batch: int, steps: int,
                   config: str) -> list[dict]:
    """Trainer timer records (trainer.timers) as fit records: GEMMs one by one, other
    kernels as forward + backward pairs, the optimizer phase as one."""
    out = []
    optimizer_s = 0.0
    pairs: dict[str, list] = {}
    for r in timer_records:
        if r["kernel"] in ("adamw", "grad_norm", "zero_grad"):
            optimizer_s += r["min_call_seconds"]
            continue
        ops = kernel_ops(r["name"], model, micro_batch)
        if ops is None:
            continue
        if r["kernel"].startswith("matmul"):
            out.append(record("trainer-kernel", r["name"], ops, r["min_call_seconds"],
                              r.get("median_call_seconds"), calls=max(1, r["calls"] // steps),
                              config=config))
            continue
        # Other kernels as forward + backward pairs: perfmodel's backward is 2x the
        # forward, the trainer's split differs (a cheap gather forward and a
        # scatter-add backward for the embedding); the pair is what a step adds up.
        pair = pairs.setdefault(r["kernel"].rsplit("_", 1)[0], [[], 0.0, 0])
        pair[0] += ops
        pair[1] += r["min_call_seconds"]
        pair[2] = max(1, r["calls"] // steps)
    for base, (ops, seconds, calls) in pairs.items():
        out.append(record("trainer-kernel", f"{base} forward+backward", ops, seconds,
                          calls=calls, config=config))
    if optimizer_s:
        out.append(record("trainer-kernel", "zero_grad+grad_norm+adamw",
                          [optimizer_op(model.params)], optimizer_s, config=config))
    return out


def step_record(cfg: dict, model: ModelSpec, times, ranks: int, params: int,
                micro_batches: int) -> dict:
    return {"kind": "step", "name": label(cfg), "config": dict(cfg), "ops": [],
            "seconds": min(times), "median_seconds": statistics.median(times), "calls": 1,
            "ranks": ranks, "params": params, "micro_batches": micro_batches,
            "model": dataclasses.asdict(model)}


def measure_steps(configs, steps: int, comm=None, progress=None) -> list[dict]:
    """Trainer steps with per-kernel timers: each kernel (per call) and each step."""
    out = []
    world = comm.size if comm is not None else 1
    for cfg, run, times in run_configs(configs, steps, comm, timed=True, progress=progress):
        out += kernel_records(run.timers.records(), run.model, cfg["micro_batch"], steps,
                              label(cfg))
        out.append(step_record(cfg, run.model, times, world, run.params.size,
                               run.sampler.micro_batches))
    return out


def records_from_training(rec, path: str = "record") -> list[dict]:
    """A ``fugakuperf train --measurements`` record as fit records: the trainer's own
    kernels and steps on a real run feed the calibration. Every value read is checked
    (a SpecError names ``path`` and the key)."""
    from fpcore.errors import SpecError
    if not isinstance(rec, dict) or rec.get("kind") != "fugakuperf-training-measurement":
        raise SpecError("record", f"{path}: not a `fugakuperf train --measurements` record")
    try:
        out = _training_records(rec, path)
    except SpecError as e:
        raise SpecError("record", f"{path}: damaged training record ({e.field}: "
                                  f"{e.message})") from None
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise SpecError("record", f"{path}: damaged training record ({e})") from None
    return out


def _training_records(rec: dict, path: str) -> list[dict]:
    from fpcore.errors import SpecError, check_int, check_list, check_table, require

    from .schema import check_measurement, seconds
    require("record", rec, ("model", "settings", "steps", "measured_steps", "kernels",
                            "parameters"))
    try:
        model = ModelSpec(**check_table("model", rec["model"])).replace(dropout=False)
    except SpecError as e:                         # the trainer has no dropout
        raise e.within("model") from None
    except TypeError as e:
        raise SpecError("model", f"is not a model description ({e})") from None
    settings = check_table("settings", rec["settings"])
    require("settings", settings, ("micro_batch", "world", "global_batch"))
    mb = check_int("settings.micro_batch", settings["micro_batch"], hi=10**7)
    world = check_int("settings.world", settings["world"], hi=10**7)
    global_batch = check_int("settings.global_batch", settings["global_batch"], hi=10**9)
    if global_batch % (world * mb):
        raise SpecError("settings.global_batch", f"{global_batch} is not a whole number of "
                                                 f"micro-batches of {mb} on {world} rank(s)")
    steps = check_list("steps", rec["steps"], min_len=1, max_len=10**7)
    times = [seconds(f"steps[{i}].seconds", check_table(f"steps[{i}]", s).get("seconds"))
             for i, s in enumerate(steps)]
    times = times[1:] if len(times) > 1 else times          # the first step compiles
    measured = max(1, check_int("measured_steps", rec["measured_steps"], lo=0, hi=10**9))
    params = check_int("parameters", rec["parameters"], hi=10**15)
    kernels = check_list("kernels", rec["kernels"], max_len=100_000)
    _check_kernels(kernels, "kernels")
    cfg = dict(layers=model.layers, hidden=model.hidden, heads=model.heads, seq=model.seq,
               micro_batch=mb, global_batch=global_batch // world)
    name = label(cfg) + f" ({path})"
    out = kernel_records(kernels, model, mb, measured, name)
    out.append(dict(step_record(cfg, model, times, world, params,
                                global_batch // (world * mb)), name=name))
    # the other ranks' kernels (each rank ran the same shapes on its own cores): every
    # rank of a many-node run is a measurement of the same kernels
    for i, part in enumerate(check_list("ranks", rec.get("ranks", []), max_len=10**7)):
        where = f"ranks[{i}]"
        part = check_table(where, part)
        rank = check_int(f"{where}.rank", part.get("rank"), lo=0, hi=10**7)
        if rank == 0:
            continue                               # rank 0's are ``kernels`` above
        theirs = check_list(f"{where}.kernels", part.get("kernels"), max_len=100_000)
        _check_kernels(theirs, f"{where}.kernels")
        out += [dict(r, rank=rank) for r in kernel_records(theirs, model, mb, measured,
                                                             f"{name} rank {rank}")]
    for i, r in enumerate(out):
        check_measurement(f"records[{i}] ({r.get('name')})", r)
    return out


def _check_kernels(kernels: list, field: str) -> None:
    """A record's kernel timers, each checked by name (``field[i].key``)."""
    from fpcore.errors import SpecError, check_int, check_str, require

    from .schema import seconds
    for i, k in enumerate(kernels):
        where = f"{field}[{i}]"
        require(where, k, ("name", "kernel", "calls", "min_call_seconds"))
        check_str(f"{where}.name", k["name"], max_len=200)
        check_str(f"{where}.kernel", k["kernel"], max_len=200)
        check_int(f"{where}.calls", k["calls"], hi=10**12)
        fastest_s = seconds(f"{where}.min_call_seconds", k["min_call_seconds"])
        if k.get("median_call_seconds") is not None:
            seconds(f"{where}.median_call_seconds", k["median_call_seconds"])
            if k["median_call_seconds"] < fastest_s:
                raise SpecError(f"{where}.median_call_seconds", "is below min_call_seconds")


def label(cfg: dict) -> str:
    """A trainer configuration in a few characters: L2 C128 H4 T128 b2 G2."""
    return (f"L{cfg['layers']} C{cfg['hidden']} H{cfg['heads']} T{cfg['seq']} "
            f"b{cfg['micro_batch']} G{cfg['global_batch']}")
