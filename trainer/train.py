"""The training loop: micro-batches, gradient accumulation, data-parallel all-reduce,
AdamW, evaluation, checkpoints, and the measurement record.

One step of a global batch of G sequences on R ranks with micro-batch b: each rank
runs G / (R b) forward/backward pairs on its share of the batch (trainer.data.Sampler),
accumulating into one flat gradient buffer scaled so the sum over ranks is the
gradient of the mean token loss; the buffer is summed across ranks, its global norm
clipped, and AdamW updates every rank's identical copy of the parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import signal
import threading
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec

from . import checkpoint as ckpt
from . import determinism
from .data import Sampler, check_vocab
from .distributed import SingleProcess
from .gpt import Activations, gpt_backward, gpt_forward
from .host import node_ranks
from .memory import check_fits, training_need
from .optim import AdamW, AdamWConfig, grad_norm, sum_squares
from .params import FlatTensors, allocate, initialize, wrap
from .tensor import SPLIT, Group, Layout, check_splits
from .timers import NullTimers, Timers

# Settings that define the run: a resumed run must agree on them to repeat it exactly
# (every checkpoint records them all).
RUN_DEFINING = ckpt.SETTINGS_KEYS


class TrainingStopped(RuntimeError):
    """Loss or gradients went non-finite; the last good checkpoint is kept."""


class Interrupted(Exception):
    """Ctrl-C (SIGINT) stopped the run at the end of a step: ``step`` reached, and the
    checkpoint of it (None without a checkpoint directory, and on ranks other than 0)."""

    def __init__(self, step: int, checkpoint: str | None):
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint = step, checkpoint


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    micro_batch: int = 1
    global_batch: int | None = None       # default: micro_batch x ranks (no accumulation)
    seed: int = 0
    optimizer: AdamWConfig = field(default_factory=AdamWConfig)
    eval_every: int = 0                   # 0: evaluate only at the end (if there is a split)
    eval_batches: int = 4
    val_fraction: float = 0.05
    checkpoint_every: int = 0             # 0: only at the end (if a directory is given)
    keep: int = 2
    tp: int = 1                           # tensor-parallel ranks (trainer.tensor); the rest DP

    def __post_init__(self):
        for name in ("steps", "micro_batch", "eval_batches", "tp"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise SpecError(name, f"must be a positive integer; got {getattr(self, name)}")
        if self.steps > ckpt.MAX_STEP:
            raise SpecError("steps", f"must be at most {ckpt.MAX_STEP:,} (checkpoints are "
                                     f"named by eight digits); got {self.steps:,}")
        for name in ("eval_every", "checkpoint_every", "seed", "keep"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise SpecError(name, f"must be an integer >= 0; got {getattr(self, name)}")
        if not 0 <= self.val_fraction < 1:
            raise SpecError("val_fraction", f"must be in [0, 1); got {self.val_fraction}")
        if self.global_batch is not None and self.global_batch < 1:
            raise SpecError("global_batch", f"must be >= 1; got {self.global_batch}")


def fingerprint(tokens: np.ndarray) -> str:
    """Identity of the training data (length and BLAKE2b of the token ids)."""
    h = hashlib.blake2b(np.ascontiguousarray(tokens, dtype=np.uint32), digest_size=12)
    return f"{len(tokens)}:{h.hexdigest()}"


def split(tokens: np.ndarray, val_fraction: float, seq: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Train on the head, evaluate on the tail (when the tail holds a whole sequence)."""
    n_val = int(len(tokens) * val_fraction)
    if n_val < seq + 2:
        return tokens, None
    return tokens[:-n_val], tokens[-n_val:]


@dataclass
class StepLog:
    step: int
    loss: float
    lr: float
    grad_norm: float
    seconds: float
    tokens_per_s: float


@dataclass
class TrainResult:
    model: ModelSpec
    params: np.ndarray
    steps: list[StepLog]
    evals: list[dict]
    start_step: int
    checkpoint: str | None
    settings: dict
    timers: Timers | None = None
    checkpoints: list[dict] = field(default_factory=list)   # step, path, seconds to write


class Trainer:
    """Holds the model state of one rank and runs steps."""

    def __init__(self, model: ModelSpec, tokens: np.ndarray, settings: TrainSettings,
                 comm=None, timers: Timers | None = None, dtype=np.float32):
        self.model, self.settings = model, settings
        self.comm = comm or SingleProcess()
        self.timers = timers
        check_vocab(tokens, model.vocab)
        self.train_tokens, self.val_tokens = split(tokens, settings.val_fraction, model.seq)
        if self.val_tokens is not None and len(self.train_tokens) < model.seq + 2:
            raise SpecError("val_fraction", f"holding out {settings.val_fraction:g} of "
                                            f"{len(tokens):,} tokens leaves "
                                            f"{len(self.train_tokens):,} to train on; "
                                            f"sequences of {model.seq} need at least "
                                            f"{model.seq + 2:,}")
        # ranks: tensor parallel fastest (a TP group is consecutive ranks, as Megatron-LM
        # places them), data parallel across the groups
        tp, world = settings.tp, self.comm.size
        if world % tp:
            raise SpecError("tp", f"{tp} tensor-parallel ranks must divide the {world} ranks")
        check_splits(model, tp)
        self.tp_rank, self.dp_rank, dp = self.comm.rank % tp, self.comm.rank // tp, world // tp
        self.layout = Layout(model, tp, self.tp_rank)
        self.group = Group(self.comm.split(self.dp_rank, self.tp_rank).mpi if tp > 1 else None)
        self.dp = self.comm.split(self.tp_rank, self.dp_rank) if tp > 1 else self.comm
        gb = settings.global_batch or settings.micro_batch * dp
        self.sampler = Sampler(self.train_tokens, model.seq, settings.micro_batch, gb,
                               settings.seed, self.dp_rank, dp)
        check_fits(training_need(model, settings.micro_batch, np.dtype(dtype).itemsize,
                                 global_batch=gb, tp=tp),
                   f"training {model.name} with micro-batch {settings.micro_batch} x seq "
                   f"{model.seq}", ranks_here=node_ranks(1),
                   hint=". A smaller model (--layers, --hidden), --micro-batch, --seq or "
                        "--global-batch needs less")
        # every rank initialises the whole model as one rank would, and keeps its part
        self.params = self._part(initialize(model, settings.seed))
        if dtype != np.float32:
            self.params = _cast(self.params, model, dtype)
        self.grads = allocate(model, dtype=self.params.buffer.dtype, tp=tp)
        self.optimizer = AdamW(self.params, settings.optimizer)
        self.acts = Activations(model, settings.micro_batch, model.seq,
                                dtype=self.params.buffer.dtype, tp=tp)
        self.resumed_state: int | None = None   # CRC-32 of the state a resume read
        self.step_index = 0
        self.decay_steps = settings.optimizer.decay_steps or settings.steps
        self.data_id = fingerprint(tokens)
        self.n_tokens = len(tokens)
        self.resumed_from: str | None = None
        self.continuation: dict | None = None   # after a resume: is it bit-identical?

    # ------------------------------------------------------------------ identity
    def run_settings(self) -> dict:
        s = self.settings
        return {"global_batch": self.sampler.global_batch, "micro_batch": s.micro_batch,
                "seed": s.seed, "world": self.comm.size, "data": self.data_id,
                "optimizer": dataclasses.asdict(s.optimizer), "decay_steps": self.decay_steps,
                "val_fraction": s.val_fraction}

    def resume(self, path) -> str:
        """Load a checkpoint made by the same run; returns its path. The checkpoint is
        checked whole before the arrays are read into this trainer's buffers; if they
        turn out damaged the SpecError says so and this trainer must not be used."""
        if self.params.buffer.dtype != np.float32:
            raise SpecError("resume", f"checkpoints hold float32 values; this trainer "
                                      f"computes in {self.params.buffer.dtype}")
        c = ckpt.read_header(path)
        if c.model != self.model:
            raise SpecError("resume", f"{c.path}: made for model {c.model.name} "
                                      f"({c.model.layers} layers, hidden {c.model.hidden}), "
                                      f"not this one")
        mine = self.run_settings()
        for key in RUN_DEFINING:
            if c.settings[key] != mine[key]:
                hint = (" (the cosine decay ends at --steps unless --decay-steps is given)"
                        if key == "decay_steps" else "")
                raise SpecError("resume", f"{c.path}: the checkpoint's run has {key} "
                                          f"{c.settings[key]}; this run has {mine[key]}. "
                                          f"Exact resume needs the same setting{hint}")
        if c.step > self.settings.steps:
            raise SpecError("steps", f"{c.path} is at step {c.step:,}, past this run's "
                                     f"{self.settings.steps:,} steps")
        whole = {name: np.empty(self.model.params, dtype=np.float32)
                 for name in ("params", "m", "v")} if self.layout.size > 1 else \
            {"params": self.params.buffer, "m": self.optimizer.m, "v": self.optimizer.v}
        ckpt.read_arrays(c, whole)
        self.resumed_state = 0
        for name in ("params", "m", "v"):
            self.resumed_state = zlib.crc32(whole[name], self.resumed_state)
        if self.layout.size > 1:                # this rank's part of the whole state
            for name, mine in (("params", self.params.buffer), ("m", self.optimizer.m),
                               ("v", self.optimizer.v)):
                mine[...] = self._part(wrap(whole[name], self.model)).buffer
        self.optimizer.step_count = c.step
        self.step_index = c.step
        self.resumed_from = str(c.path)
        diffs = determinism.differences(c.determinism, determinism.environment(self.comm.size))
        self.continuation = {"checkpoint": c.determinism, "differences": diffs,
                             "bit_identical": determinism.verdict(diffs),
                             "note": determinism.note(self.resumed_from, diffs)}
        return self.resumed_from

    def identity(self) -> dict:
        """What every rank of one run must share: the run's settings (with the data's
        fingerprint), the model, the step and, after a resume, the state read (a CRC-32
        of the parameters and AdamW's moments)."""
        state = self.resumed_state if self.resumed_from else None
        s = self.settings
        return {**self.run_settings(), "model": dataclasses.asdict(self.model),
                "steps": s.steps, "eval_every": s.eval_every, "eval_batches": s.eval_batches,
                "checkpoint_every": s.checkpoint_every, "keep": s.keep,
                "step": self.step_index, "state": state}

    # ------------------------------------------------------------------ TP parts
    def _part(self, whole: FlatTensors) -> FlatTensors:
        """This rank's part of the whole model's tensors (the whole, without TP)."""
        if self.layout.size == 1:
            return whole
        mine = allocate(self.model, dtype=whole.buffer.dtype, tp=self.layout.size)
        for name, view in mine.views.items():
            view[...] = self.layout.take(name, whole[name])
        return mine

    def _whole(self, buffer: np.ndarray) -> np.ndarray:
        """The whole model's flat buffer from every TP rank's ``buffer`` (a collective of
        the TP group)."""
        t = self.layout.size
        whole = allocate(self.model, dtype=buffer.dtype)
        mine = wrap(buffer, self.model, t)
        for name, view in mine.views.items():
            for r, part in enumerate(self.group.gather(view)):
                Layout(self.model, t, r).put(name, whole[name], part)
        return whole.buffer

    def save(self, directory) -> str | None:
        """Rank 0 writes the whole model's state (the TP group of rank 0 gathers it)."""
        state = (self.params.buffer, self.optimizer.m, self.optimizer.v)
        if self.layout.size > 1 and self.dp_rank == 0:
            state = tuple(self._whole(buffer) for buffer in state)
        if self.comm.rank != 0:
            return None
        path = ckpt.save(directory, self.step_index, self.model, self.run_settings(), *state,
                         keep=self.settings.keep,
                         environment=determinism.environment(self.comm.size))
        return str(path)

    # ------------------------------------------------------------------ steps
    def step(self) -> StepLog:
        """One optimizer step over a whole global batch."""
        t0 = time.perf_counter()
        t = self.timers or NullTimers()
        model, s = self.model, self.sampler
        B, T = s.micro_batch, model.seq
        scale = 1.0 / (B * T * s.micro_batches * s.world)
        with t("zero_grad", bytes_=self.grads.buffer.nbytes):
            self.grads.buffer.fill(0.0)
        loss_sum = 0.0
        positions = s.positions(self.step_index)          # (global_batch,) window starts
        for micro in range(s.micro_batches):
            x, y = s.batch(self.step_index, micro, positions)
            loss_sum += gpt_forward(model, self.params, self.acts, x, y, timer=self.timers,
                                    group=self.group)
            gpt_backward(model, self.params, self.grads, self.acts, x, y, scale,
                         timer=self.timers, group=self.group)
        self.dp.allreduce_sum(self.grads.buffer, timer=self.timers)
        loss = self.dp.allreduce_scalar(loss_sum) / (s.micro_batches * s.world)
        with t("grad_norm", bytes_=self.grads.buffer.nbytes):
            norm = self._grad_norm()
        lr = self.settings.optimizer.rate(self.step_index, self.decay_steps)
        for what, value in (("loss", loss), ("gradient norm", norm)):
            if not math.isfinite(value):
                raise TrainingStopped(f"step {self.step_index + 1}: {what} is {value}; "
                                      f"stopped before the update")
        with t("adamw", bytes_=self.params.buffer.nbytes * 4 * 2):
            self.optimizer.step(self.params.buffer, self.grads.buffer, lr, norm)
        self.step_index += 1
        dt = time.perf_counter() - t0
        return StepLog(self.step_index, loss, lr, norm, dt, s.global_batch * T / dt)

    def _grad_norm(self) -> float:
        """The whole model's gradient norm: with TP, the split tensors' squares summed over
        the group, the whole ones' (the same on every rank of it) once."""
        if self.layout.size == 1:
            return grad_norm(self.grads.buffer)
        split = np.array([sum(sum_squares(v.ravel()) for name, v in self.grads.views.items()
                              if name in SPLIT)])
        self.group.sum(split)
        whole = sum(sum_squares(v.ravel()) for name, v in self.grads.views.items()
                    if name not in SPLIT)
        return math.sqrt(float(split[0]) + whole)

    def evaluate(self) -> float | None:
        """Mean token loss on the held-out tail: the same ``eval_batches`` micro-batches every
        time and for any number of ranks. Rank 0 evaluates (with TP, its group with it);
        the others get None."""
        if self.val_tokens is None or self.dp_rank != 0:
            return None
        model, s = self.model, self.settings
        sampler = Sampler(self.val_tokens, model.seq, s.micro_batch,
                          s.micro_batch * s.eval_batches, s.seed + 1)
        total = sum(gpt_forward(model, self.params, self.acts, *sampler.batch(0, micro),
                                group=self.group)
                    for micro in range(sampler.micro_batches))
        return total / sampler.micro_batches if self.comm.rank == 0 else None


def _cast(params, model, dtype):
    out = allocate(model, dtype=dtype)
    out.buffer[...] = params.buffer
    return out


def train(trainer: Trainer, checkpoint_dir=None, resume=None, progress=None,
          stop_after: int | None = None) -> TrainResult:
    """Run ``trainer`` to its ``settings.steps``, or for ``stop_after`` steps of this call
    (a job time limit; a later resume continues exactly). ``progress(kind, data)`` sees
    each event."""
    s = trainer.settings
    if resume:
        trainer.resume(resume)
    start, last = trainer.step_index, trainer.resumed_from
    if last and progress:
        progress("resume", {"path": last, "step": start,
                            "note": (trainer.continuation or {}).get("note")})
    logs, evals, checkpoints = [], [], []
    saved_at = None
    end = s.steps if stop_after is None else min(s.steps, start + stop_after)
    with _deferred_interrupt() as asked:
        while trainer.step_index < end:
            try:
                log = trainer.step()
            except TrainingStopped as e:
                keep = (f"; last good checkpoint: {last}" if last
                        else "; no checkpoint was written")
                raise TrainingStopped(f"{e}{keep}") from None
            logs.append(log)
            if progress:
                progress("step", log)
            if trainer.timers is not None and log.step == start + 1 and end - start > 1:
                trainer.timers.reset()          # the first step compiles kernels: not measured
            done = trainer.step_index == end
            if (s.eval_every and log.step % s.eval_every == 0) or done:
                val = trainer.evaluate()
                if val is not None:
                    evals.append({"step": log.step, "loss": val})
                    if progress:
                        progress("eval", evals[-1])
            due = s.checkpoint_every and log.step % s.checkpoint_every == 0
            if checkpoint_dir and (due or done):
                t0 = time.perf_counter()
                saved_at = log.step           # (on every rank: saving is a collective)
                path = trainer.save(checkpoint_dir)
                if path:
                    last = path
                    checkpoints.append({"step": log.step, "path": path,
                                        "seconds": time.perf_counter() - t0})
                    if progress:
                        progress("checkpoint", checkpoints[-1])
            # Ctrl-C: every rank stops after the same step, its checkpoint written
            if trainer.comm.allreduce_scalar(1.0 if asked() else 0.0) > 0:
                saved = last if saved_at == trainer.step_index \
                    else (trainer.save(checkpoint_dir) if checkpoint_dir else None)
                raise Interrupted(trainer.step_index, saved)
    return TrainResult(trainer.model, trainer.params.buffer, logs, evals, start, last,
                       trainer.run_settings(), trainer.timers, checkpoints)


@contextlib.contextmanager
def _deferred_interrupt():
    """While training, SIGINT only asks the run to stop at the end of its step (a step cut
    short would leave the parameters half updated); yields the question."""
    asked = [False]
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        asked[0] = True
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: asked[0]
    finally:
        signal.signal(signal.SIGINT, previous)


