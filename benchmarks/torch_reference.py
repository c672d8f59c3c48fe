"""The reference trainer's model in PyTorch, timed step by step: the benchmark's yardstick.

    PYTHON_WITH_TORCH benchmarks/torch_reference.py '{"layers": 4, ...}'

Run by ``python -m benchmarks.trainer --torch-python PYTHON`` in an interpreter that has
PyTorch (a separate virtual environment: fugakuperf never needs it). The model is the
trainer's (trainer/gpt.py): learned token and position embeddings, pre-LN blocks with
biases, GELU (tanh form), a final LayerNorm and the output tied to the token embedding;
causal attention through ``scaled_dot_product_attention`` (PyTorch's fused CPU kernel);
AdamW with the trainer's defaults (betas 0.9/0.95, weight decay 0.1, eps 1e-8) and
clipping at global norm 1. One step: forward, backward, clip, update, as the trainer's.
Prints one JSON line: {"step_s": [...], "torch": version, "threads": n}.
"""

import json
import sys
import time


def main(spec: dict) -> dict:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    L, C, NH, T = spec["layers"], spec["hidden"], spec["heads"], spec["seq"]
    B, V = spec["micro_batch"], spec["vocab"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.fc, self.fcproj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.lnf = nn.LayerNorm(C)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(T))
            for block in self.blocks:
                x = block(x)
            logits = self.lnf(x) @ self.wte.weight.T
            return F.cross_entropy(logits.view(-1, V), targets.view(-1))

    model = GPT()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1)
    idx, targets = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))

    def step():
        opt.zero_grad(set_to_none=True)
        model(idx, targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(spec["warmup"]):
        step()
    times = []
    for _ in range(spec["steps"]):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"step_s": times, "torch": torch.__version__, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
