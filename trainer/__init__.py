"""The reference trainer: the real GPT model, measured, on one node or many.

It shares only the model description with the simulator (perfmodel.model.ModelSpec;
tests/test_layers.py holds it to that). The model FLOPs a run reports are counted by
its caller with perfmodel.ops (``measurement_record(..., flops_per_step)``), the
simulator's one formula, so a trainer step's FLOPs and the simulator's are one count.
Parameters live in one flat buffer with named views (params.py); the
layers' forward and backward kernels are in kernels.py and are assembled into the
model in gpt.py; data comes from UTF-8 text through a byte-level tokenizer or from
token shards (data.py); train.py runs steps with AdamW (optim.py), checkpoints
(checkpoint.py), data parallelism over MPI (distributed.py), Megatron-LM's tensor
parallelism (tensor.py), pipeline stages running perfmodel's schedules (train.py) and
per-kernel timers (timers.py, record.py).
"""

import os

# Thread pools that spin while idle steal the cores from whichever pool runs next: the
# trainer alternates BLAS GEMMs with Numba (OpenMP) kernels. These must be set before
# numpy and numba load their libraries; a user's own setting wins.
# - OpenMP threads sleep at once when idle (passive waiting).
# - OpenBLAS threads stop spinning after 2^12 cycles instead of 2^28. Measured by
#   `python -m benchmarks.trainer` on 2 cores: a GPT-2-small-shaped step went from 56%
#   of the machine's SGEMM rate (2^28) to 76% (2^4, its minimum); the tiled attention's
#   many small GEMMs (one per head and tile) then paid a thread wake-up each, and 2^12
#   made the `small` model's step 13% faster (4,720-4,890 tokens/s at 2^4, 5,430-5,480
#   at 2^12, three alternating runs of 60 steps) with GPT-2 small unchanged (74-79%).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "12")
