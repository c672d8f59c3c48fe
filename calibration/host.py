"""A calibration applied to a system: the ``host`` system built from the file alone,
or the file's measured rates overlaid on a preset whose node is the host's.

The ``host`` system is the machine a calibration was measured on, as a SystemSpec:
every figure comes from the file (the per-rank compute rates of the fit, the
collectives between its ranks when measured under mpiexec, the host facts). Its
nominal FP32 peak is the fitted large-GEMM rate, so its MFU reads as a fraction of
what this machine's BLAS reaches. One node; ranks share it.

**When a calibration describes a system's node** (``mismatch``). The fit's rates
are per rank, of one CPU, run with some threads and ranks per node, so they carry
over to a system only when all of these hold:

1. *the CPU*: the node's ``name`` (the preset's ``[node] name``, e.g. ``A64FX``)
   appears, as whole words, in the CPU model the file's host reported
   (``host.cpu``: /proc/cpuinfo's model name, or the ARM part its implementer and
   part number name, trainer.host.cpu_model). Case, punctuation and ``(R)``/``(TM)``
   marks are ignored. A custom system describing a measured machine names its node
   after the CPU (``name = "Xeon Gold 6148"``);
2. *the whole node*: the host has at least the node's cores (fewer is a smaller part
   of the family), and its threads x ranks cover them (fewer measured only part of
   a node, and the rates would be charged to a whole one);
3. *the same ranks per node*: per-rank rates of R ranks sharing a node are not the
   rates of a rank that has it alone, so the system must run the file's ranks per
   node (``--ppn``).

The ``host`` system always matches its own file. Anything else is refused, naming
the file's host and the system's node, unless forced; a forced overlay carries the
mismatch in its ``calibration`` provenance, so every output that names the
calibration (plan, simulate, report, collective) says it was forced and why.
"""

from __future__ import annotations

import dataclasses
import re

from fpcore.errors import SpecError
from perfmodel.parts import StackSpec
from perfmodel.system import NetworkSpec, NodeSpec, SystemSpec

from .fit import fit_from_dict
from .opmap import TRAINER_ATTENTION

_MARKS = re.compile(r"\((?:r|tm|c)\)", re.IGNORECASE)
_NOT_WORD = re.compile(r"[^0-9a-z]+")


def _words(text: str) -> str:
    """Lowercase alphanumeric words, one space apart, padded: " intel xeon gold 6148 "."""
    return " " + " ".join(_NOT_WORD.sub(" ", _MARKS.sub(" ", text.lower())).split()) + " "


def describe_host(host: dict) -> str:
    """The file's host in a few words: CPU (ISA, cores), threads x ranks measured."""
    return (f"{host.get('cpu') or 'an unnamed CPU'} ({host.get('machine') or 'unknown ISA'}, "
            f"{host.get('cores') or '?'} cores; measured with {host.get('threads') or '?'} "
            f"thread(s) x {host.get('ranks') or 1} rank(s))")


def mismatch(system: SystemSpec, data: dict) -> str | None:
    """Why the calibration ``data`` does not describe ``system``'s nodes as it runs them
    (the rules of this module's docstring), or None when it does."""
    host, node = data["host"], system.node
    cpu = host.get("cpu") or ""
    if _words(node.name).strip() == "" or _words(node.name) not in _words(cpu):
        return (f"measured on {describe_host(host)}, not on {system.name}'s {node.name} "
                f"node ({node.cores} cores)")
    cores, threads, ranks = host.get("cores") or 0, host.get("threads") or 0, \
        host.get("ranks") or 1
    if cores < node.cores or threads * ranks < node.cores:
        return (f"measured on {describe_host(host)}: part of {system.name}'s {node.name} node "
                f"of {node.cores} cores, not all of it")
    if ranks != system.ranks_per_node:
        return (f"measured with {ranks} rank(s) per node; {system.name} runs "
                f"{system.ranks_per_node} (--ppn {ranks}, or calibrate under mpiexec -n "
                f"{system.ranks_per_node})")
    return None


def overlay(system: SystemSpec, data: dict, source: str, force: bool = False) -> SystemSpec:
    """``system`` with the calibration's fitted compute and collectives. A calibration
    that does not describe the system's node (``mismatch``) is refused unless ``force``;
    forced, the system's ``calibration`` says so."""
    why = mismatch(system, data)
    if why is not None and not force:
        raise SpecError("calibration", f"{source} does not describe {system.name}: {why}; "
                                       f"its rates would be another machine's (use --system "
                                       f"host to predict that machine, or --force-calibration "
                                       f"to apply it anyway)")
    if why is not None:
        source = f"{source} (FORCED onto {system.name}: {why})"
    return _apply(system, data, source)


def _apply(system: SystemSpec, data: dict, source: str) -> SystemSpec:
    compute = fit_from_dict(data["fit"]["compute"]["parameters"], source)
    collectives = data["fit"].get("collectives") or {}
    fits = tuple((op, f["alpha_s"], f["bandwidth_bytes_per_s"]) for op, f in
                 sorted(collectives.items())) or None
    storage = data["fit"].get("storage") or {}
    calibrated = system.with_calibration(compute, fits,
                                         storage.get("checkpoint_write_bytes_per_s"), source)
    return dataclasses.replace(calibrated, evidence=calibration_evidence(calibrated, data, source))


def calibration_evidence(system: SystemSpec, data: dict, source: str) -> tuple:
    """The calibration's trainer steps (whole iterations, which the fit of op rates did
    not use) predicted on the calibrated ``system``: evidence for the bands of its
    predictions near them (perfmodel.evidence)."""
    from perfmodel.evidence import EvidenceRun, regime_of
    from .measure import trainer_model
    from .validate import predict_config, trainer_layout
    ranks = int(data["host"].get("ranks") or 1)
    out = []
    for i, m in enumerate(data["measurements"]):
        if m["kind"] != "step" or m.get("rank", 0) != 0:
            continue
        cfg = m["config"]
        try:
            model = trainer_model(cfg)
            layout = trainer_layout(cfg, system, ranks)
            predicted = predict_config(cfg, system, ranks)
        except (SpecError, KeyError, TypeError):
            continue                      # a step the model cannot describe is no evidence
        out.append(EvidenceRun(source=f"calibration {source}"[:200], row=f"step {i}",
                               system=system.name, regime=regime_of(model, system, layout),
                               predicted_s=predicted, measured_s=float(m["seconds"])))
    return tuple(out)


def host_system(data: dict, source: str) -> SystemSpec:
    """The machine of the calibration ``data`` (read from ``source``) as a system."""
    try:
        return _host_system(data, source)
    except SpecError as e:
        if e.field == "calibration":
            raise
        raise SpecError("calibration", f"{source}: cannot describe its host as a system "
                                       f"({e.field}: {e.message})") from None


def _host_system(data: dict, source: str) -> SystemSpec:
    host = data["host"]
    compute = fit_from_dict(data["fit"]["compute"]["parameters"], source)
    ranks = max(1, int(host.get("ranks") or 1))
    cores = max(1, int(host.get("cores") or 1))
    memory = float(host.get("memory_bytes") or 0) or 1.0
    bw = dict(compute.bandwidth)
    node_bw = max(bw.values()) * ranks
    collectives = data["fit"].get("collectives") or {}
    p2p = collectives.get("p2p", {})
    link = float(p2p.get("bandwidth_bytes_per_s") or node_bw)
    latency = float(p2p.get("alpha_s") or 0.0)
    cpu = str(host.get("cpu") or "unknown CPU")[:180]
    node = NodeSpec(
        name=f"host ({cpu})", cores=cores, numa_domains=1,
        clock_hz=1e9, allowed_clocks_hz=(1e9,),
        # nominal: peak = the fitted large-GEMM rate of all ranks (clock 1 GHz by convention)
        flops_per_cycle_per_core=(("fp32", compute.gemm_rate * ranks / cores / 1e9),),
        eco_mode=False, memory_bytes=memory, usable_memory_bytes=memory,
        memory_bandwidth=node_bw, stream_bandwidth=node_bw,
        stream_bandwidth_per_domain=node_bw, inter_domain_bandwidth=link,
        gemm_efficiency=1.0, power_w=0.0)
    network = NetworkSpec(kind="torus", axes=("x",), shape=(1,), wrap=(False,),
                          link_bandwidth=link, link_efficiency=1.0, latency_s=latency,
                          injection_bandwidth=link, injection_efficiency=1.0, model="analytic")
    what = "calibration " + source
    sources = {"node": what, "compute (fp32)": what,
               "network": what if p2p else f"{what} (not measured: calibrate under mpiexec)"}
    sources["stacks.reference-trainer.attention"] = (
        f"{what}: measured by the reference trainer, whose causal attention runs in query "
        f"tiles of perfmodel.ops.FLASH_BLOCK and never stores the scores (trainer/kernels.py)")
    stack = StackSpec(name="reference-trainer", description="the reference trainer that "
                      "measured this calibration (trainer/): its own kernels",
                      attention=TRAINER_ATTENTION)
    system = SystemSpec(name="host", description=f"the calibrated machine: {cpu}, "
                                                 f"{cores} cores, {ranks} rank(s)",
                        node=node, network=network, ranks_per_node=ranks,
                        allowed_ranks_per_node=(ranks,), sources=sources, stack=stack,
                        stacks=(stack,))
    return _apply(system, data, source)           # its own file: always its node
