"""Property-based fuzzing of calibration files and run logs: every mutation of a valid
input is refused with a SpecError naming the file, or gives finite figures."""

from __future__ import annotations

import csv
import io
import json
import math

from hypothesis import given
from hypothesis import strategies as st

from calibration import calfile
from calibration.against import COLUMNS, predict_row, read_runs
from calibration.host import host_system
from fpcore.errors import SpecError
from hostile import HOSTILE_SCALARS, fuzz_settings, mutations, time_limit
from test_calfile import sample


@fuzz_settings(200)
@given(mutated=mutations(sample(collectives={"allreduce": {"alpha_s": 1e-6,
                                                           "bandwidth_bytes_per_s": 1e9,
                                                           "points": 4}})))
def test_mutated_calibration_files_are_refused_or_usable(tmp_path_factory, mutated):
    path = tmp_path_factory.mktemp("cal") / "cal.json"
    path.write_text(json.dumps(mutated, allow_nan=True))
    try:
        data = calfile.load(path)
        system = host_system(data, str(path))
    except SpecError as e:
        assert str(path) in str(e), e
        return
    fit = system.compute_fit
    assert all(math.isfinite(v) and v >= 0 for v in (fit.gemm_rate,))


ROW = {"system": "fugaku", "model": "gpt-125m", "layers": "12", "hidden": "768", "heads": "12",
       "vocab": "50257", "seq": "2048", "ranks": "32", "tp": "1", "pp": "1", "dp": "32",
       "global_batch": "64", "micro_batch": "1", "interleave": "1", "recompute": "none",
       "sequence_parallel": "false", "zero": "0", "precision": "fp32", "clock_ghz": "",
       "measured": "10.0", "unit": "sec_per_iter", "flops_convention": "", "source": "test",
       "stack": "", "partition": ""}

CELLS = st.one_of(st.sampled_from(["nan", "NaN", "inf", "-inf", "-1", "0", "1e400", "", " ",
                                   "/etc/passwd", "../x.toml", "1.5", "99999999999999", "true",
                                   "full", "fp16", "x" * 200, "type:transformer", "even",
                                   "megatron-deepspeed", "jeanzay-a100", "7"]),
                  HOSTILE_SCALARS.map(str))


@fuzz_settings(300)
@given(changes=st.dictionaries(st.sampled_from(sorted(ROW)), CELLS, min_size=1, max_size=3))
def test_mutated_run_log_rows_are_refused_or_finite(tmp_path_factory, changes):
    row = dict(ROW, **changes)
    path = tmp_path_factory.mktemp("log") / "runs.csv"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[c for c in COLUMNS if c in row] +
                            [c for c in row if c not in COLUMNS])
    writer.writeheader()
    writer.writerow(row)
    path.write_text(out.getvalue())
    with time_limit(60):
        try:
            results = [predict_row(r, "row 2") for r in read_runs(path)]
        except SpecError:
            return
    for r in results:
        assert all(math.isfinite(r[k]) for k in ("measured", "predicted", "error")), (changes, r)
        assert r["measured"] > 0 and r["predicted"] > 0, (changes, r)
