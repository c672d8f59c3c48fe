"""Benchmark of the reference trainer against this machine's SGEMM rate, in one run.

    python -m benchmarks.trainer [--json] [--steps N] [--only NAME]

For each configuration, a full training step (forward, backward, gradient norm,
AdamW) is timed after one untimed step (which compiles the Numba kernels); the
achieved rate counts model FLOPs (perfmodel's Korthikanti Eq. 7, the MFU numerator).
The machine's float32 GEMM rate (numpy/BLAS, 2048^3, best of 5) is measured in the
same run, before and after, and the step's rate is reported as a fraction of it.
Target: >= 50% for hidden >= 768. Timings on a shared machine are noisy: compare the
ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import trainer  # noqa: F401  (first: sets the thread-pool environment before numpy loads)

CONFIGS = {
    # GPT-2 small's shape (Radford et al. 2019) at sequence 512
    "gpt2-small-like": dict(layers=12, hidden=768, heads=12, vocab=50257, seq=512, micro_batch=2),
    # one full-width Fugaku-LLM layer (40 x 5184, 36 heads, vocab 49152) at sequence 512
    "fugaku-llm-slice": dict(preset="fugaku-llm-13b", layers=1, seq=512, micro_batch=1),
}


def sgemm_rate(n: int = 2048, repeat: int = 5) -> float:
    import numpy as np
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(repeat))
    return 2.0 * n ** 3 / best


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_config(name: str, spec: dict, steps: int) -> dict:
    import numpy as np

    from perfmodel.model import ModelSpec
    from perfmodel.ops import model_flops_per_iteration
    from perfmodel.presets import load_model
    from trainer.timers import Timers
    from trainer.train import Trainer, TrainSettings

    spec = dict(spec)
    micro_batch = spec.pop("micro_batch")
    preset = spec.pop("preset", None)
    model = load_model(preset).replace(**spec) if preset else ModelSpec(name=name, **spec)
    tokens = np.random.default_rng(0).integers(0, model.vocab, 1_000_000).astype(np.uint32)
    timers = Timers()
    run = Trainer(model, tokens, TrainSettings(steps=steps + 1, micro_batch=micro_batch,
                                                   val_fraction=0.0), timers=timers)
    run.step()                                     # compiles the kernels
    timers.reset()
    times = [run.step().seconds for _ in range(steps)]
    step_s = sorted(times)[len(times) // 2]
    flops = model_flops_per_iteration(model, run.sampler.global_batch)
    kernels = timers.records()
    return {"name": name, "layers": model.layers, "hidden": model.hidden, "heads": model.heads,
            "vocab": model.vocab, "seq": model.seq, "micro_batch": micro_batch,
            "parameters": run.params.size, "step_s": step_s,
            "tokens_per_s": micro_batch * model.seq / step_s, "achieved_flops_per_s": flops / step_s,
            "gemm_share": sum(k["seconds"] for k in kernels if k["kernel"].startswith("matmul"))
            / max(1e-12, sum(k["seconds"] for k in kernels)),
            "top_kernels": [(k["name"], k["share"]) for k in kernels[:4]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2, help="timed steps per configuration (median)")
    ap.add_argument("--only", choices=sorted(CONFIGS), help="run one configuration")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    before = sgemm_rate()
    results = [bench_config(n, c, args.steps) for n, c in CONFIGS.items()
               if args.only in (None, n)]
    after = sgemm_rate()
    sgemm = (before + after) / 2
    for r in results:
        r["fraction_of_sgemm"] = r["achieved_flops_per_s"] / sgemm
    figures = {"sgemm_flops_per_s": sgemm, "sgemm_before": before, "sgemm_after": after,
               "configs": results}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"SGEMM (numpy/BLAS float32, 2048^3): {sgemm / 1e9:.0f} GFLOP/s "
          f"(before {before / 1e9:.0f}, after {after / 1e9:.0f})")
    for r in results:
        print(f"{r['name']}: {r['layers']} x {r['hidden']} (heads {r['heads']}, vocab {r['vocab']}), "
              f"seq {r['seq']} x micro-batch {r['micro_batch']}, {r['parameters'] / 1e6:.0f} M "
              f"parameters")
        print(f"  step {r['step_s']:.2f} s: {r['tokens_per_s']:,.0f} tokens/s, "
              f"{r['achieved_flops_per_s'] / 1e9:.0f} GFLOP/s = {r['fraction_of_sgemm']:.0%} of SGEMM "
              f"(target 50%); GEMMs {r['gemm_share']:.0%} of kernel time")
        print("  slowest: " + ", ".join(f"{n} {s:.0%}" for n, s in r["top_kernels"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
