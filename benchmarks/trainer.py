"""Benchmark of the reference trainer against this machine's SGEMM rate and against PyTorch,
in one run.

    python -m benchmarks.trainer [--json] [--steps N] [--only NAME] [--torch-python PY]

For each configuration, a full training step (forward, backward, gradient norm,
AdamW) is timed after one untimed step (which compiles the Numba kernels); the
achieved rate counts model FLOPs (perfmodel's Korthikanti Eq. 7, the MFU numerator).
The machine's float32 GEMM rate (numpy/BLAS, 2048^3, best of 5) is measured in the
same run, before and after, and the step's rate is reported as a fraction of it
(target: >= 80% for hidden >= 768).

``--torch-python PY`` also times the same model in PyTorch (benchmarks/torch_reference.py
run by PY, an interpreter with PyTorch: fugakuperf itself never needs it), in rounds
alternating with the trainer's own (``--rounds``), and reports the trainer's tokens/s
over PyTorch's, medians of the same number of steps (target: >= 1 on ``small``).
Timings on a shared machine are noisy: compare the ratios; the CPU time the hypervisor
stole during the run (/proc/stat) is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import trainer  # noqa: F401  (first: sets the thread-pool environment before numpy loads)

CONFIGS = {
    # GPT-2 small's shape (Radford et al. 2019) at sequence 512
    "gpt2-small-like": dict(layers=12, hidden=768, heads=12, vocab=50257, seq=512, micro_batch=2),
    # one full-width Fugaku-LLM layer (40 x 5184, 36 heads, vocab 49152) at sequence 512
    "fugaku-llm-slice": dict(preset="fugaku-llm-13b", layers=1, seq=512, micro_batch=1),
    # a small GPT over bytes: the shape the trainer is compared with PyTorch on
    "small": dict(layers=4, hidden=256, heads=4, vocab=256, seq=256, micro_batch=8),
}
TORCH_SCRIPT = Path(__file__).with_name("torch_reference.py")


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


def _stolen() -> tuple[int, int]:
    """(steal ticks, all ticks) so far, from /proc/stat (zeros where it is missing)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[7] if len(values) > 7 else 0, sum(values)
    except OSError:
        return 0, 0


def _torch_steps(python: str, model, micro_batch: int, steps: int, threads: int) -> list[float]:
    spec = {"layers": model.layers, "hidden": model.hidden, "heads": model.heads,
            "seq": model.seq, "vocab": model.vocab, "micro_batch": micro_batch,
            "steps": steps, "warmup": 2, "threads": threads}
    out = subprocess.run([python, str(TORCH_SCRIPT), json.dumps(spec)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])["step_s"]


def bench_config(name: str, spec: dict, steps: int, torch_python: str | None = None,
                 rounds: int = 1) -> dict:
    import numba
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
    run = Trainer(model, tokens, TrainSettings(steps=rounds * steps + 1, micro_batch=micro_batch,
                                                   val_fraction=0.0), timers=timers)
    run.step()                                     # compiles the kernels
    timers.reset()
    times, theirs = [], []
    for _ in range(rounds):                        # ours and PyTorch's, alternating
        times += [run.step().seconds for _ in range(steps)]
        if torch_python:
            theirs += _torch_steps(torch_python, model, micro_batch, steps,
                                   numba.get_num_threads())
    step_s = statistics.median(times)
    flops = model_flops_per_iteration(model, run.sampler.global_batch)
    kernels = timers.records()
    tokens_per_step = micro_batch * model.seq
    out = {"name": name, "layers": model.layers, "hidden": model.hidden, "heads": model.heads,
           "vocab": model.vocab, "seq": model.seq, "micro_batch": micro_batch,
           "parameters": run.params.size, "steps": len(times), "step_s": step_s,
           "tokens_per_s": tokens_per_step / step_s, "achieved_flops_per_s": flops / step_s,
           "gemm_share": sum(k["seconds"] for k in kernels if k["kernel"].startswith("matmul"))
           / max(1e-12, sum(k["seconds"] for k in kernels)),
           "top_kernels": [(k["name"], k["share"]) for k in kernels[:4]]}
    if torch_python:
        torch_s = statistics.median(theirs)
        out.update(torch_step_s=torch_s, torch_tokens_per_s=tokens_per_step / torch_s,
                   over_torch=torch_s / step_s)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2, help="timed steps per configuration and "
                                                        "round (median)")
    ap.add_argument("--rounds", type=int, default=3, help="with --torch-python: rounds of "
                                                        "--steps steps each, alternating")
    ap.add_argument("--only", choices=sorted(CONFIGS), help="run one configuration")
    ap.add_argument("--torch-python", metavar="PY", help="an interpreter with PyTorch: time "
                                                         "the same model there too")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    stolen0 = _stolen()
    before = sgemm_rate()
    results = [bench_config(n, c, args.steps, args.torch_python,
                            args.rounds if args.torch_python else 1)
               for n, c in CONFIGS.items() if args.only in (None, n)]
    after = sgemm_rate()
    stolen1 = _stolen()
    steal = (stolen1[0] - stolen0[0]) / max(1, stolen1[1] - stolen0[1])
    sgemm = (before + after) / 2
    for r in results:
        r["fraction_of_sgemm"] = r["achieved_flops_per_s"] / sgemm
    figures = {"sgemm_flops_per_s": sgemm, "sgemm_before": before, "sgemm_after": after,
               "steal_fraction": steal, "configs": results}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"SGEMM (numpy/BLAS float32, 2048^3): {sgemm / 1e9:.0f} GFLOP/s "
          f"(before {before / 1e9:.0f}, after {after / 1e9:.0f}); CPU time stolen by the "
          f"hypervisor during the run: {steal:.1%}")
    for r in results:
        print(f"{r['name']}: {r['layers']} x {r['hidden']} (heads {r['heads']}, vocab {r['vocab']}), "
              f"seq {r['seq']} x micro-batch {r['micro_batch']}, {r['parameters'] / 1e6:.1f} M "
              f"parameters")
        print(f"  step {r['step_s']:.3f} s (median of {r['steps']}): {r['tokens_per_s']:,.0f} "
              f"tokens/s, {r['achieved_flops_per_s'] / 1e9:.0f} GFLOP/s = "
              f"{r['fraction_of_sgemm']:.0%} of SGEMM (target 80% from hidden 768); GEMMs "
              f"{r['gemm_share']:.0%} of kernel time")
        if "over_torch" in r:
            print(f"  PyTorch: step {r['torch_step_s']:.3f} s, {r['torch_tokens_per_s']:,.0f} "
                  f"tokens/s; the trainer makes {r['over_torch']:.2f}x PyTorch's tokens/s")
        print("  slowest: " + ", ".join(f"{n} {s:.0%}" for n, s in r["top_kernels"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
