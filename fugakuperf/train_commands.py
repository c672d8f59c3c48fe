"""``fugakuperf train`` and ``fugakuperf generate``: the reference trainer's commands.

Wiring only: the model, loop and checkpoints live in trainer/. Under ``mpiexec -n R``
every rank runs this command; rank 0 alone prints and writes.
"""

from __future__ import annotations

import sys
import time

import click

from fpcore.errors import SpecError
from fpcore.readers import dumps

from .options import Real, model_options

STOPPED_EXIT = 3
INTERRUPTED_EXIT = 130     # the shell's code for a run stopped by Ctrl-C (128 + SIGINT)


def resume_command(checkpoint: str, ranks: int, argv: list[str] | None = None) -> str:
    """This command line again, continuing from ``checkpoint`` (its own --resume, if
    any, replaced; under mpiexec with as many ranks)."""
    import shlex
    words, out = list(sys.argv[1:] if argv is None else argv), []
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        if w == "--resume":
            skip = True
            continue
        if not w.startswith("--resume="):
            out.append(w)
    line = shlex.join(["fugakuperf", *out, "--resume", checkpoint])
    return f"mpiexec -n {ranks} {line}" if ranks > 1 else line


def _resolve_train_model(kw: dict, data_path: str):
    """The model from the shape flags; byte-level text defaults to vocabulary 256."""
    from perfmodel.inputs import resolve_model
    from trainer.data import BYTE_VOCAB, is_shard
    shape = {k: kw.pop(k) for k in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "seq")}
    if kw.pop("from_megatron", None) is not None:
        raise SpecError("from-megatron", "applies to plan, simulate and report; train reads "
                                         "its model from --model, --params or the shape flags")
    params, preset = kw.pop("params"), kw.pop("model_name")
    if shape["vocab"] is None and params is None and preset is None and not is_shard(data_path):
        shape["vocab"] = BYTE_VOCAB
    return resolve_model(params=params, model=preset, **shape)


class _Progress:
    """One line per step (and per eval or checkpoint) on stderr, rank 0 only."""

    def __init__(self, enabled: bool, steps: int):
        self.enabled, self.steps, self.t0 = enabled, steps, time.perf_counter()
        self.first = None

    def __call__(self, kind: str, data) -> None:
        if not self.enabled:
            return
        if kind == "step":
            from reports.numbers import duration
            if self.first is None:
                self.first, self.t0 = data.step - 1, time.perf_counter() - data.seconds
            done = data.step - self.first
            left = (time.perf_counter() - self.t0) / done * (self.steps - data.step)
            click.echo(f"step {data.step:>6}/{self.steps}  loss {data.loss:7.4f}  "
                       f"lr {data.lr:.2e}  |g| {data.grad_norm:8.3f}  {data.seconds:6.2f} s  "
                       f"{data.tokens_per_s:9,.0f} tok/s  eta {duration(left)}", err=True)
        elif kind == "eval":
            click.echo(f"eval  step {data['step']}: held-out loss {data['loss']:.4f}", err=True)
        elif kind == "checkpoint":
            click.echo(f"checkpoint  {data['path']}", err=True)
        elif kind == "resume":
            click.echo(f"resumed from {data['path']} at step {data['step']}", err=True)
            if data.get("note"):
                click.echo(data["note"], err=True)


@click.command()
@model_options
@click.option("--data", "data_path", required=True, metavar="FILE",
              help="Training data: a UTF-8 text file (byte-level tokens, vocabulary 256) or an "
                   "llm.c token shard (uint16 or uint32 tokens, recognised by its header; a "
                   ".bin file without one is refused).")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="Optimizer steps to reach (a resumed run continues up to this step).")
@click.option("--micro-batch", "--micro-batch-size", type=click.IntRange(min=1), default=1,
              show_default=True,
              help="Sequences per forward/backward pass.")
@click.option("--global-batch", "--global-batch-size", type=click.IntRange(min=1),
              help="Sequences per optimizer step, over all ranks (default: micro-batch x ranks; "
                   "more means gradient accumulation).")
@click.option("--lr", type=Real(lo=0, lo_open=True), default=6e-4,
              show_default=True, help="Peak learning rate (GPT-3 Small's).")
@click.option("--min-lr", type=Real(lo=0), help="Final learning rate (default lr/10).")
@click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
              help="Linear warmup steps before the cosine decay.")
@click.option("--decay-steps", type=click.IntRange(min=1),
              help="Step at which the cosine decay reaches --min-lr (default: --steps).")
@click.option("--weight-decay", type=Real(lo=0), default=0.1, show_default=True,
              help="AdamW weight decay (Fugaku-LLM's).")
@click.option("--clip", type=Real(lo=0), default=1.0, show_default=True,
              help="Clip the global gradient norm to this (0: off; Fugaku-LLM's 1.0).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds the initialisation and the data sampling.")
@click.option("--eval-every", type=click.IntRange(min=0), default=0,
              help="Held-out loss every N steps (0: at the end only).")
@click.option("--val-fraction", type=Real(0, 1, hi_open=True), default=0.05,
              show_default=True, help="Tail of the data held out for evaluation.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False),
              help="Write checkpoints here (at the end, and every --checkpoint-every steps); "
                   "created if its folder exists. A folder holding another run's checkpoints "
                   "is refused unless --resume continues from one of them.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0,
              help="Also checkpoint every N steps (0: only at the end).")
@click.option("--stop-after", type=click.IntRange(min=1),
              help="Stop after N steps of this invocation, with a checkpoint in "
                   "--checkpoint-dir (for job time limits); --resume continues exactly.")
@click.option("--keep", type=click.IntRange(min=1), default=2, show_default=True,
              help="Checkpoints to keep.")
@click.option("--resume", metavar="PATH",
              help="Continue from a checkpoint file, or the newest in a directory; the run "
                   "continues exactly as if never interrupted. The model, batch, seed and "
                   "optimizer settings not given come from the checkpoint, and without "
                   "--steps it runs to the end of its learning-rate schedule.")
@click.option("--tp", "--tensor-model-parallel-size", type=click.IntRange(min=1), default=1,
              show_default=True,
              help="Tensor-parallel ranks (Megatron-LM's form: heads, MLP and vocabulary "
                   "split, an all-reduce after each row-parallel GEMM); under mpiexec the "
                   "ranks TP and --pp leave are data parallel. Checkpoints hold the whole "
                   "model.")
@click.option("--pp", "--pipeline-model-parallel-size", type=click.IntRange(min=1), default=1,
              show_default=True,
              help="Pipeline stages (each a contiguous share of the layers; the first embeds, "
                   "the last computes the loss), run over MPI point-to-point by --schedule.")
@click.option("--schedule", type=click.Choice(["1f1b", "gpipe", "interleaved"]),
              default="1f1b", show_default=True,
              help="The pipeline's schedule: the step lists perfmodel simulates "
                   "(perfmodel/schedules.py); interleaved needs --virtual-stages.")
@click.option("--virtual-stages", "--virtual-pipeline-model-parallel-size",
              type=click.IntRange(min=1), default=1, show_default=True,
              help="With --schedule interleaved: chunks of layers per stage (chunk c of "
                   "stage s is virtual stage c x pp + s, Megatron-LM's order).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Threads per rank for BLAS and the Numba kernels (default: the cores "
                   "other work leaves free, shared among this node's ranks).")
@click.option("--profile", is_flag=True, help="Print the per-kernel time table at the end.")
@click.option("--measurements", "measurements_path", type=click.Path(dir_okay=False),
              help="Write the measurement record (JSON, for calibration) to this file; it "
                   "records how busy the machine was (a warning says so when it was).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the measurement record as JSON on stdout (progress stays on stderr).")
def train(**kw):
    """Train a GPT with the reference trainer, measuring every kernel.

    \b
    Examples:
      fugakuperf train --layers 2 --hidden 64 --heads 4 --seq 64 --data corpus.txt \\
                       --steps 200 --micro-batch 8 --lr 3e-3 --checkpoint-dir ckpt
      fugakuperf generate --checkpoint ckpt --prompt "When in the Course"
      fugakuperf train --model fugaku-llm-13b --layers 1 --seq 512 --data corpus.bin \\
                       --steps 3 --profile            (a full-width Fugaku-LLM slice)
      mpiexec -n 2 fugakuperf train ... --global-batch 16   (data parallel)
      mpiexec -n 4 fugakuperf train ... --tp 2 --global-batch 16   (TP2 x DP2)
      mpiexec -n 4 fugakuperf train ... --tp 2 --pp 2 --global-batch 16   (TP2 x PP2)
    """
    from trainer.distributed import world
    from trainer.host import ContentionMeter, default_threads, node_ranks, set_threads
    from trainer.train import Interrupted, TrainingStopped, train as run

    comm = world()
    threads = kw.pop("threads")
    # the cores other work leaves free; rank 0's look holds for every rank
    threads = set_threads(threads or comm.broadcast(default_threads(comm.size)))
    lead = comm.rank == 0
    ctx = click.get_current_context()
    given = {name for name in kw if ctx.get_parameter_source(name) not in
             (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)}
    try:
        trainer, data_path, removed = _prepare(comm, kw, given)
    except SpecError:
        if not lead:                      # rank 0 says it, once
            sys.exit(2)
        raise
    model, settings = trainer.model, trainer.settings
    if lead:
        click.echo(f"training {model.name}: {model.layers} layers x {model.hidden}, "
                   f"{trainer.params.size:,} parameters, {trainer.n_tokens:,} tokens; "
                   f"global batch {trainer.sampler.global_batch} x {model.seq} on {comm.size} "
                   f"rank(s) x {threads} thread(s)", err=True)
        if removed:
            click.echo(f"removed {len(removed)} temporary file(s) left by killed writers: "
                       f"{', '.join(removed)}", err=True)
    meter = ContentionMeter(node_ranks(comm.size))
    try:
        result = run(trainer, checkpoint_dir=kw["checkpoint_dir"],
                     progress=_Progress(lead, settings.steps), stop_after=kw["stop_after"])
    except TrainingStopped as e:
        if lead:
            click.echo(f"error: {e}", err=True)
        sys.exit(STOPPED_EXIT)
    except Interrupted as e:
        if lead:
            click.echo(f"interrupted at step {e.step}" + (
                f"; checkpoint {e.checkpoint}; continue with: "
                f"{resume_command(e.checkpoint, comm.size)}" if e.checkpoint else
                "; nothing saved (no --checkpoint-dir)"), err=True)
        sys.exit(INTERRUPTED_EXIT)
    except SpecError as e:
        if comm.size > 1:                 # rank 0 alone failed (a checkpoint write): end all
            click.echo(f"error: {e}", err=True)
            comm.abort(2)
        raise
    window = meter.stop()
    from trainer.record import rank_timings
    ranks = comm.allgather(rank_timings(comm.rank, result))   # every rank's, to rank 0
    if not lead:
        return
    from perfmodel.ops import model_flops_per_iteration
    from trainer.record import measurement_record, profile_table
    flops = model_flops_per_iteration(trainer.model, trainer.sampler.global_batch)
    record = measurement_record(trainer, result, threads, comm, data_path, flops, ranks)
    record["contention"] = _contention(window, threads, node_ranks(comm.size), record)
    if kw["measurements_path"]:
        from fpcore.atomic import atomic_write
        atomic_write(kw["measurements_path"], (dumps(record, indent=2) + "\n").encode(),
                     field="measurements")
    if kw["profile"]:
        click.echo(profile_table(record), err=kw["as_json"])
    if kw["as_json"]:
        click.echo(dumps(record, indent=2))
    elif result.steps:
        last = result.steps[-1]
        click.echo(f"done: step {last.step}, loss {last.loss:.4f}"
                   + (f", held-out {result.evals[-1]['loss']:.4f}" if result.evals else "")
                   + (f"; checkpoint {result.checkpoint}" if result.checkpoint else ""))
    else:
        click.echo(f"nothing to do: the checkpoint is already at step {trainer.step_index}")


def _contention(window, threads: int, ranks: int, record: dict) -> dict:
    """How busy the machine was while it trained (calibration.contention), said on
    stderr when it may have slowed the timings."""
    import statistics

    from calibration.contention import assess, summary
    times = [s["seconds"] for s in record["steps"][1:]]      # the first step compiles
    spread = statistics.median(times) / min(times) if times and min(times) > 0 else None
    conditions = assess(window, threads, ranks, spread)
    if conditions["verdict"] in ("noisy", "contended"):
        click.echo(f"warning: while training, the machine was {summary(conditions)}; the "
                   f"step and kernel times describe it busy", err=True)
    return conditions


MODEL_KEYS = ("params", "model_name", "from_megatron", "layers", "hidden", "heads",
              "kv_heads", "ffn", "vocab", "seq")


def _settings_from(header, kw: dict, given: set) -> None:
    """A resumed run's settings the command line left out, from its checkpoint: the
    batch, seed, held-out share and optimizer it recorded, and (without --steps) the step
    its learning-rate schedule ends at."""
    s, opt = header.settings, header.settings["optimizer"]
    recorded = {"micro_batch": s["micro_batch"], "global_batch": s["global_batch"],
                "seed": s["seed"], "val_fraction": s["val_fraction"], "lr": opt["lr"],
                "min_lr": opt["min_lr"], "warmup": opt["warmup"],
                "weight_decay": opt["weight_decay"], "clip": opt["clip"],
                "decay_steps": opt["decay_steps"], "steps": s["decay_steps"]}
    for key, value in recorded.items():
        if key not in given:
            kw[key] = value


def _prepare(comm, kw: dict, given: set = frozenset()):
    """Every input checked and the trainer built, before any training: the outputs can
    be written, the data and any checkpoint are sound, the model fits in memory, and
    under MPI every rank agrees (a bad input on one rank stops all of them, and ranks
    that read different data or checkpoints are refused). Returns (trainer, data path,
    temporary files of killed writers removed from the checkpoint folders)."""
    from pathlib import Path

    from fpcore.atomic import remove_stale_temps, target
    from trainer import checkpoint as ckpt
    from trainer.data import check_length, load_tokens
    from trainer.distributed import check_same, on_every_rank
    from trainer.optim import AdamWConfig
    from trainer.timers import Timers
    from trainer.train import Trainer, TrainSettings

    lead = comm.rank == 0
    data_path = kw.pop("data_path")
    resume, directory, stop_after = kw["resume"], kw["checkpoint_dir"], kw["stop_after"]

    def outputs():
        if stop_after is not None and not directory:
            raise SpecError("stop_after", "needs --checkpoint-dir: the checkpoint a later "
                                          "--resume continues from")
        if lead and kw["measurements_path"]:
            target(kw["measurements_path"], "measurements")
        header = ckpt.read_header(resume) if resume is not None else None
        if header is not None:               # what the command line left out, recorded
            _settings_from(header, kw, given)
        found = header.path if header else None
        start = header.step if header else 0
        last = kw["steps"] if stop_after is None else min(kw["steps"], start + stop_after)
        folders = [found.parent] if found else []
        removed = []
        if directory:
            if lead:
                removed += ckpt.prepare_directory(directory, last, found)
            folders.append(Path(directory))
        for folder in dict.fromkeys(folders):
            removed += remove_stale_temps(folder)
        return found, removed

    def build(found):
        header = ckpt.read_header(found) if found else None
        shaped = any(kw.get(k) is not None for k in MODEL_KEYS)
        if header is not None and not shaped:        # the checkpoint's own model
            for k in MODEL_KEYS:
                kw.pop(k, None)
            model = header.model
        else:
            model = _resolve_train_model(kw, data_path)
        tokens = load_tokens(data_path)
        check_length(tokens, model.seq, data_path)
        optimizer = AdamWConfig(lr=kw["lr"], min_lr=kw["min_lr"], warmup=kw["warmup"],
                                decay_steps=kw["decay_steps"],
                                weight_decay=kw["weight_decay"], clip=kw["clip"])
        settings = TrainSettings(steps=kw["steps"], micro_batch=kw["micro_batch"],
                                 global_batch=kw["global_batch"], seed=kw["seed"],
                                 optimizer=optimizer, eval_every=kw["eval_every"],
                                 val_fraction=kw["val_fraction"],
                                 checkpoint_every=kw["checkpoint_every"], keep=kw["keep"],
                                 tp=kw["tp"], pp=kw["pp"], schedule=kw["schedule"],
                                 virtual_stages=kw["virtual_stages"])
        trainer = Trainer(model, tokens, settings, comm, timers=Timers())
        if found:
            trainer.resume(found)
        return trainer

    found, removed = on_every_rank(comm, outputs)
    trainer = on_every_rank(comm, lambda: build(found))
    if comm.size > 1:
        on_every_rank(comm, lambda: check_same(comm, trainer.identity()))
        removed = sorted(set(sum(comm.allgather(removed), [])))
    return trainer, data_path, removed


@click.command()
@click.option("--checkpoint", required=True, metavar="PATH",
              help="A checkpoint file, or a directory (its newest checkpoint).")
@click.option("--prompt", default="",
              help="Text to continue (byte-level models), or token ids separated by spaces.")
@click.option("--tokens", "n_tokens", type=click.IntRange(min=1), default=200, show_default=True,
              help="Tokens to generate, at most 10,000 (the context is a window of the "
                   "model's last seq tokens; each token costs a forward pass over it).")
@click.option("--temperature", type=Real(lo=0), default=0.8, show_default=True,
              help="Sampling temperature (0: always the most likely token).")
@click.option("--top-k", type=click.IntRange(min=0), default=40, show_default=True,
              help="Sample among the k most likely tokens (0: all).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (prompt, text, token ids).")
def generate(checkpoint, prompt, n_tokens, temperature, top_k, seed, as_json):
    """Continue a prompt with a trained checkpoint: a check that the model learned.

    Byte-level models (vocabulary 256) read and write text; other vocabularies print
    token ids, since no tokenizer ships with fugakuperf.
    """
    from trainer.generate import generate as sample

    out = sample(checkpoint, prompt, n_tokens, temperature, top_k, seed)
    if as_json:
        click.echo(dumps(out, indent=2, ensure_ascii=False))
    else:
        click.echo(out["text"] if out["text"] is not None else " ".join(map(str, out["tokens"])))
