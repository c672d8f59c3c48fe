"""The analytic estimator: one training iteration from op costs and collectives.

Per micro-batch, pipeline stage i spends ``w_i = f_i + b_i + 2 c`` (forward,
backward including recomputation and the TP collectives inside each layer, and
the activation / gradient transfers to its neighbours). A 1F1B or GPipe pipeline
of m micro-batches then takes

    T_pipe = m * max_i w_i + sum_i fill_i - fill_(the slowest)

(fill_i the schedule's fill and drain of stage i, perfmodel.schedules: w_i for 1F1B
and GPipe, w_i / v for an interleaved schedule of v virtual stages, so that with
equal stages this is (m + (p - 1) / v) w, the Narayanan et al. 2021 bubble; the
zero-bubble schedules' and DualPipeV's from their published bubbles). Stage i
finishes its last backward the sum of the earlier stages' drains before stage 0
does (b_j / v for 1F1B); then it reduces its gradients over the data-parallel
replicas in one bucket per layer (overlapping its last backward when allowed;
ZeRO-2/3 reduce and gather every micro-batch instead) and steps the optimizer. The
iteration ends when the last stage is done. Stages come in a few kinds (first,
recomputing middle, plain middle, last, and where the layers or a mixture of
experts' MoE layers differ), so only one stage of each kind is costed.

The breakdown is taken on that critical stage and adds up to the iteration time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from fpcore.caches import cached

from topologies import JobShape, NetworkModel
from topologies.sharing import Stream

from .compute import ComputeModel
from .layout import Layout, validate_layout
from .memory import MemoryBreakdown, pipeline_memory, stage_param_parts
from .model import ModelSpec
from .ops import (embedding_ops, head_ops, layer_ops, model_flops_per_iteration, vocab_shard,
                  weight_gradient)
from .precisions import ACT_BYTES, GRAD_BYTES, OPTIMIZER_BYTES
from .sharding import gathers_per_layer
from .system import SystemSpec


@dataclass(frozen=True)
class Breakdown:
    """Seconds of one iteration on the critical stage; the parts add up to the total."""

    compute: float
    recompute: float
    tp_comm: float
    pp_comm: float
    bubble: float
    dp_comm: float
    optimizer: float
    ep_comm: float = 0.0     # a mixture of experts' all-to-alls (dispatch and combine)
    cp_comm: float = 0.0     # context parallelism's key/value ring, where not hidden

    @property
    def total(self) -> float:
        return sum(asdict(self).values())

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StageCost:
    """One pipeline stage, one micro-batch (seconds)."""

    forward: float        # compute + TP collectives
    backward: float       # compute + recompute + TP collectives
    compute: float        # forward + backward compute, no recompute
    recompute: float      # recompute compute and its TP collectives
    tp_comm: float        # TP collectives (forward and backward, no recompute)
    p2p: float            # one activation (or gradient) transfer to a neighbour
    tp_forward: float = 0.0    # TP collectives inside the forward
    tp_backward: float = 0.0   # ... inside the backward, recompute's included
    layers: int = 1
    wgrad: float = 0.0         # the backward's weight-gradient compute (in ``backward``)
    # a mixture of experts' all-to-alls, forward and backward (in ``forward`` and
    # ``backward``, not in the TP figures)
    ep_forward: float = 0.0
    ep_backward: float = 0.0
    # context parallelism's key/value ring, forward and backward, where the attention
    # does not hide it (in ``forward`` and ``backward``)
    cp_forward: float = 0.0
    cp_backward: float = 0.0

    @property
    def ep_comm(self) -> float:
        return self.ep_forward + self.ep_backward

    @property
    def cp_comm(self) -> float:
        return self.cp_forward + self.cp_backward


@dataclass(frozen=True)
class Estimate:
    model: ModelSpec
    system: SystemSpec
    layout: Layout
    nodes: int
    iteration_s: float
    breakdown: Breakdown
    stages: tuple[StageCost, ...]
    memory: tuple[MemoryBreakdown, ...]
    model_flops: float             # per iteration, all ranks (MFU numerator)
    network: str = field(default="")
    placement: tuple[str, ...] = ()    # where ranks sit, when the network model places them

    @property
    def tokens_per_iteration(self) -> int:
        return self.layout.global_batch * self.model.seq

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_iteration / self.iteration_s

    @property
    def model_flops_per_s_per_node(self) -> float:
        return self.model_flops / self.iteration_s / self.nodes

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation: model FLOP/s over peak at the training precision."""
        return self.model_flops_per_s_per_node / self.system.node.peak_flops(self.layout.precision)

    @property
    def peak_memory(self) -> MemoryBreakdown:
        return max(self.memory, key=lambda m: m.total)

    @property
    def memory_bytes_per_node(self) -> float:
        return self.peak_memory.total * self.system.ranks_per_node

    @property
    def memory_fits(self) -> bool:
        return self.peak_memory.total <= self.system.rank.usable_memory_bytes

    def time_to_train_s(self, tokens: float) -> float:
        return tokens / self.tokens_per_s

    def node_hours(self, tokens: float) -> float:
        return self.nodes * self.time_to_train_s(tokens) / 3600.0

    def energy_mwh(self, tokens: float) -> float | None:
        """Node-hours x power per node; None when the system gives no power figure
        (power_w 0: a preset with no sourced figure says so)."""
        power = self.system.node.power_w
        return self.node_hours(tokens) * power / 1e6 if power > 0 else None


class _NetworkInputs:
    """A system as far as its network model reads it: systems that differ only in
    their compute or memory share one network model, and with it every collective and
    routed pattern it has priced (a co-design sweep varies the node under one torus)."""

    __slots__ = ("system", "key")

    def __init__(self, system: SystemSpec):
        self.system = system
        self.key = (system.network, system.stack.algorithms, system.collective_fits,
                    system.rank.intra_node_bandwidth, system.node.reduce_bandwidth,
                    system.ranks_per_node, system.job_shape)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _NetworkInputs) and self.key == other.key


def network_for(system: SystemSpec) -> NetworkModel:
    """The network backend a system asks for: the flow-level torus model (routed,
    shared links on the job's allocated shape) or the contention-free alpha-beta one;
    with calibrated collectives, the fitted alpha-beta costs per collective. Its
    collectives run the algorithms of the system's stack (``collective_algorithms``)."""
    return _network(_NetworkInputs(system))


@cached("network", maxsize=256)
def _network(inputs: _NetworkInputs) -> NetworkModel:
    system = inputs.system
    net = system.network
    algorithms = system.stack.algorithms
    if system.collective_fits:
        from topologies.fitted import FittedCollectives
        return FittedCollectives(fits=system.collective_fits)
    if net.model == "analytic":
        from topologies.analytic import AlphaBetaTorus
        return AlphaBetaTorus(latency_s=net.latency_s,
                              link_bandwidth=net.effective_link_bandwidth,
                              injection_bandwidth=net.effective_injection_bandwidth,
                              intra_node_bandwidth=system.rank.intra_node_bandwidth,
                              ring_links=2 if net.kind == "torus" else 1,
                              reduce_bandwidth=system.node.reduce_bandwidth or None,
                              algorithms=algorithms)
    if net.kind == "fattree":
        from topologies.fattree import FatTree
        from topologies.switched import SwitchedNetwork
        tree = FatTree(nodes=1, nic_bandwidth=net.effective_link_bandwidth,
                       devices_per_node=system.ranks_per_node, nics_per_node=net.nics_per_node,
                       nodes_per_leaf=net.nodes_per_leaf, oversubscription=net.oversubscription,
                       switch_bandwidth=system.rank.intra_node_bandwidth)
        return SwitchedNetwork(tree, put_latency_s=net.put_latency_s,
                               mpi_latency_s=net.latency_s,
                               intra_node_latency_s=net.intra_node_latency_s,
                               hop_latency_s=net.hop_latency_s,
                               reduce_bandwidth=system.node.reduce_bandwidth or None,
                               algorithms=algorithms)
    from topologies.tofu import TofuNetwork
    machine = machine_shape(system)
    return TofuNetwork(
        link_bandwidth=net.effective_link_bandwidth,
        injection_bandwidth=net.effective_injection_bandwidth,
        intra_node_bandwidth=system.rank.intra_node_bandwidth,
        put_latency_s=net.put_latency_s, mpi_latency_s=net.latency_s,
        intra_node_latency_s=net.intra_node_latency_s, hop_latency_s=net.hop_latency_s,
        reduce_bandwidth=system.node.reduce_bandwidth or None, machine=machine,
        machine_wrap=net.wrap, job_torus=net.job_torus, strategy=net.mapping,
        shape=system.job_allocation, algorithms=algorithms)


@cached("network", maxsize=256)
def screening_network(system: SystemSpec) -> NetworkModel:
    """The fast, contention-free model the search ranks candidates with."""
    if system.network.model == "analytic" or system.collective_fits:
        return network_for(system)
    return network_for(system.with_options(network_model="analytic"))


def machine_shape(system: SystemSpec):
    """The allocation rules of a torus system, in the terms topologies/ uses
    (topologies.allocation.MachineShape; a SpecError for a network without them)."""
    return system.network.machine


@cached("network", maxsize=65536)
def _collective(network: NetworkModel, op: str, dim: str, job: JobShape, nbytes: float) -> float:
    return network.collective(op, dim, job, nbytes).seconds


@cached("network", maxsize=65536)
def _p2p(network: NetworkModel, dim: str, job: JobShape, nbytes: float) -> float:
    return network.p2p(dim, job, nbytes).seconds


@cached("model", maxsize=16384)
def _layer_times(model: ModelSpec, compute: ComputeModel, tp: int, mb: int, sp: bool,
                 precision: str, attention: str = "materialized", moe: bool = False,
                 ep: int = 1, load: float = 1.0, cp: int = 1, expert_tp: bool = True
                 ) -> tuple[float, float, float, float, float]:
    """(forward, backward, selective recompute, full recompute, the backward's weight
    gradients) compute of one layer (``moe``: of one of a mixture of experts' MoE
    layers, on ``ep`` expert-parallel ranks at ``load``, its experts split over the TP
    ranks or whole on each, ``expert_tp``; on one of ``cp`` context-parallel ranks)."""
    ops = layer_ops(model, tp, mb, sp, precision, attention, moe, ep, load, cp, expert_tp)
    return (compute.ops_time(ops.forward), compute.ops_time(ops.backward),
            compute.ops_time(ops.recompute("selective")), compute.ops_time(ops.recompute("full")),
            compute.ops_time(ops.weight_gradient))


def activation_message(model: ModelSpec, layout: Layout) -> float:
    """Bytes of one micro-batch's activations at a layer boundary (seq / cp x hidden per
    sequence): what each TP collective of a layer moves, and t times a pipeline send."""
    return (layout.micro_batch * model.seq // layout.cp * model.hidden
            * ACT_BYTES[layout.precision])


@cached("model", maxsize=16384)
def _ring_times(model: ModelSpec, compute: ComputeModel, network: NetworkModel, job: JobShape,
                tp: int, cp: int, mb: int, sp: bool, precision: str, attention: str
                ) -> tuple[float, float]:
    """Context parallelism's key/value ring of one layer, forward and backward, as far as
    the attention's own compute does not hide it (Megatron-Core's ring attention
    sends each step's keys and values while it computes on the last ones): forward,
    the ranks pass their s / cp keys and values round the cp ranks, an all-gather of
    a sequence's K and V; backward, again, and their gradients back (twice)."""
    if cp == 1:
        return 0.0, 0.0
    kv = 2 * mb * model.seq * max(1, model.kv_heads // tp) * model.head_dim
    ring = _collective(network, "allgather", "dp", JobShape(job.tp, job.pp, cp,
                                                            job.ranks_per_node),
                       kv * ACT_BYTES[precision])
    ops = layer_ops(model, tp, mb, sp, precision, attention, cp=cp)
    core = [op for op in ops.forward if op.name in ops.attention_core]
    forward = compute.ops_time(core)
    backward = compute.ops_time([op.scaled(op.backward, ".bwd") for op in core])
    return max(0.0, ring - forward), max(0.0, 2 * ring - backward)


def _tp_collective(network: NetworkModel, job: JobShape, nbytes: float, sp: bool) -> float:
    """One TP all-reduce of a layer (a reduce-scatter + all-gather with sequence parallelism)."""
    if job.tp == 1:
        return 0.0
    if sp:
        return (_collective(network, "reduce-scatter", "tp", job, nbytes)
                + _collective(network, "allgather", "tp", job, nbytes))
    return _collective(network, "allreduce", "tp", job, nbytes)


def layout_lower_bound(model: ModelSpec, system: SystemSpec, layout: Layout,
                       network: NetworkModel | None = None) -> float:
    """A time ``estimate`` can never go below for this layout (any ZeRO / recompute).

    Every stage runs at least its layers' forward and backward compute and their TP
    collectives per micro-batch: the pipeline pays m of the heaviest stage's and, for
    its fill and drain, the others' divided by v.
    """
    network = network or network_for(system)
    compute = ComputeModel.for_system(system, layout.precision)
    job = layout.job(system.ranks_per_node)
    args = (model, compute, layout.tp, layout.micro_batch, layout.sequence_parallel,
            layout.precision, layout.attention)
    tp_one = _tp_collective(network, job, activation_message(model, layout),
                            layout.sequence_parallel)
    cp = layout.cp
    f, b, _, _, w = _layer_times(*args, cp=cp)        # a dense layer, then an MoE one
    dense = moe = (f + 2 * tp_one, b + 2 * tp_one, w)
    if model.experts:                                 # (evenly loaded, no all-to-alls)
        f, b, _, _, w = _layer_times(*args, True, layout.ep, 1.0, cp, layout.expert_tp)
        tp_moe = tp_one + (tp_one if layout.expert_tp else 0.0)
        moe = (f + tp_moe, b + tp_moe, w)
    # stages of the same layers cost the same: each kind of stage is priced once
    kinds = tuple(zip(layout.stage_layers(model), layout.stage_moe_layers(model)))
    stages = {(n, k): tuple((n - k) * d + k * e for d, e in zip(dense, moe))
              for n, k in set(kinds)}
    alike = {key: kinds.count(key) for key in stages}
    fill = layout.schedule_spec.fill
    pmv = (layout.pp, layout.micro_batches, layout.virtual_stages)
    heaviest = max(stages.values(), key=lambda x: x[0] + x[1])
    return (layout.micro_batches * (heaviest[0] + heaviest[1])
            + sum(k * fill(*stages[key], *pmv) for key, k in alike.items())
            - fill(*heaviest, *pmv))


def _stage_costs(model: ModelSpec, layout: Layout, network: NetworkModel,
                 compute: ComputeModel, job: JobShape, firsts) -> dict[int, StageCost]:
    t, mb, sp, prec = layout.tp, layout.micro_batch, layout.sequence_parallel, layout.precision
    cp = layout.cp
    f_layer, b_layer, rc_sel, rc_full, w_layer = _layer_times(model, compute, t, mb, sp, prec,
                                                              layout.attention, cp=cp)
    ring_f = ring_b = 0.0
    if cp > 1:
        ring_f, ring_b = _ring_times(model, compute, network, job, t, cp, mb, sp, prec,
                                     layout.attention)
    act = activation_message(model, layout)
    # TP: 2 all-reduces forward and 2 backward per layer; with sequence parallelism each
    # becomes a reduce-scatter + all-gather of the same volume (Korthikanti et al. 2022).
    tp_one = _tp_collective(network, job, act, sp)
    # vocab-parallel loss: max, sum and target logit over tp (tokens x 4 B each)
    loss_ar = (3 * _collective(network, "allreduce", "tp", job, mb * model.seq // cp * 4.0)
               if t > 1 else 0.0)
    # Pipeline transfers: each TP rank sends its 1/t of the activation and the receivers
    # all-gather it over TP (Megatron-LM's scatter/gather, Narayanan et al. 2021 Sec. 4.1);
    # with sequence parallelism the activation already is split by t (no gather).
    p2p = 0.0
    if layout.pp > 1:
        p2p = _p2p(network, "pp", job, act / t)
        if t > 1 and not sp:
            p2p += _collective(network, "allgather", "tp", job, act)
    layers = layout.stage_layers(model)
    moe_layers = layout.stage_moe_layers(model)
    moe = _moe_costs(model, layout, network, compute, job, tp_one) if model.experts else None
    mirrored = layout.schedule_spec.mirrored
    # two pipelines in opposite directions (DualPipe): rank i runs half its micro-batches
    # as stage i and half as stage p - 1 - i, so both are priced and averaged
    todo = sorted(set(firsts) | {layout.pp - 1 - i for i in firsts}) if mirrored else firsts
    stages = {}
    for i in todo:
        n_layers, n_moe = layers[i], moe_layers[i]
        mode = layout.stage_recomputes(i)
        dense = n_layers - n_moe
        fwd_c, bwd_c, wgrad = dense * f_layer, dense * b_layer, dense * w_layer
        rc_layers = {"none": 0.0, "selective": rc_sel, "full": rc_full}[mode] * dense
        ep_f = ep_b = 0.0
        if n_moe:
            fwd_c += n_moe * moe.forward
            bwd_c += n_moe * moe.backward
            wgrad += n_moe * moe.wgrad
            rc_layers += n_moe * {"none": 0.0, "selective": moe.selective,
                                  "full": moe.full}[mode]
            ep_f = ep_b = n_moe * moe.all_to_alls
            if mode == "full":           # the re-run forward repeats its all-to-alls
                ep_b += n_moe * moe.all_to_alls
        # an MoE layer's MLP collectives are its experts' (``_moe_costs``: over the
        # top-k copies of the tokens, and the shared experts' as a dense MLP's)
        tp_layers = 2 * n_layers * tp_one + (n_moe * (moe.tp - tp_one) if n_moe else 0.0)
        tp_f = tp_b = tp_layers
        cp_f, cp_b = n_layers * ring_f, n_layers * ring_b
        if mode == "full":              # the re-run forward passes the ring again
            cp_b += n_layers * ring_f
        if i == 0:                      # embedding: lookup forward, scatter-add backward
            emb_f = compute.ops_time(embedding_ops(model, t, mb, prec, cp))
            fwd_c += emb_f
            bwd_c += 2 * emb_f
            wgrad += 2 * emb_f          # (all of it: the embedding table's gradient)
            tp_f += tp_one              # vocab-parallel embedding all-reduce
        if i == layout.head_stage:      # (the last stage, or in a V the first)
            head = head_ops(model, t, mb, prec, cp)
            head_f = compute.ops_time(head)
            fwd_c += head_f
            bwd_c += 2 * head_f
            wgrad += compute.ops_time(weight_gradient(head))
            tp_f += loss_ar
            tp_b += tp_one              # gradient of the head input
        rc = rc_layers
        if mode == "full":
            rc += tp_layers                 # the re-run forward repeats its collectives
        rc_tp = tp_layers if mode == "full" else 0.0
        stages[i] = StageCost(forward=fwd_c + tp_f + ep_f + cp_f,
                              backward=bwd_c + tp_b + rc + ep_b + cp_b,
                              compute=fwd_c + bwd_c, recompute=rc, tp_comm=tp_f + tp_b, p2p=p2p,
                              tp_forward=tp_f, tp_backward=tp_b + rc_tp, layers=n_layers,
                              wgrad=wgrad, ep_forward=ep_f, ep_backward=ep_b,
                              cp_forward=cp_f, cp_backward=cp_b)
    if mirrored:
        return {i: _mean_cost(stages[i], stages[layout.pp - 1 - i]) for i in firsts}
    return stages


def _mean_cost(a: StageCost, b: StageCost) -> StageCost:
    """The cost of a micro-batch on a rank that runs half of them as ``a``'s stage and
    half as ``b``'s (their layers alike: DualPipe's even stages)."""
    return StageCost(**{k: (v + getattr(b, k)) / 2 if k != "layers" else v
                        for k, v in asdict(a).items()})


@dataclass(frozen=True)
class MoeCost:
    """One MoE layer, one micro-batch (seconds): its compute as ``_layer_times`` gives
    it, and its two all-to-alls (dispatch and combine) of one pass."""

    forward: float
    backward: float
    selective: float
    full: float
    wgrad: float
    all_to_alls: float
    tp: float = 0.0          # its MLP's TP collectives of one pass (a dense MLP's: tp_one)


def _moe_costs(model: ModelSpec, layout: Layout, network: NetworkModel,
               compute: ComputeModel, job: JobShape, tp_one: float = 0.0) -> MoeCost:
    """An MoE layer's compute on this layout's ranks, and its all-to-alls: each rank
    sends the top-k copies of its tokens (its 1/t of them with sequence parallelism,
    Megatron-Core's all-to-all dispatcher) to the expert-parallel ranks that hold
    their experts and gets the outputs back, forward and again backward (the
    gradients). The busiest rank moves ``moe_load`` times the mean (capped by the
    capacity factor), which the pairwise exchange prices as the whole exchange slowed
    to its pace. The expert-parallel group is ep consecutive data-parallel ranks
    (Megatron-Core parallel_state's order tp-cp-ep-dp-pp): a job of dp = ep, tp x cp
    apart.

    Its MLP's TP collectives, per pass: the shared experts', a dense MLP's (``tp_one``);
    the routed experts', over the top-k copies of the tokens they run, not the tokens
    themselves. Split over the TP ranks, Megatron-Core's all-to-all dispatcher
    all-gathers the received copies over TP after the dispatch and reduce-scatters
    the experts' outputs before the combine (megatron/core/transformer/moe/
    token_dispatcher.py, MoEAlltoAllTokenDispatcher: "permute->A2A(EP)->AG(TP)" and
    "RS(TP)->A2A(EP)->unpermute"), and Megatron-DeepSpeed's tensor-parallel experts
    all-reduce their outputs as its RowParallelLinear does: a dense MLP's collective
    of k times the bytes. Whole on every TP rank (not ``expert_tp``), DeepSpeed's MoE
    layer (deepspeed/moe/sharded_moe.py, MOELayer.forward) drops the TP ranks'
    duplicate tokens before the dispatch, each rank sending 1/t of them, and
    all-gathers the experts' outputs over TP after it (the copies again), forward;
    backward, the gradient of the drop gathers the same. With sequence parallelism
    those TP ranks' tokens are already their own: nothing."""
    t, mb, sp = layout.tp, layout.micro_batch, layout.sequence_parallel
    load = model.routed_load(layout.moe_load)
    f, b, sel, full, w = _layer_times(model, compute, t, mb, sp, layout.precision,
                                      layout.attention, True, layout.ep, layout.moe_load,
                                      layout.cp, layout.expert_tp)
    tokens = mb * model.seq / layout.cp
    copies = tokens * model.top_k * model.hidden * ACT_BYTES[layout.precision] * load
    a2a = 0.0
    if layout.ep > 1:
        nbytes = copies / (t if sp or not layout.expert_tp else 1)
        group = JobShape(job.tp * layout.cp, job.pp, layout.ep, job.ranks_per_node)
        a2a = 2 * _collective(network, "alltoall", "dp", group, nbytes)
    if layout.expert_tp:
        routed = _tp_collective(network, job, copies, sp)
    else:
        routed = 0.0 if sp or t == 1 else _collective(network, "allgather", "tp", job, copies)
    shared = tp_one if model.shared_experts else 0.0
    return MoeCost(f, b, sel, full, w, a2a, routed + shared)


@dataclass(frozen=True)
class StageComm:
    """Data-parallel work of one stage per iteration (seconds), before any overlap."""

    reduce: float          # gradient all-reduce or reduce-scatter once, in the last backward
    gather_after: float    # ZeRO-1/2, distributed optimizer: weights gathered after the step
    reduce_per_micro_batch: float   # after every backward (ZeRO-2/3, FSDP)
    ag_forward: float      # ZeRO-3, FSDP: weights gathered before every forward ...
    ag_backward: float     # ... and (ZeRO-3, FULL_SHARD) again before every backward
    buckets: int           # gradient buckets (the stack's: one per layer, flat, or a size)
    gathers: int           # weight gathers per pass (the stack's gather unit)
    prefetch: int          # layers gathered ahead of the one computing
    # the reductions' arithmetic on the compute cores (a CPU node's MPI reduces on the
    # calling core): what overlapping them still costs the compute, per reduction
    reduce_cpu: float
    reduce_cpu_per_micro_batch: float
    tied_sync: float       # first/last stage: sum the two copies of a tied embedding
    optimizer: float       # Adam step on the local shard, plus the grad-norm all-reduce
    # the collective each kind of the stream's work runs, (kind, Stream) with kind
    # "reduce" (one gradient bucket) or "gather" (one unit of weights): what it shares
    # the fabric as while the stage computes (topologies.sharing, perfmodel.des)
    messages: tuple = ()

    def plus(self, other: "StageComm") -> "StageComm":
        """This stage's work and ``other``'s, one after the other on the same stream
        (a mixture of experts' routed experts, reduced over their own group): the
        times add; the cuts (buckets, gathers, prefetch) stay this one's."""
        timed = ("reduce", "gather_after", "reduce_per_micro_batch", "ag_forward",
                 "ag_backward", "reduce_cpu", "reduce_cpu_per_micro_batch", "tied_sync",
                 "optimizer")
        return replace(
            self, **{k: getattr(self, k) + getattr(other, k) for k in timed},
            messages=self.messages + other.messages)


def stage_comm(model: ModelSpec, system: SystemSpec, layout: Layout, network: NetworkModel,
               compute: ComputeModel, job: JobShape, stage: int,
               only: float | None = None) -> StageComm:
    """The data-parallel and optimizer work of ``stage``, cut as the software stack
    cuts it: gradients in its buckets (one per layer, as DeepSpeed and Megatron-LM
    bucket them and FSDP wraps each layer; one flat buffer, as Megatron-LM's local
    DDP; or a size), weights gathered in its unit; each bucket or gather pays the
    collective's latency. What moves when is the layout's sharding mode's
    (perfmodel.sharding: e.g. ZeRO-3 gathers the weights before every forward and
    backward and reduce-scatters after every backward; ZeRO-1 reduce-scatters once
    and gathers the updated weights after the step).

    Overlap is not free on a node whose MPI library reduces on the compute cores
    (``node.reduce_bandwidth``): every algorithm has each rank reduce at least
    (dp - 1) / dp of the gradient bytes, which costs the compute that long however
    well the transfers hide (``reduce_cpu``). Transfers are the network's (RDMA);
    the memory bandwidth they take from compute is not modelled."""
    dp = layout.replicas                      # (dp x cp: the ranks holding these weights)
    layers = max(1, layout.stage_layers(model)[stage])
    how = layout.sharding_mode
    params, experts = stage_param_parts(model, layout, stage)
    if experts and dp // layout.ep > 1 and only is None:
        # a mixture of experts' routed experts: reduced and sharded over the dp / ep
        # ranks holding the same ones (ranks tp x ep apart), added to the rest's
        group = layout.replace(dp=dp // layout.ep, ep=1, cp=1, shard_ranks=0, moe_load=1.0,
                               global_batch=layout.global_batch * layout.cp // layout.ep)
        expert = stage_comm(model, system, group, network, compute,
                            JobShape(job.tp * layout.ep, job.pp, dp // layout.ep,
                                     job.ranks_per_node), stage, only=experts)
    else:
        expert = None
    if only is not None:
        params = only
    elif expert is None:
        params += experts                    # (the experts reduced with the rest)
    grad_bytes = params * GRAD_BYTES
    weight_bytes = params * ACT_BYTES[layout.precision]
    buckets = system.stack.reduce_buckets(layers, grad_bytes)
    gathers = 1 if layout.gather == "stage" else layers * gathers_per_layer(
        layout.gather, model.activation)

    # a hybrid mode gathers and reduce-scatters inside groups of s ranks and all-reduces
    # the shards across the dp / s groups (ranks s x tp apart: a job whose "tp" spans them)
    s = layout.shard_size
    group = job if s == dp else JobShape(job.tp, job.pp, s, job.ranks_per_node)
    replicas = None if s == dp else JobShape(job.tp * s, job.pp, dp // s, job.ranks_per_node)

    def cut(op: str, nbytes: float, pieces: int, over: JobShape = group) -> float:
        return pieces * _collective(network, op, "dp", over, nbytes / pieces)

    def arithmetic(n: int, nbytes: float) -> float:
        r = system.node.reduce_bandwidth
        return 3.0 * (n - 1) / n * nbytes / r if r else 0.0

    local = params / (s if layout.zero >= 1 else 1)
    if layout.optimizer == "host":
        opt = host_optimizer_time(system, local * OPTIMIZER_BYTES[layout.precision],
                                  params * (GRAD_BYTES + ACT_BYTES[layout.precision]))
    else:
        opt = compute.optimizer_time(local * OPTIMIZER_BYTES[layout.precision])
    reduce = gather = per_mb = ag_f = ag_b = cpu = cpu_mb = 0.0
    messages = []
    if dp > 1:
        opt += _collective(network, "allreduce", "dp", job, 8.0)   # global grad norm
        grads = cut(how.reduce, grad_bytes, buckets)
        work = arithmetic(s, grad_bytes)
        if replicas is not None:
            grads += cut("allreduce", grad_bytes / s, buckets, replicas)
            work += arithmetic(dp // s, grad_bytes / s)
        messages.append(("reduce", Stream(how.reduce, "dp", grad_bytes / buckets)))
        if how.per_micro_batch:
            per_mb, cpu_mb = grads, work
        else:
            reduce, cpu = grads, work
        if how.gather_after_step:
            gather = cut("allgather", weight_bytes, buckets)
        if how.gathers:
            ag = cut("allgather", weight_bytes, gathers)
            messages.append(("gather", Stream("allgather", "dp", weight_bytes / gathers)))
            ag_f = ag if "forward" in how.gathers else 0.0
            ag_b = ag if "backward" in how.gathers else 0.0
    if layout.schedule_spec.mirrored and only is None:
        # DualPipe: each copy of a stage (a rank's own and its mirror's, p - 1 - i)
        # holds the gradients of half the micro-batches: they are summed, one stage's
        # gradients each way between the two ranks (deepseek-ai/DualPipe
        # examples/example_dualpipe.py adds each copy's to the other's), [A] priced as a
        # send to a pipeline neighbour, with the data-parallel reduction
        both = sum(stage_param_parts(model, layout, stage))
        reduce += _p2p(network, "pp", job, both / 2 * GRAD_BYTES)
    tied = 0.0
    head = layout.head_stage
    if model.tied_embeddings and head != 0 and stage in (0, head) and only is None:
        tied = _p2p(network, "pp", job, vocab_shard(model, layout.tp) * model.hidden * GRAD_BYTES)
    out = StageComm(reduce=reduce, gather_after=gather, reduce_per_micro_batch=per_mb,
                    ag_forward=ag_f, ag_backward=ag_b, buckets=buckets, gathers=gathers,
                    prefetch=layout.prefetch,
                    reduce_cpu=cpu, reduce_cpu_per_micro_batch=cpu_mb, tied_sync=tied,
                    optimizer=opt, messages=tuple(messages))
    return out if expert is None else out.plus(expert)


def host_optimizer_time(system: SystemSpec, state_bytes: float, copied_bytes: float) -> float:
    """An optimizer step offloaded to the host (DeepSpeed ZeRO-Offload): the rank's
    share of the host's memory bandwidth moves its states, and its link to the host
    carries the gradients down and the updated weights back (not overlapped)."""
    node, ranks = system.node, system.ranks_per_node
    return (state_bytes / (node.host_memory_bandwidth / ranks)
            + copied_bytes / node.host_link_bandwidth)


def pipeline_ends(work: list[float], drain: list[float], counts: list[int], m: int,
                  fill: list[float] | None = None) -> list[float]:
    """When each run of identical stages finishes its last backward (its latest stage).

    ``work[r]`` is one micro-batch's forward + backward on a stage of run r (with
    its transfers), ``fill[r]`` what such a stage adds to the pipeline's fill and
    drain (the schedule's ``fill``: ``work[r]`` for 1F1B, the default), ``drain[r]``
    how much earlier than the stage before it such a stage finishes (the schedule's
    ``drain``; negative: later), ``counts[r]`` the stages in the run. The makespan is
    ``m max(work) + sum(fill) - fill(the slowest)``, when the latest stage ends; stage j
    ends ``sum_{i<j} drain_i`` before stage 0.
    """
    fill = work if fill is None else fill
    slowest = max(range(len(work)), key=work.__getitem__)
    t_pipe = (m * work[slowest] + sum(f * n for f, n in zip(fill, counts))
              - fill[slowest])
    lags, lag = [], 0.0                       # each run's least lag: its latest stage
    for d, n in zip(drain, counts):
        lags.append(min(lag, lag + (n - 1) * d))
        lag += n * d
    latest = min(0.0, *lags)
    return [t_pipe + latest - x for x in lags]


def _exposed(comm: float, window: float, pieces: int, cpu: float = 0.0) -> float:
    """Communication left exposed when it runs in ``pieces`` buckets behind ``window``
    seconds of compute: at least the last bucket, at most all of it. ``cpu`` of it is
    arithmetic the compute cores do as each bucket is queued (a CPU node's MPI
    reduction), which no overlap hides: the last bucket's share runs beside that
    bucket's transfer."""
    if window <= 0:
        return max(comm, cpu)
    return max(cpu + max(0.0, comm - cpu) / pieces, comm - window)


def _pass_extras(c: StageComm, st: StageCost, overlap: bool) -> tuple[float, float]:
    """What the data-parallel traffic of every micro-batch adds to its forward and its
    backward. Gathered ahead (prefetch), the weight gathers hide behind the pass's
    compute but for the first piece; as one flat buffer, or without prefetch, each is
    waited for in full, and without prefetch a backward's gather also waits behind the
    reduction queued before it on the one stream, so nothing of either hides. With
    overlap, a backward's reductions share its window with its gathers and their
    arithmetic on the compute cores is not hidden; without, they are waited for."""
    ahead = c.prefetch >= 1 and c.gathers > 1
    forward = _exposed(c.ag_forward, st.forward, c.gathers) if ahead else c.ag_forward
    hidden = c.ag_backward if ahead else 0.0
    waited = c.ag_backward - hidden
    cpu, pieces = 0.0, c.gathers
    if c.ag_backward and not ahead and c.gathers > 1:
        waited += c.reduce_per_micro_batch          # serialised with the gathers
    elif c.reduce_per_micro_batch and overlap:
        hidden += c.reduce_per_micro_batch
        cpu, pieces = c.reduce_cpu_per_micro_batch, c.buckets
    else:
        waited += c.reduce_per_micro_batch
    backward = waited + (_exposed(hidden, st.backward, pieces, cpu) if hidden else 0.0)
    return forward, backward


def _exposed_reduce(comm: float, cpu: float, backward: float, buckets: int,
                    overlap: bool) -> float:
    """The last backward's gradient reduction's cost to its stage: all of it without
    overlap; with overlap, what the buckets leave exposed behind the backward and
    the arithmetic the compute cores do for them (``cpu``)."""
    if not comm:
        return 0.0
    return _exposed(comm, backward, buckets, cpu) if overlap else comm


def estimate(model: ModelSpec, system: SystemSpec, layout: Layout,
             network: NetworkModel | None = None, *, validate: bool = True) -> Estimate:
    """Predict one iteration of ``layout`` training ``model`` on ``system``."""
    if validate:
        validate_layout(layout, model)
    network = network or network_for(system)
    job, cost, runs, crit, iteration, parts = _iteration(model, system, layout, network)
    m = layout.micro_batches
    st = cost[crit]
    extra_f, extra_b, dp_tail, optim = parts
    compute_part = m * st.compute
    recompute_part = m * st.recompute
    tp_part = m * st.tp_comm
    ep_part = m * st.ep_comm
    cp_part = m * st.cp_comm
    pp_part = m * 2 * st.p2p
    dp_part = dp_tail[crit] + m * (extra_f[crit] + extra_b[crit])
    opt_part = optim[crit]
    bubble = iteration - (compute_part + recompute_part + tp_part + ep_part + cp_part
                          + pp_part + dp_part + opt_part)
    if abs(bubble) < 1e-9 * iteration:   # float noise when there is no pipeline
        bubble = 0.0
    breakdown = Breakdown(compute=compute_part, recompute=recompute_part, tp_comm=tp_part,
                          pp_comm=pp_part, bubble=bubble, dp_comm=dp_part, optimizer=opt_part,
                          ep_comm=ep_part, cp_comm=cp_part)
    stages = tuple(cost[i] for i, n in runs for _ in range(n))
    return Estimate(model=model, system=system, layout=layout, nodes=job.nodes,
                    iteration_s=iteration, breakdown=breakdown, stages=stages,
                    memory=tuple(pipeline_memory(model, layout)),
                    model_flops=model_flops_per_iteration(model, layout.global_batch),
                    network=getattr(network, "name", type(network).__name__),
                    placement=tuple(network.placement(job).describe())
                    if hasattr(network, "placement") else ())


def iteration_s(model: ModelSpec, system: SystemSpec, layout: Layout,
                network: NetworkModel) -> float:
    """``estimate(...).iteration_s`` alone (no breakdown, memory or placement): for
    pricing one layout on many variants of a system (perfmodel.uncertainty)."""
    return _iteration(model, system, layout, network)[4]


def _iteration(model, system, layout, network):
    """The iteration's time and what its breakdown needs: (job, per-stage costs, stage
    runs, the critical stage, the time, (forward and backward extras, data-parallel
    tail, optimizer) per stage)."""
    compute = ComputeModel.for_system(system, layout.precision)
    job = layout.job(system.ranks_per_node)
    runs = layout.stage_runs(model)
    firsts = [first for first, _ in runs]
    cost = _stage_costs(model, layout, network, compute, job, firsts)
    m, p, v = layout.micro_batches, layout.pp, layout.virtual_stages

    # Data-parallel traffic per stage (stage_comm), and how much of it hides behind
    # the backward (gradients) or the passes (ZeRO-3 gathers).
    extra_f, extra_b, dp_tail, optim, tied = {}, {}, {}, {}, {}
    for i in firsts:
        st, c = cost[i], stage_comm(model, system, layout, network, compute, job, i)
        f_add, b_add = _pass_extras(c, st, layout.overlap_dp)
        tail = _exposed_reduce(c.reduce, c.reduce_cpu, st.backward, c.buckets,
                               layout.overlap_dp) + c.gather_after
        extra_f[i], extra_b[i] = f_add, b_add
        dp_tail[i], optim[i], tied[i] = tail + c.tied_sync, c.optimizer, c.tied_sync

    spec = layout.schedule_spec
    passes = [(cost[i].forward + extra_f[i] + cost[i].p2p,
               cost[i].backward + extra_b[i] + cost[i].p2p, cost[i].wgrad) for i in firsts]
    done = pipeline_ends(
        work=[f + b for f, b, _ in passes], fill=[spec.fill(*x, p, m, v) for x in passes],
        drain=[spec.drain(*x, p, m, v) for x in passes], counts=[n for _, n in runs], m=m)
    ends = {i: d + dp_tail[i] + optim[i] for i, d in zip(firsts, done)}
    last = firsts[-1]
    if p > 1 and model.tied_embeddings:
        # the tied embedding is summed once both ends have finished their backward
        first_done = done[0] + dp_tail[0] - tied[0]
        ends[last] = max(ends[last], first_done + tied[last] + optim[last])
    crit = max(firsts, key=lambda i: ends[i])
    return job, cost, runs, crit, ends[crit], (extra_f, extra_b, dp_tail, optim)
