"""The ``host`` system: the machine a calibration was measured on, as a SystemSpec.

Every figure comes from the calibration file: the per-rank compute rates (the fit),
the collectives between its ranks (when measured under mpiexec), and the host facts
(cores, memory). Its nominal FP32 peak is the fitted large-GEMM rate, so its MFU reads
as a fraction of what this machine's BLAS reaches. One node; ranks share it.
"""

from __future__ import annotations

from perfmodel.system import NetworkSpec, NodeSpec, SystemSpec

from .fit import fit_from_dict


def overlay(system: SystemSpec, data: dict, source: str) -> SystemSpec:
    """``system`` with the calibration's fitted compute and collectives."""
    compute = fit_from_dict(data["fit"]["compute"]["parameters"], source)
    collectives = data["fit"].get("collectives") or {}
    fits = tuple((op, f["alpha_s"], f["bandwidth_bytes_per_s"]) for op, f in
                 sorted(collectives.items())) or None
    storage = data["fit"].get("storage") or {}
    return system.with_calibration(compute, fits, storage.get("checkpoint_write_bytes_per_s"),
                                   source)


def host_system(data: dict, source: str) -> SystemSpec:
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
    node = NodeSpec(
        name=f"host ({host.get('cpu', 'unknown CPU')})", cores=cores, numa_domains=1,
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
    system = SystemSpec(name="host", description=f"the calibrated machine: {host.get('cpu')}, "
                                                 f"{cores} cores, {ranks} rank(s)",
                        node=node, network=network, ranks_per_node=ranks,
                        allowed_ranks_per_node=(ranks,), sources=sources)
    return overlay(system, data, source)
