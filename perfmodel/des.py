"""A discrete-event simulation (SimPy) of one training iteration of one data-parallel replica.

Other replicas are identical by symmetry; their contention on shared links is in
the collective costs the network model gives. Each pipeline stage is a SimPy
process (``stage_process``) executing its schedule (perfmodel.schedules) step by step
(``step_process``), then ending the iteration (``finish_process``), beside its
data-parallel stream (``dp_stream``); every process takes the ``Iteration`` they
share (the environment, the inputs, the events linking the stages, the accounts)
and, for a stage's own, its ``StageState``:

* a step waits for its producer's transfer (the activation from the previous
  virtual stage, or the gradient from the next);
* it runs layer by layer: compute (forward; or backward with its recomputation),
  then the layer's tensor-parallel collectives (blocking, as in Megatron-LM);
  with ZeRO-3 the step queues each layer's weight gather on the stage's
  data-parallel stream the stack's ``prefetch`` layers ahead (or one flat buffer's
  at its start) and each layer waits for its own;
* then the stage sends its output to the consumer stage (blocking send: the
  sender is busy for the transfer, which is when the receiver may start);
* gradient buckets (the stack's: one per layer, one flat buffer, or a size) go to
  the stage's data-parallel stream, a separate process, as the last micro-batch's
  backward fills them (ZeRO-0/1) or in every backward (ZeRO-2/3), so the reduction
  overlaps the backward, except for its arithmetic where the MPI library reduces on
  the compute cores (a CPU node's ``reduce_bandwidth``), which the stage spends;
* after its last step the stage waits for its stream to drain, sums a tied
  embedding with the other end of the pipeline (once both ends have finished
  their backward), steps the optimizer, and (ZeRO-1/2) gathers the updated
  weights. Without ``overlap_dp`` the reductions wait for the backward's end
  (ZeRO-0/1) or block after each backward (ZeRO-2/3).

A stage's transfers share its wire (``Wire``): while the data-parallel stream
runs beside the stage's TP collectives or a pipeline send, each advances at the
speed the two leave each other on the fabric (topologies.sharing: their flows
routed together, shared max-min), and the one left goes back to full speed when
the other finishes; where the streams cross no common link (Tofu's placement puts
TP and DP on different axes) nothing slows.

Costs come from the same functions as the analytic estimate (``_stage_costs``,
``stage_comm``), so the two differ only in how the schedule is resolved and in the
streams' sharing. Memory:
each stage's model states and buffers, plus the activations of every forward
until its backward (and one layer rebuilt in full during a full-recompute
backward), tracked over simulated time. One time unit: float seconds. Nothing is
global: the environment and the trace travel in the Iteration; every trace span says
its stage and kind (a step kind, send, dp, optimizer) as arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import simpy

from fpcore.atomic import atomic_write
from fpcore.errors import SpecError
from fpcore.readers import dumps
from topologies import NetworkModel
from topologies.sharing import Stream, speeds

from .compute import ComputeModel
from .estimator import StageCost, _stage_costs, activation_message, network_for, stage_comm
from .layout import Layout, validate_layout
from .memory import activation_bytes_per_layer, micro_batch_activation_bytes, stage_memory
from .model import ModelSpec
from .schedules import STEP_KINDS, Step, consumed_by, producer, schedule
from .system import SystemSpec

CATEGORIES = ("compute", "recompute", "tp_comm", "ep_comm", "cp_comm", "pp_comm", "dp_comm",
              "optimizer")


@dataclass(frozen=True)
class Noise:
    """Variability: per-segment compute jitter (lognormal sigma) and slow nodes.

    A stage is slow when any node of its TP groups across all DP replicas is (the
    iteration waits for the slowest replica at the gradient reduction):
    probability ``1 - (1 - straggler_fraction) ** (tp * dp / ranks_per_node)``."""

    jitter: float = 0.0
    straggler_fraction: float = 0.0
    straggler_slowdown: float = 1.0
    seed: int = 0

    # A sigma of 1 already stretches one segment in six by e (2.7x) or more: past
    # MAX_JITTER the figure is no longer jitter (and exp(sigma * z) overflows a float).
    MAX_JITTER = 1.0
    MAX_SLOWDOWN = 100.0

    def __post_init__(self):
        from fpcore.errors import check_float, check_int
        check_float("jitter", self.jitter, lo=0.0, lo_open=False, hi=self.MAX_JITTER,
                    unit="(lognormal sigma)")
        check_float("stragglers", self.straggler_fraction, lo=0.0, lo_open=False, hi=1.0,
                    unit="(fraction of nodes)")
        check_float("straggler_slowdown", self.straggler_slowdown, lo=1.0, lo_open=False,
                    hi=self.MAX_SLOWDOWN, unit="x")
        check_int("seed", self.seed, lo=0)

    @property
    def active(self) -> bool:
        return self.jitter > 0 or (self.straggler_fraction > 0 and self.straggler_slowdown != 1)


@dataclass
class Trace:
    """Chrome Trace Event Format recorder (Perfetto and chrome://tracing open it).

    The simulator records spans on named tracks ("stage 0", "stage 0 p2p", "stage 0
    dp stream"), each with its stage and kind as arguments, and each stage's memory
    over time. ``to_json`` writes them as Perfetto shows a pipeline: one process per
    pipeline stage; in it a thread per stream (compute, TP collectives, PP sends, DP
    stream), slices named by what they do (forward F3, backward B3 with its
    recomputation, the TP collectives by name and size, the send and where it goes,
    the DP reduction or gather); a flow arrow from each pipeline send to the step
    that consumes it; and a counter track of the stage's memory."""

    events: list = field(default_factory=list)
    tracks: dict = field(default_factory=dict)
    counters: list = field(default_factory=list)      # (stage, seconds, bytes held)
    tp_label: str = "TP collectives"                   # what one layer's TP traffic is

    def track(self, name: str) -> int:
        if name not in self.tracks:
            self.tracks[name] = len(self.tracks) + 1
        return self.tracks[name]

    def span(self, track: str, name: str, start: float, end: float, **args) -> None:
        self.events.append({"name": name, "ph": "X", "pid": 1, "tid": self.track(track),
                            "ts": start * 1e6, "dur": (end - start) * 1e6, "args": args})

    def memory(self, stage: int, t: float, nbytes: float) -> None:
        self.counters.append((stage, t, nbytes))

    def to_json(self) -> dict:
        names = {tid: name for name, tid in self.tracks.items()}
        stages = sorted({e["args"]["stage"] for e in self.events} | {c[0] for c in
                                                                    self.counters})
        out = []
        for i in stages:
            out += [{"name": "process_name", "ph": "M", "pid": i + 1,
                     "args": {"name": f"pipeline stage {i}"}},
                    {"name": "process_sort_index", "ph": "M", "pid": i + 1,
                     "args": {"sort_index": i}}]
            for tid, thread in enumerate(THREADS, 1):
                out += [{"name": "thread_name", "ph": "M", "pid": i + 1, "tid": tid,
                         "args": {"name": thread}},
                        {"name": "thread_sort_index", "ph": "M", "pid": i + 1, "tid": tid,
                         "args": {"sort_index": tid}}]
        starts: dict = {}                   # (stage, step) -> when its first slice begins
        slices = []
        for e in self.events:
            a = e["args"]
            thread, name = self._slice(names[e["tid"]], e["name"], a)
            slices.append({**e, "name": name, "pid": a["stage"] + 1, "tid": thread,
                           "cat": a["kind"]})
            if thread == 1 and a["kind"] in ("F", "B"):
                key = (a["stage"], e["name"])
                starts[key] = min(starts.get(key, e["ts"]), e["ts"])
        flows = []
        for n, e in enumerate(x for x in self.events if x["args"]["kind"] == "send"):
            a = e["args"]
            end = starts.get((a["to_stage"], a["to_step"]))
            if end is None:
                continue
            what = "activation" if a["step"].startswith("F") else "gradient"
            common = {"name": what, "cat": "pipeline", "id": n + 1}
            flows += [{**common, "ph": "s", "pid": a["stage"] + 1, "tid": 3, "ts": e["ts"]},
                      {**common, "ph": "f", "bp": "e", "pid": a["to_stage"] + 1, "tid": 1,
                       "ts": end}]
        counters = [{"name": "memory", "ph": "C", "pid": i + 1, "ts": t * 1e6,
                     "args": {"GB": b / 1e9}} for i, t, b in self.counters]
        return {"traceEvents": out + slices + flows + counters, "displayTimeUnit": "ms"}

    def _slice(self, track: str, name: str, a: dict) -> tuple[int, str]:
        """(thread, slice name) of a recorded span."""
        if track.endswith(" p2p"):
            return 3, f"{name} to stage {a['to_stage']}"
        if track.endswith(" dp stream"):
            return 4, f"DP {name}"
        if a.get("part") == "tp_comm":
            return 2, f"{self.tp_label} ({name})"
        if a.get("part") == "ep_comm":
            return 2, f"EP all-to-alls, dispatch and combine ({name})"
        if a.get("part") == "cp_comm":
            return 2, f"CP key/value ring, where the attention does not hide it ({name})"
        if a["kind"] == "F":
            return 1, f"forward {name}"
        if a["kind"] == "B":
            return 1, (f"backward {name} (recompute + backward)" if a.get("recompute")
                       else f"backward {name}")
        if a["kind"] == "W":
            return 1, f"weight gradients {name}"
        return 1, name

    def write(self, path: str, field: str = "trace") -> None:
        """Atomically: write beside the target, then rename."""
        atomic_write(path, dumps(self.to_json()).encode("utf-8"), field=field)


THREADS = ("compute", "TP collectives", "PP sends", "DP stream")   # per stage, in order


@dataclass
class StageReport:
    stage: int
    end_s: float
    busy_s: dict
    idle_s: float
    peak_memory_bytes: float


@dataclass
class SimResult:
    iteration_s: float
    tokens_per_s: float
    bubble_fraction: float
    breakdown: dict
    stages: list
    peak_memory_bytes: float
    events: int
    critical_stage: int
    # "reduce beside pp" -> the least speed (alone seconds per second) a kind of
    # transfer ran at beside another on any stage's wire, where below 1
    shared_links: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"iteration_s": self.iteration_s, "tokens_per_s": self.tokens_per_s,
                "shared_links": dict(self.shared_links),
                "bubble_fraction": self.bubble_fraction, "breakdown": self.breakdown,
                "peak_memory_bytes": self.peak_memory_bytes, "events": self.events,
                "critical_stage": self.critical_stage,
                "stages": [{"stage": s.stage, "end_s": s.end_s, "busy_s": s.busy_s,
                            "idle_s": s.idle_s, "peak_memory_bytes": s.peak_memory_bytes}
                           for s in self.stages]}


@dataclass(frozen=True)
class StageWork:
    """Seconds of one step of one chunk on a stage, split for the simulation."""

    layers: int
    fwd_compute: float
    fwd_tp: float
    bwd_compute: float       # backward compute, recomputation's compute included
    bwd_tp: float            # backward TP collectives, recomputation's included
    recompute: float         # recomputation (compute and collectives), for the breakdown
    p2p: float
    wgrad: float = 0.0       # of bwd_compute, the weight gradients (a W step's, if split)
    fwd_ep: float = 0.0      # a mixture of experts' all-to-alls, forward ...
    bwd_ep: float = 0.0      # ... and backward (recomputation's included)
    fwd_cp: float = 0.0      # context parallelism's exposed key/value ring, forward ...
    bwd_cp: float = 0.0      # ... and backward (recomputation's included)


def stage_work(cost: StageCost, v: int) -> StageWork:
    """Per-chunk work from a stage's per-micro-batch cost (v chunks share it evenly)."""
    return StageWork(layers=max(1, cost.layers // v),
                     fwd_compute=(cost.forward - cost.tp_forward - cost.ep_forward
                                  - cost.cp_forward) / v,
                     fwd_tp=cost.tp_forward / v,
                     bwd_compute=(cost.backward - cost.tp_backward - cost.ep_backward
                                  - cost.cp_backward) / v,
                     bwd_tp=cost.tp_backward / v,
                     recompute=cost.recompute / v, p2p=cost.p2p, wgrad=cost.wgrad / v,
                     fwd_ep=cost.ep_forward / v, bwd_ep=cost.ep_backward / v,
                     fwd_cp=cost.cp_forward / v, bwd_cp=cost.cp_backward / v)


def cost_table(model: ModelSpec, system: SystemSpec, layout: Layout,
               network: NetworkModel | None = None) -> dict:
    """stage -> (StageWork, StageComm): what the simulation needs, from the same
    functions as the analytic estimate (small and picklable)."""
    network = network or network_for(system)
    compute = ComputeModel.for_system(system, layout.precision)
    job = layout.job(system.ranks_per_node)
    runs = layout.stage_runs(model)
    kinds = _stage_costs(model, layout, network, compute, job, [f for f, _ in runs])
    table = {}
    for first, n in runs:
        entry = (stage_work(kinds[first], layout.layer_chunks),
                 stage_comm(model, system, layout, network, compute, job, first))
        table.update({i: entry for i in range(first, first + n)})
    return table


# What a step of each kind runs (perfmodel.schedules.STEP_KINDS): (compute, TP
# collectives, a mixture of experts' all-to-alls, context parallelism's exposed ring)
# of one chunk, given whether the schedule splits the backward into B
# (the input gradient, sent on) and W (the weight gradients, Qi et al. 2023). A forward
# keeps its activations and sends its output on; the backward's B rebuilds a full
# recompute and sends its gradient on; the step that computes the weight gradients (W,
# else B) reduces them and frees the activations.
STEP_WORK = {
    "F": lambda work, split: (work.fwd_compute, work.fwd_tp, work.fwd_ep, work.fwd_cp),
    "B": lambda work, split: (work.bwd_compute - (work.wgrad if split else 0.0), work.bwd_tp,
                              work.bwd_ep, work.bwd_cp),
    "W": lambda work, split: (work.wgrad, 0.0, 0.0, 0.0),
}


class Wire:
    """One stage's network: the transfers on it now (its own TP collective or pipeline
    send, and its data-parallel stream's reduction or gather), each advancing at its
    speed, seconds of its own (alone) time per second. The speeds are solved again
    whenever a transfer starts or ends, so one left alone goes back to full speed.
    ``speed(kind, other)`` is a kind's speed while another runs
    (topologies.sharing); at most one transfer of each kind runs at a time (a stage's
    own transfers block it; its stream runs one at a time)."""

    def __init__(self, it: "Iteration", speed):
        self.it, self.env, self.speed = it, it.env, speed
        self.active: list[list] = []    # [kind, seconds left alone, speed, done]
        self.last = 0.0                 # when ``active``'s seconds left were counted
        self.generation = 0             # of the latest solve: an older wake-up is stale

    def transfer(self, kind: str, seconds: float) -> simpy.Event:
        """The event of a transfer of ``seconds`` (alone) of ``kind`` ending."""
        self.it.events += 1
        done = self.env.event()
        if seconds <= 0:
            return done.succeed()
        self._advance()
        self.active.append([kind, seconds, 1.0, done])
        self._solve()
        return done

    def _advance(self) -> None:
        elapsed = self.env.now - self.last
        for t in self.active:
            t[1] -= elapsed * t[2]
        self.last = self.env.now

    def _solve(self) -> None:
        kinds = [t[0] for t in self.active]
        for t in self.active:
            t[2] = min((self.speed(t[0], k) for k in kinds if k != t[0]), default=1.0)
        until = [t[1] / t[2] if t[2] > 0 else math.inf for t in self.active]
        first = min(until)
        self.generation += 1
        if first < math.inf:
            # the transfers that end first end at the wake-up, whatever rounding leaves
            due = [t for t, u in zip(self.active, until) if u <= first * (1 + 1e-9)]
            wake = self.env.timeout(max(0.0, first))
            wake.callbacks.append(partial(self._wake, self.generation, due))

    def _wake(self, generation: int, due: list, _event) -> None:
        if generation != self.generation:
            return
        self._advance()
        for t in due:
            t[3].succeed()
        self.active = [t for t in self.active if t not in due]
        if self.active:
            self._solve()


@dataclass
class Iteration:
    """What the processes of one simulated iteration share: the environment, the
    inputs, the events that link the stages, and what they account (busy time by
    category, memory, the stages' reports). Passed explicitly to every process."""

    env: simpy.Environment
    model: ModelSpec
    layout: Layout
    costs: object                      # stage -> (StageWork, StageComm)
    steps: list                        # per stage, its schedule's steps
    trace: Trace | None = None
    noise: Noise | None = None
    slow: set = field(default_factory=set)
    rng: object = None
    events: int = 0     # timed segments (compute, transfers), a lumped step's each counted
    sent: dict = field(default_factory=dict)       # (stage, step) -> output delivered
    busy: list = field(default_factory=list)       # per stage, seconds by category
    memory: list = field(default_factory=list)     # per stage, bytes held now ...
    peaks: list = field(default_factory=list)      # ... and at most
    reports: list = field(default_factory=list)
    arrived: dict = field(default_factory=dict)    # both pipeline ends done (tied sync)
    system: SystemSpec | None = None
    network: NetworkModel | None = None    # the system's, found when first needed
    shared: dict = field(default_factory=dict)     # SimResult.shared_links

    def network_model(self) -> NetworkModel:
        if self.network is None:
            self.network = network_for(self.system)
        return self.network

    def wait(self, d: float, stage: int = -1, jitter: bool = False) -> simpy.Timeout:
        """A timeout of ``d`` seconds (compute: with the noise's jitter and stragglers)."""
        self.events += 1
        if jitter and self.rng is not None:
            d *= math.exp(self.rng.gauss(0.0, self.noise.jitter)) \
                if self.noise.jitter > 0 else 1.0
        if jitter and stage in self.slow:
            d *= self.noise.straggler_slowdown
        return self.env.timeout(max(d, 0.0))

    def transfer(self, wire: Wire | None, kind: str, d: float) -> simpy.Event:
        """A transfer of ``d`` seconds (alone) of ``kind``: on a stage's wire, or a plain
        timeout where the stage shares no link."""
        return self.wait(d) if wire is None else wire.transfer(kind, d)

    def delivered(self, stage: int, step: Step) -> simpy.Event:
        """The event of ``step``'s output on ``stage`` reaching its consumer."""
        key = (stage, step.kind, step.micro_batch, step.chunk)   # (plain: hashed fast)
        event = self.sent.get(key)
        if event is None:
            event = self.sent[key] = self.env.event()
        return event

    def hold(self, stage: int, nbytes: float) -> None:
        """``nbytes`` more (or fewer) held by ``stage`` from now on."""
        self.memory[stage] += nbytes
        self.peaks[stage] = max(self.peaks[stage], self.memory[stage])
        if self.trace is not None:
            self.trace.memory(stage, self.env.now, self.memory[stage])

    def account(self, stage: int, category: str, t0: float) -> None:
        """The time since ``t0`` as busy in ``category`` on ``stage``."""
        self.busy[stage][category] += self.env.now - t0

    def span(self, stage: int, track: str, name, kind: str, t0: float, prefix: str = "",
             **args) -> None:
        """A trace span from ``t0`` to now on stage ``stage``'s track (``track``: "" for the
        stage's own, else a suffix such as " p2p"), named ``prefix`` + ``name`` (made a
        string only when there is a trace), with its stage and kind (a step kind, send,
        dp, optimizer) as structured arguments."""
        if self.trace is not None:
            self.trace.span(f"stage {stage}{track}", f"{prefix}{name}", t0, self.env.now,
                            stage=stage, kind=kind, **args)


# The most schedule steps the simulator runs for one question (an iteration, or all the
# seeds of --runs): about half a minute on a 2-core machine; past it the analytic
# estimate (plan) answers alone. A plan simulates the layouts it shows only up to
# PLAN_STEPS each (a few seconds), a report's timeline the same.
MAX_STEPS = 1_000_000
PLAN_STEPS = 100_000


def simulated_steps(layout: Layout, runs: int = 1) -> int:
    """The schedule steps of ``runs`` simulated iterations of ``layout``: a step per
    kind (F, B, W) per micro-batch per chunk per stage."""
    return (layout.pp * layout.micro_batches * layout.virtual_stages
            * len(layout.schedule_spec.kinds) * runs)


def steps_error(layout: Layout, runs: int = 1, limit: int = MAX_STEPS,
                what: str = "the simulator runs", noise_free: bool = False) -> SpecError | None:
    """Why ``runs`` iterations of ``layout`` (and with ``noise_free`` one more, the
    noise-free one beside noisy seeds) are too many steps to simulate, or None."""
    n = simulated_steps(layout, runs + noise_free)
    if n <= limit:
        return None
    seeds = (f" x {runs:,} runs" + (" and the noise-free one" if noise_free else "")
             if runs > 1 else "")
    return SpecError("global_batch", f"{layout.micro_batches:,} micro-batches a pipeline on "
                                     f"{layout.pp} stages{seeds} are {n:,} schedule steps to "
                                     f"simulate, more than the {limit:,} {what}: fewer "
                                     f"micro-batches a pipeline (--global-batch, --dp, "
                                     f"--micro-batch)" + (" or fewer --runs" if runs > 1 else "")
                                     + ", or `fugakuperf plan` for the analytic estimate alone")


def simulate(model: ModelSpec, system: SystemSpec, layout: Layout,
             network: NetworkModel | None = None, *, trace: Trace | None = None,
             noise: Noise | None = None, validate: bool = True, costs=None) -> SimResult:
    """Simulate one iteration. ``costs`` may give the per-stage costs instead of the
    network and compute models: a function stage -> (StageWork, StageComm), e.g. a
    ``cost_table``'s ``__getitem__`` or synthetic costs in tests."""
    if validate:
        validate_layout(layout, model)
    err = steps_error(layout)
    if err is not None:
        raise err
    spec = layout.schedule_spec
    unrun = [k for k in spec.kinds if k not in STEP_WORK]
    if unrun:
        raise SpecError("schedule", f"{spec.name} has steps of kind {unrun[0]!r}, which the "
                                    f"simulator does not run; it runs {', '.join(STEP_WORK)}")
    p, v, m = layout.pp, layout.virtual_stages, layout.micro_batches
    if costs is None:
        costs = cost_table(model, system, layout, network).__getitem__
    it = Iteration(env=simpy.Environment(), model=model, layout=layout, costs=costs,
                   steps=schedule(layout.schedule, p, m, v), trace=trace, noise=noise,
                   slow=_slow_stages(layout, system, noise, p), rng=_rng(noise),
                   busy=[{c: 0.0 for c in CATEGORIES} for _ in range(p)],
                   memory=[0.0] * p, peaks=[0.0] * p, system=system, network=network)
    it.arrived = {i: it.env.event() for i in (0, p - 1)}
    if trace is not None:
        trace.tp_label = _tp_label(model, layout)
    for i in range(p):
        it.env.process(stage_process(it, i))
    it.env.run()
    reports = sorted(it.reports, key=lambda r: r.stage)
    if len(reports) != p:
        raise RuntimeError("simulation deadlocked: a schedule step waited for a step that "
                           "never ran")
    crit = max(reports, key=lambda r: r.end_s)
    iteration = crit.end_s
    breakdown = dict(crit.busy_s)
    breakdown["bubble"] = crit.idle_s
    return SimResult(
        iteration_s=iteration,
        tokens_per_s=layout.global_batch * model.seq / iteration,
        # idle up to the iteration's end: a stage that finishes early waits too
        bubble_fraction=sum(iteration - r.end_s + r.idle_s for r in reports) / (p * iteration),
        breakdown=breakdown, stages=reports,
        peak_memory_bytes=max(r.peak_memory_bytes for r in reports),
        events=it.events, critical_stage=crit.stage, shared_links=it.shared)


@dataclass
class StageState:
    """One stage's own part of the iteration: its costs, its data-parallel stream, the
    reductions it has queued, and what it holds in memory per step."""

    work: StageWork
    comm: object                       # StageComm
    stream: simpy.Store
    recompute: str                     # the stage's recompute mode
    activations: float                 # bytes one chunk's forward leaves until its backward
    full_layer: float                  # bytes of one layer rebuilt by a full recompute
    last_backward: dict                # chunk -> index of its last weight-gradient step
    wire: Wire | None = None           # None: nothing the stage sends shares a link
    split: bool = False                # the schedule runs B and W apart
    pending: list = field(default_factory=list)


def stage_process(it: Iteration, i: int):
    """Pipeline stage ``i``: its schedule's steps in order, then the end of the
    iteration (gradients reduced, tied embedding summed, optimizer step, ZeRO gather)."""
    layout = it.layout
    work, comm = it.costs(i)
    state = StageState(
        work=work, comm=comm, stream=simpy.Store(it.env), recompute=layout.stage_recomputes(i),
        activations=micro_batch_activation_bytes(it.model, layout, i) / layout.layer_chunks,
        full_layer=activation_bytes_per_layer(it.model, layout.tp, layout.micro_batch,
                                              layout.sequence_parallel, "none",
                                              layout.precision, layout.attention,
                                              cp=layout.cp),
        last_backward=_last_backwards(it.steps[i], layout.schedule_spec.split),
        wire=_wire(it, work, comm), split=layout.schedule_spec.split)
    it.env.process(dp_stream(it, i, state.stream, state.wire))
    it.memory[i] = it.peaks[i] = _static_memory(it.model, layout, i)
    if it.trace is not None:
        it.trace.memory(i, it.env.now, it.memory[i])
    for k, step in enumerate(it.steps[i]):
        yield from step_process(it, i, state, k, step)
    yield from finish_process(it, i, state)


def _wire(it: Iteration, work: StageWork, comm) -> Wire | None:
    """A stage's wire, when a transfer of its data-parallel stream can slow one of its
    own or be slowed by it (None: every pair that can run at once crosses no common
    link). Its stream's reductions overlap only with ``overlap_dp``; its weight
    gathers are prefetched beside the compute whatever it says."""
    layout = it.layout
    act = activation_message(it.model, layout)
    own = [(kind, message) for kind, message, seconds in (
        ("tp", Stream("reduce-scatter" if layout.sequence_parallel else "allreduce", "tp", act),
         work.fwd_tp + work.bwd_tp),
        ("pp", Stream("p2p", "pp", act / layout.tp), work.p2p)) if seconds > 0]
    stream = [(kind, message) for kind, message in comm.messages
              if kind == "gather" or layout.overlap_dp]
    if not own or not stream:
        return None
    job = layout.job(it.system.ranks_per_node)
    network = it.network_model()
    table = {}
    for kind, message in stream:
        for other, theirs in own:
            table[kind, other], table[other, kind] = speeds(network, job, message, theirs)
    slowed = {f"{kind} beside {other}": speed for (kind, other), speed in table.items()
              if speed < 1.0}
    if not slowed:
        return None
    for name, speed in slowed.items():
        it.shared[name] = min(speed, it.shared.get(name, 1.0))
    return Wire(it, lambda kind, other: table.get((kind, other), 1.0))


def _last_backwards(steps: list[Step], split: bool) -> dict[int, int]:
    """chunk -> the index in ``steps`` of its last step that computes weight gradients
    (its last W, or whole B, where the schedule splits the backward; else its last B)."""
    return {step.chunk: k for k, step in enumerate(steps)
            if step.kind == ("W" if split else "B") or (split and step.whole)}


def step_process(it: Iteration, i: int, state: StageState, k: int, step: Step):
    """Step ``k`` of stage ``i``: wait for its input, run its layers (compute, then the
    layer's TP collectives; where the sharding mode gathers weights for the pass
    (ZeRO-3, FSDP) each layer waits for its own, queued ``prefetch`` layers ahead; a
    backward queues each gradient bucket as it fills, and on a CPU node spends the
    bucket's reduction arithmetic on its cores), then send its output on."""
    layout, work, comm = it.layout, state.work, state.comm
    p, v = layout.pp, layout.virtual_stages
    v_shape, mirrored = layout.schedule_spec.v_shape, layout.schedule_spec.mirrored
    dep = producer(step, i, p, v, v_shape, mirrored)
    if dep is not None:                    # (on this stage itself: already delivered)
        yield it.delivered(*dep)
    if step.paired:                        # an overlapped pair waits for both inputs
        dep = producer(it.steps[i][k + 1], i, p, v, v_shape, mirrored)
        if dep is not None:
            yield it.delivered(*dep)
    kind = STEP_KINDS[step.kind]
    forward, split = kind.forward, state.split
    whole = split and step.whole           # a B with its W (DualPipe's whole backward)
    comp, tp, ep, ring = STEP_WORK[step.kind](work, split and not whole)
    # the backward's first step (B) rebuilds and recomputes; the one computing the
    # weight gradients (W, or B when not split) reduces them and frees the activations
    first = not forward and not kind.weights_only
    grads = not forward and (kind.weights_only or not split or whole)
    rc_share = 0.0 if not first or not (comp + tp) else work.recompute / (comp + tp)
    rebuilds = first and state.recompute == "full"
    if rebuilds:
        it.hold(i, state.full_layer)
    # (a W needs no weights: dW = X^T dY)
    gather = (comm.ag_forward if forward else comm.ag_backward if first else 0.0) / v
    # ZeRO-3, FSDP: the step's weights in units (a layer each, or one flat buffer), each
    # queued on the stream ``prefetch`` layers ahead of the layer that needs it
    units = (1 if layout.gather == "stage" else work.layers) if gather else 0
    gathers = [it.env.event() for _ in range(units)]
    queued = 0
    env, busy, tracing = it.env, it.busy[i], it.trace is not None
    parts = [(part, length) for part, length in (("compute", comp / work.layers),
                                                 ("tp_comm", tp / work.layers),
                                                 ("ep_comm", ep / work.layers),
                                                 ("cp_comm", ring / work.layers))
             if length > 0]
    reduce, cpu = _step_reduction(comm, layout, grads, k == state.last_backward[step.chunk])
    pieces = min(work.layers, max(1, round(comm.buckets / v)))
    # Nothing waits on, shares a link with, or draws noise for a layer's segments (no
    # weight gathers, no gradient bucket, no wire, no jitter or straggler, no trace): the
    # step's layers run as one wait, each part accounted as the loop would.
    lumped = not (units or reduce or tracing or state.wire is not None
                  or it.rng is not None or i in it.slow)
    if lumped:
        t0 = env.now
        per_layer = sum(length for _, length in parts)
        yield it.wait(work.layers * per_layer)
        it.events += work.layers * len(parts) - 1        # (the segments it stands for)
        spent = env.now - t0
        for part, length in parts:
            rc = rc_share if part in ("compute", "tp_comm") else 0.0
            busy["recompute"] += spent * length / per_layer * rc
            busy[part] += spent * length / per_layer * (1 - rc)
    for layer in range(0 if lumped else work.layers):
        if units and layer < units:       # ... each layer waits only for its own
            while queued < min(units, layer + 1 + layout.prefetch):
                state.stream.put((gather / units, "gather", gathers[queued]))
                queued += 1
            t0 = env.now
            yield gathers[layer]
            it.account(i, "dp_comm", t0)
        for part, length in parts:        # a layer: its compute, then its TP collectives
            t0 = env.now
            if part == "tp_comm":
                yield it.transfer(state.wire, "tp", length)
            elif part in ("ep_comm", "cp_comm"):
                yield it.transfer(state.wire, part[:2], length)
            else:
                yield it.wait(length, i, jitter=True)
            spent = env.now - t0
            # (the re-run forward's all-to-alls and ring count as ep_comm and cp_comm)
            rc = rc_share if part in ("compute", "tp_comm") else 0.0
            busy["recompute"] += spent * rc
            busy[part] += spent * (1 - rc)
            if tracing:                    # (the hot loop: no call without a trace)
                it.span(i, "", step, step.kind, t0, part=part, layer=layer,
                        recompute=bool(rc_share))
        covered = (layer + 1) * pieces // work.layers - layer * pieces // work.layers
        if reduce and covered:             # a gradient bucket is full: onto the stream
            share = covered / pieces
            done = it.env.event()
            state.stream.put((reduce * share, "reduce", done))
            state.pending.append(done)
            t0 = it.env.now
            if not layout.overlap_dp:          # no overlap: wait for it here
                yield done
            elif cpu:                          # its arithmetic takes the compute cores
                yield it.wait(cpu * share)
            if not layout.overlap_dp or cpu:
                it.account(i, "dp_comm", t0)
    if rebuilds:
        it.hold(i, -state.full_layer)
    if forward or grads:
        it.hold(i, state.activations if forward else -state.activations)
    fed = consumed_by(step, i, p, v, v_shape, mirrored)
    to = None if fed is None else fed[0]
    if to is not None and to != i:
        t0 = it.env.now
        yield it.transfer(state.wire, "pp", work.p2p)
        it.account(i, "pp_comm", t0)
        it.span(i, " p2p", step, "send", t0, prefix="send ", step=str(step), to_stage=to,
                to_step=str(fed[1]))
    it.delivered(i, step).succeed()


def _tp_label(model: ModelSpec, layout: Layout) -> str:
    """What one layer's tensor-parallel traffic is: two collectives of the layer's
    activations a pass (after attention and after the MLP; Megatron-LM)."""
    nbytes = activation_message(model, layout)
    op = "reduce-scatter + all-gather" if layout.sequence_parallel else "all-reduce"
    return f"TP {op}, 2 x {nbytes / 1e6:.3g} MB a layer"


def _step_reduction(comm, layout: Layout, grads: bool, last: bool) -> tuple[float, float]:
    """(seconds on the stream, seconds of arithmetic on the compute cores) of the
    gradient reduction a step that computes weight gradients (``grads``: a B, or a W
    where the backward is split) queues: every such step's (ZeRO-2/3, FSDP), or the
    last one's of each chunk when it overlaps (ZeRO-0/1; without overlap the whole
    reduction is queued at the end). The arithmetic counts only when it overlaps:
    otherwise it is inside the reduction the stage waits for."""
    v = layout.virtual_stages
    if not grads:
        return 0.0, 0.0
    if comm.reduce_per_micro_batch:
        return (comm.reduce_per_micro_batch / v,
                comm.reduce_cpu_per_micro_batch / v if layout.overlap_dp else 0.0)
    if comm.reduce and last and layout.overlap_dp:
        return comm.reduce / v, comm.reduce_cpu / v
    return 0.0, 0.0


def finish_process(it: Iteration, i: int, state: StageState):
    """Stage ``i`` after its last step: the gradient reductions drain (queued now
    without overlap), both ends of the pipeline sum the tied embedding together, the
    optimizer steps and (ZeRO-1/2) the updated weights are gathered; its report."""
    layout, comm = it.layout, state.comm
    p = layout.pp
    if comm.reduce and not layout.overlap_dp:
        done = it.env.event()
        state.stream.put((comm.reduce, "reduce", done))
        state.pending.append(done)
    t0 = it.env.now
    if state.pending:
        yield simpy.AllOf(it.env, state.pending)
    it.account(i, "dp_comm", t0)
    if comm.tied_sync:                         # both ends of the pipeline, together
        it.arrived[i].succeed()
        yield simpy.AllOf(it.env, [it.arrived[0], it.arrived[p - 1]])   # waiting is idle
        t0 = it.env.now
        yield it.wait(comm.tied_sync)
        it.account(i, "dp_comm", t0)
    t0 = it.env.now
    yield it.wait(comm.optimizer)
    it.account(i, "optimizer", t0)
    it.span(i, "", "optimizer", "optimizer", t0)
    if comm.gather_after:
        t0 = it.env.now
        yield it.wait(comm.gather_after)
        it.account(i, "dp_comm", t0)
    end = it.env.now
    it.reports.append(StageReport(i, end, dict(it.busy[i]), _idle(end, it.busy[i]),
                                  it.peaks[i]))


def dp_stream(it: Iteration, i: int, stream: simpy.Store, wire: Wire | None):
    """Stage ``i``'s data-parallel stream: the reductions and gathers queued on it, one
    after the other (on the stage's wire, if it has one), each signalling its event
    when done."""
    while True:
        length, name, done = yield stream.get()
        t0 = it.env.now
        yield it.transfer(wire, name, length)
        it.span(i, " dp stream", name, "dp", t0)
        done.succeed()


def _idle(end: float, busy: dict) -> float:
    """A stage's time not busy in any category up to ``end``. The busy times are sums of
    the same clock's differences, so a stage that never waited comes out at a rounding
    error from zero (-4e-14 s), said as 0, never as a negative idle time or bubble."""
    idle = end - sum(busy.values())
    return 0.0 if abs(idle) <= 1e-9 * end else idle


def _static_memory(model: ModelSpec, layout: Layout, stage: int) -> float:
    mem = stage_memory(model, layout.replace(recompute="none", recompute_stages=None), stage)
    return mem.weights + mem.gradients + mem.optimizer + mem.buffers


def _slow_stages(layout: Layout, system: SystemSpec, noise: Noise | None, p: int) -> set:
    if noise is None or not noise.active or noise.straggler_fraction <= 0:
        return set()
    import random
    rng = random.Random(noise.seed * 7919 + 1)
    nodes = max(1, layout.tp * layout.replicas // system.ranks_per_node)
    prob = 1 - (1 - noise.straggler_fraction) ** nodes
    return {i for i in range(p) if rng.random() < prob}


def _rng(noise: Noise | None):
    if noise is None or noise.jitter <= 0:
        return None
    import random
    return random.Random(noise.seed)


def simulate_with_noise(model, system, layout, noise: Noise, runs: int, *,
                        trace: Trace | None = None) -> tuple[SimResult, dict | None]:
    """The noise-free iteration and, when ``noise`` is active, ``runs`` seeds of it beside
    (``simulate_runs``); ``trace`` records the first noisy run, else the noise-free one."""
    sim = simulate(model, system, layout, trace=None if noise.active else trace)
    if not noise.active:
        return sim, None
    return sim, simulate_runs(model, system, layout, noise, runs, trace=trace)


def simulate_runs(model, system, layout, noise: Noise, runs: int, network=None, *,
                  trace: Trace | None = None) -> dict:
    """Iteration time over ``runs`` seeds (``noise.seed``, ``noise.seed + 1``, ...): the
    mean, the 99th percentile (nearest rank: below 100 runs it is the largest), the
    minimum and the maximum. ``trace`` records the first run (seed ``noise.seed``). The
    per-stage costs are the same for every seed, so they are priced once."""
    from fpcore.errors import check_int
    runs = check_int("runs", runs)
    err = steps_error(layout, runs)
    if err is not None:
        raise err
    costs = cost_table(model, system, layout, network).__getitem__
    times = sorted(simulate(model, system, layout, network, costs=costs,
                            trace=trace if r == 0 else None,
                            noise=Noise(noise.jitter, noise.straggler_fraction,
                                        noise.straggler_slowdown, noise.seed + r)).iteration_s
                   for r in range(runs))
    p99 = times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)]
    return {"runs": runs, "seeds": [noise.seed, noise.seed + runs - 1],
            "mean_s": sum(times) / runs, "p99_s": p99, "min_s": times[0], "max_s": times[-1]}
