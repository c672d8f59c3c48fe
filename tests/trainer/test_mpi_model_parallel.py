"""Tensor and pipeline parallelism under a real ``mpiexec``: every layout that fits on 4
ranks trains what one rank trains.

Every rank initialises the whole model and keeps its part (its stage's layers, its TP
part of them); the row-parallel outputs, the embedding and the input gradients of the
column-parallel GEMMs are summed over the TP group, the cross-entropy over its
vocabulary slices; the stages pass activations forward and gradients back by the
schedule's steps (1F1B or GPipe, perfmodel.schedules) and sum their tied embeddings'
gradients; checkpoints hold the whole model. So after the same steps the parameters
and AdamW's moments equal the one-rank run's, up to the order of float32 sums
(measured: 1.6e-6 at most with TP, 7e-8 with PP alone (interleaved: 9e-9), on
parameters of order 1).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from trainer_runs import train

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def state(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].copy() for k in ("params", "m", "v")}


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    run = train([], "--checkpoint-dir", str(d))
    assert run.returncode == 0, run.stderr
    return state(d / "step_00000003.npz")


LAYOUTS = [(2, ["--tp", "2"]), (4, ["--tp", "4"]), (4, ["--tp", "2"]),          # TP2 x DP2
           (2, ["--pp", "2"]), (2, ["--pp", "2", "--schedule", "gpipe"]),
           (4, ["--pp", "2", "--tp", "2"]), (4, ["--pp", "2"])]                     # PP2 x DP2


@pytest.mark.parametrize("ranks, layout", LAYOUTS, ids=lambda v: " ".join(map(str, v))
                         if isinstance(v, list) else str(v))
def test_parallel_ranks_train_what_one_rank_trains(one_rank, mpiexec, tmp_path, ranks, layout):
    record = tmp_path / "run.json"
    run = train([mpiexec, "-n", str(ranks)], *layout, "--checkpoint-dir", str(tmp_path),
                "--measurements", str(record))
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "loss 5.4804" in run.stdout                  # the one-rank run's, as printed
    mine = state(tmp_path / "step_00000003.npz")
    for key in ("params", "m", "v"):
        np.testing.assert_allclose(mine[key], one_rank[key], rtol=1e-5, atol=1e-5, err_msg=key)
    # every rank's record has its own communication: TP all-reduces (forward and
    # backward, every layer) and the pipeline's receives (every stage but one end)
    parts = json.loads(record.read_text())["ranks"]
    assert len(parts) == ranks
    for part in parts:
        kernels = {k["kernel"]: k["calls"] for k in part["kernels"]}
        if "--tp" in layout:
            assert kernels.get("tp_allreduce", 0) > 0, kernels
        if "--pp" in layout:
            assert kernels.get("pp_recv", 0) > 0, kernels


FOUR_LAYERS = ["--layers", "4"]          # (after trainer_runs.TINY's 2: the last one wins)


@pytest.fixture(scope="module")
def one_rank_four_layers(tmp_path_factory):
    d = tmp_path_factory.mktemp("one4")
    run = train([], *FOUR_LAYERS, "--checkpoint-dir", str(d))
    assert run.returncode == 0, run.stderr
    return state(d / "step_00000003.npz")


@pytest.mark.parametrize("ranks, layout", [
    (2, ["--pp", "2", "--schedule", "interleaved", "--virtual-stages", "2"]),
    (4, ["--pp", "2", "--tp", "2", "--schedule", "interleaved", "--virtual-stages", "2"]),
], ids=["PP2 interleaved v2", "PP2 x TP2 interleaved v2"])
def test_interleaved_stages_train_what_one_rank_trains(one_rank_four_layers, mpiexec, tmp_path,
                                                       ranks, layout):
    """Megatron-LM's interleaved schedule: each stage holds two chunks of one layer
    (virtual stages c x 2 + s), the step lists perfmodel simulates, messages routed by
    its producer and consumer of each step."""
    run = train([mpiexec, "-n", str(ranks)], *FOUR_LAYERS, *layout, "--checkpoint-dir",
                str(tmp_path))
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    mine = state(tmp_path / "step_00000003.npz")
    for key in ("params", "m", "v"):
        np.testing.assert_allclose(mine[key], one_rank_four_layers[key], rtol=1e-5, atol=1e-5,
                                   err_msg=key)


@pytest.mark.parametrize("layout", [["--tp", "2"], ["--pp", "2"]])
def test_a_model_parallel_run_resumes_exactly(mpiexec, tmp_path, layout):
    """Two steps and a resume for the third give bit for bit the three steps' state."""
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    two = [mpiexec, "-n", "2"]
    assert train(two, *layout, "--checkpoint-dir", str(straight)).returncode == 0
    first = train(two, *layout, "--checkpoint-dir", str(parts), "--checkpoint-every", "1",
                  "--stop-after", "2")
    assert first.returncode == 0, first.stderr
    second = train(two, *layout, "--checkpoint-dir", str(parts), "--resume", str(parts))
    assert second.returncode == 0, second.stderr
    a, b = state(straight / "step_00000003.npz"), state(parts / "step_00000003.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("ranks, extra, says", [
    (2, ["--tp", "3"], "tp: tp x pp = 3 x 1 must divide the 2 ranks"),
    (2, ["--tp", "2", "--heads", "1"], "tp: 2 ranks cannot split"),
    (2, ["--pp", "2", "--layers", "3"],
     "pp: 2 pipeline stages of 1 chunk(s) must divide the 3 layers"),
    (4, ["--pp", "3"], "pp: tp x pp = 1 x 3 must divide the 4 ranks"),
    (2, ["--pp", "2", "--schedule", "interleaved"], "virtual_stages: interleaved runs 2 or "
                                                    "more chunk(s) per stage; got 1"),
    (2, ["--pp", "2", "--schedule", "interleaved", "--virtual-stages", "2"],
     "pp: 2 pipeline stages of 2 chunk(s) must divide the 2 layers"),
])
def test_a_layout_that_cannot_run_is_one_line(mpiexec, ranks, extra, says):
    run = train([mpiexec, "-n", str(ranks)], *extra)
    assert run.returncode == 2
    assert says in run.stderr and "Traceback" not in run.stderr, run.stderr
