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
from perfmodel.schedules import Step, consumed_by, producer, schedule
from perfmodel.schedules import get as get_schedule

from .params import STACKED, WHOLE, FlatTensors, Stage, allocate, initialize, wrap
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
    tp: int = 1                           # tensor-parallel ranks (trainer.tensor)
    pp: int = 1                           # pipeline stages; the other ranks data parallel
    schedule: str = "1f1b"                # the pipeline's (perfmodel.schedules)
    virtual_stages: int = 1               # chunks of layers per stage (interleaved)

    def __post_init__(self):
        for name in ("steps", "micro_batch", "eval_batches", "tp", "pp", "virtual_stages"):
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
        spec = get_schedule(self.schedule)
        if set(spec.kinds) - {"F", "B"}:
            raise SpecError("schedule", f"the trainer runs forwards and backwards; "
                                        f"{self.schedule} has steps of kind {spec.kinds}")
        if spec.virtual != (self.virtual_stages > 1):
            raise SpecError("virtual_stages", f"{self.schedule} runs "
                                              f"{'2 or more' if spec.virtual else '1'} chunk(s) "
                                              f"per stage; got {self.virtual_stages}")


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
        # places them), then data parallel, then pipeline stages (perfmodel's order)
        tp, pp, world = settings.tp, settings.pp, self.comm.size
        if world % (tp * pp):
            raise SpecError("tp" if pp == 1 else "pp",
                            f"tp x pp = {tp} x {pp} must divide the {world} ranks")
        check_splits(model, tp)
        v = settings.virtual_stages
        if model.layers % (pp * v):
            raise SpecError("pp", f"{pp} pipeline stages of {v} chunk(s) must divide the "
                                  f"{model.layers} layers")
        dp, r = world // (tp * pp), self.comm.rank
        self.tp_rank, self.dp_rank, self.pp_rank = r % tp, (r // tp) % dp, r // (tp * dp)
        self.stage = Stage(first=self.pp_rank == 0, last=self.pp_rank == pp - 1)
        # the stage's layers: chunk c is virtual stage c p + stage (Megatron-LM's order),
        # its layers stacked after the chunk before's
        self.stage_model = model.replace(layers=model.layers // pp)
        self.layers = stage_layers(model.layers, pp, v, self.pp_rank)
        self.layout = Layout(model, tp, self.tp_rank)
        split_ = self.comm.split
        self.group = Group(split_(self.dp_rank + dp * self.pp_rank, self.tp_rank).mpi
                           if tp > 1 else None)
        self.dp = split_(self.tp_rank + tp * self.pp_rank, self.dp_rank) if tp * pp > 1 \
            else self.comm
        self.pipe = split_(self.tp_rank + tp * self.dp_rank, self.pp_rank) if pp > 1 else None
        # a replica's ranks (they gather the whole model for a checkpoint), and the two
        # ends of each pipeline, which sum the gradient of their tied embeddings
        self.replica = split_(self.dp_rank, self.tp_rank + tp * self.pp_rank) \
            if tp * pp > 1 else None
        self.ends = _ends(self.comm, self.stage, self.tp_rank + tp * self.dp_rank,
                          self.pp_rank) if pp > 1 and model.tied_embeddings else None
        gb = settings.global_batch or settings.micro_batch * dp
        self.sampler = Sampler(self.train_tokens, model.seq, settings.micro_batch, gb,
                               settings.seed, self.dp_rank, dp)
        if pp > 1 and get_schedule(settings.schedule).groups_of_pp and \
                self.sampler.micro_batches % pp:
            raise SpecError("global_batch", f"{settings.schedule} needs micro-batches per "
                                            f"replica ({self.sampler.micro_batches}) in whole "
                                            f"groups of pp ({pp})")
        self.steps = schedule(settings.schedule, pp, self.sampler.micro_batches,
                              v)[self.pp_rank]
        slots = max(1, _in_flight(self.steps)) if pp > 1 else 1
        check_fits(training_need(self.stage_model, settings.micro_batch,
                                 np.dtype(dtype).itemsize, global_batch=gb, tp=tp,
                                 stage=self.stage, in_flight=slots, chunks=v),
                   f"training {model.name} with micro-batch {settings.micro_batch} x seq "
                   f"{model.seq}", ranks_here=node_ranks(1),
                   hint=". A smaller model (--layers, --hidden), --micro-batch, --seq or "
                        "--global-batch needs less")
        # every rank initialises the whole model as one rank would, and keeps its part
        self.params = self._part(initialize(model, settings.seed))
        if dtype != np.float32:
            self.params = _cast(self.params, self.stage_model, dtype, tp, self.stage)
        self.grads = allocate(self.stage_model, dtype=self.params.buffer.dtype, tp=tp,
                              stage=self.stage)
        self.optimizer = AdamW(self.params, settings.optimizer)
        # each chunk's views into the stage's tensors, and the activations of every
        # (chunk, micro-batch) a stage holds at once (1F1B: p - stage)
        self.chunk_model = model.replace(layers=model.layers // (pp * v))
        self.chunks = [(_chunk(self.params, c, self.chunk_model.layers),
                        _chunk(self.grads, c, self.chunk_model.layers),
                        Stage(first=self.stage.first and c == 0,
                              last=self.stage.last and c == v - 1)) for c in range(v)]
        self.slots = [Activations(self.chunk_model, settings.micro_batch, model.seq,
                                  dtype=self.params.buffer.dtype, tp=tp, stage=self.stage)
                      for _ in range(slots)]
        self.acts = self.slots[0]
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
        parted = self.replica is not None
        whole = {name: np.empty(self.model.params, dtype=np.float32)
                 for name in ("params", "m", "v")} if parted else \
            {"params": self.params.buffer, "m": self.optimizer.m, "v": self.optimizer.v}
        ckpt.read_arrays(c, whole)
        self.resumed_state = 0
        for name in ("params", "m", "v"):
            self.resumed_state = zlib.crc32(whole[name], self.resumed_state)
        if parted:                              # this rank's part of the whole state
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

    # ------------------------------------------------------------------ model-parallel parts
    def _part(self, whole: FlatTensors) -> FlatTensors:
        """This rank's part of the whole model's tensors: its stage's layers and ends,
        its TP part of them (the whole, with neither)."""
        if self.layout.size == 1 and self.pipe is None:
            return whole
        mine = allocate(self.stage_model, dtype=whole.buffer.dtype, tp=self.layout.size,
                        stage=self.stage)
        for name, view in mine.views.items():
            source = whole[name][self.layers] if name in STACKED else whole[name]
            view[...] = self.layout.take(name, source)
        return mine

    def _whole(self, buffer: np.ndarray) -> np.ndarray:
        """The whole model's flat buffer from every rank of this replica's ``buffer`` (a
        collective of the replica: its TP ranks and pipeline stages)."""
        t, p, v = self.layout.size, self.settings.pp, self.settings.virtual_stages
        whole = allocate(self.model, dtype=buffer.dtype)
        for tr, pr, part in self.replica.allgather((self.tp_rank, self.pp_rank, buffer)):
            stage = Stage(first=pr == 0, last=pr == p - 1)
            layers = stage_layers(self.model.layers, p, v, pr)
            for name, view in wrap(part, self.stage_model, t, stage).views.items():
                if name not in STACKED:
                    Layout(self.model, t, tr).put(name, whole[name], view)
                    continue
                target = whole[name][layers]              # (a copy: the layers are indexed)
                Layout(self.model, t, tr).put(name, target, view)
                whole[name][layers] = target
        return whole.buffer

    def save(self, directory) -> str | None:
        """Rank 0 writes the whole model's state (the ranks of its replica gather it)."""
        state = (self.params.buffer, self.optimizer.m, self.optimizer.v)
        if self.replica is not None and self.dp_rank == 0:
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
        positions = s.positions(self.step_index)          # (global_batch,) window starts
        if self.pipe is None:
            loss_sum = 0.0
            for micro in range(s.micro_batches):
                x, y = s.batch(self.step_index, micro, positions)
                loss_sum += gpt_forward(model, self.params, self.acts, x, y, timer=self.timers,
                                        group=self.group)
                gpt_backward(model, self.params, self.grads, self.acts, x, y, scale,
                             timer=self.timers, group=self.group)
        else:
            loss_sum = self.pipe.allreduce_scalar(self._pipeline(positions, scale))
            if self.ends is not None:              # the tied embedding: both ends' gradients
                self.ends.sum(self.grads["wte"], timer=self.timers, what="embedding_allreduce")
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

    def _pipeline(self, positions, scale: float) -> float:
        """This stage's steps of the schedule (perfmodel.schedules, the one perfmodel
        simulates): a forward receives its input from the stage before (the first embeds
        its tokens) and sends its output on; a backward receives its output's gradient
        from the stage after (the last starts from the loss) and sends its input's back.
        Sends do not block (a stage may send while its neighbour sends to it) and send a
        copy; a (chunk, micro-batch)'s activations stay in a slot until its backward.
        With chunks (interleaved), where each step's input comes from and its output
        goes are perfmodel.schedules' ``producer`` and ``consumed_by``. The summed loss
        of the micro-batches (the last stage's; 0 on the others)."""
        from mpi4py import MPI
        s, comm, here = self.sampler, self.pipe.comm, self.pp_rank
        p, v, last = self.settings.pp, self.settings.virtual_stages, self.chunk_model.layers - 1
        free, held, sends = list(range(len(self.slots))), {}, []
        loss_sum = 0.0
        t = self.timers or NullTimers()

        def send(data, to: tuple) -> None:
            # a copy goes (the slot may be reused before the receiver takes it; waiting
            # for that here could wait on a stage that waits on this one)
            copy = data.copy()
            sends.append((comm.Isend(copy, dest=to[0], tag=_tag(to[1], v)), copy))

        for step in self.steps:
            j, c = step.micro_batch, step.chunk
            params, grads, stage = self.chunks[c]
            x, y = s.batch(self.step_index, j, positions)
            source, target = producer(step, here, p, v), consumed_by(step, here, p, v)
            if step.kind == "F":
                k = held[j, c] = free.pop(0)
                a = self.slots[k]
                if source is not None:
                    with t(f"pp_recv {a.encoded.nbytes}", bytes_=a.encoded.nbytes):
                        comm.Recv(a.encoded, source=source[0], tag=_tag(step, v))
                loss = gpt_forward(self.chunk_model, params, a, x, y, timer=self.timers,
                                   group=self.group, stage=stage)
                if target is None:
                    loss_sum += loss
                else:
                    send(a.residual3[last], target)
            else:
                k = held.pop((j, c))
                a = self.slots[k]
                if source is not None:
                    with t(f"pp_recv {a.dresidual.nbytes}", bytes_=a.dresidual.nbytes):
                        comm.Recv(a.dresidual, source=source[0], tag=_tag(step, v))
                gpt_backward(self.chunk_model, params, grads, a, x, y, scale,
                             timer=self.timers, group=self.group, stage=stage)
                if target is not None:
                    send(a.dresidual, target)
                free.append(k)
        MPI.Request.Waitall([request for request, _ in sends])
        return loss_sum

    def _grad_norm(self) -> float:
        """The whole model's gradient norm: the TP-split tensors' squares summed over the
        TP group, the whole ones' (the same on every rank of it) once, the stages' summed
        over the pipeline (a tied embedding counted on the first stage only)."""
        if self.layout.size == 1 and self.pipe is None:
            return grad_norm(self.grads.buffer)
        counted = {name: v for name, v in self.grads.views.items()
                   if not (name == "wte" and not self.stage.first)}
        split = np.array([sum(sum_squares(v.ravel()) for name, v in counted.items()
                              if name in SPLIT)])
        self.group.sum(split)
        total = float(split[0]) + sum(sum_squares(v.ravel()) for name, v in counted.items()
                                      if name not in SPLIT)
        return math.sqrt(self.pipe.allreduce_scalar(total) if self.pipe else total)

    def evaluate(self) -> float | None:
        """Mean token loss on the held-out tail: the same ``eval_batches`` micro-batches every
        time and for any number of ranks. Rank 0 evaluates (with TP or PP, every rank of
        its replica with it); the others get None."""
        if self.val_tokens is None or self.dp_rank != 0:
            return None
        s, a = self.settings, self.acts
        p, v, last = s.pp, s.virtual_stages, self.chunk_model.layers - 1
        sampler = Sampler(self.val_tokens, self.model.seq, s.micro_batch,
                          s.micro_batch * s.eval_batches, s.seed + 1)
        total = 0.0
        for micro in range(sampler.micro_batches):      # through the virtual stages in turn
            for c, (params, _, stage) in enumerate(self.chunks):
                step = Step("F", micro, c)
                source = producer(step, self.pp_rank, p, v) if self.pipe else None
                target = consumed_by(step, self.pp_rank, p, v) if self.pipe else None
                if source is not None:
                    self.pipe.comm.Recv(a.encoded, source=source[0], tag=_tag(step, v))
                loss = gpt_forward(self.chunk_model, params, a, *sampler.batch(0, micro),
                                   group=self.group, stage=stage)
                if target is None:
                    total += loss
                else:
                    self.pipe.comm.Send(a.residual3[last], dest=target[0],
                                        tag=_tag(target[1], v))
        if self.pipe is not None:
            total = self.pipe.allreduce_scalar(total)
        return total / sampler.micro_batches if self.comm.rank == 0 else None


def _cast(params, model, dtype, tp: int = 1, stage: Stage = WHOLE):
    out = allocate(model, dtype=dtype, tp=tp, stage=stage)
    out.buffer[...] = params.buffer
    return out


def stage_layers(layers: int, p: int, v: int, stage: int) -> np.ndarray:
    """The layers pipeline stage ``stage`` of ``p`` holds, with ``v`` chunks: chunk c is
    virtual stage c p + stage, of layers / (p v) consecutive layers (Megatron-LM's
    interleaving); in the order the stage stacks them."""
    n = layers // (p * v)
    return np.concatenate([np.arange((c * p + stage) * n, (c * p + stage + 1) * n)
                           for c in range(v)])


def _chunk(tensors: FlatTensors, c: int, layers: int) -> FlatTensors:
    """Chunk ``c``'s views: its ``layers`` of each stacked tensor, the rest whole."""
    return FlatTensors(tensors.buffer, {
        name: view[c * layers:(c + 1) * layers] if name in STACKED else view
        for name, view in tensors.views.items()})


def _tag(step: Step, v: int) -> int:
    """The message tag of the data ``step`` receives: its micro-batch, chunk and kind."""
    return ((step.micro_batch * v + step.chunk) * 2) + (step.kind == "B")


def _in_flight(steps) -> int:
    """The most micro-batches a stage's steps hold at once (forwards not yet backward)."""
    held = most = 0
    for step in steps:
        held += 1 if step.kind == "F" else -1
        most = max(most, held)
    return most


def _ends(comm, stage: Stage, color: int, key: int):
    """The group of a pipeline's first and last stage, which both hold the tied embedding
    (None on the other stages)."""
    from mpi4py import MPI
    member = stage.first or stage.last
    split = comm.mpi.Split(color if member else MPI.UNDEFINED, key)
    return Group(split) if member else None


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


