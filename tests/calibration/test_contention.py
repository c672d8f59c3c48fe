"""Was the machine quiet while it was measured? The verdict from steal, other work and
the spread of repeats, against the thresholds calibration.contention states; and a
validation that says when its errors are likely the machine's."""

import pytest

from calibration.contention import (REFUSE_SLOWDOWN, WARN_SLOWDOWN, assess, repeat_spread,
                                    slowdown_bound, summary)
from calibration.validate import contention_suspects
from trainer.host import Contention


def window(steal=0.0, other=0.0, cores=8, load=None):
    return Contention(wall_s=10.0, cores=cores, steal_fraction=steal, other_cores=other,
                      load_start=load, load_end=load)


def test_the_slowdown_bound_multiplies_oversubscription_and_steal():
    assert slowdown_bound(8, 4, 1, 0.0, 0.0) == 1.0              # room to spare
    assert slowdown_bound(8, 8, 1, 4.0, 0.0) == 1.5              # 12 threads' worth on 8
    assert slowdown_bound(8, 2, 2, 0.0, 0.5) == 2.0              # half the time stolen
    assert slowdown_bound(8, 8, 1, 4.0, 0.5) == 3.0
    assert slowdown_bound(8, 8, 1, None, None) is None           # nothing known


@pytest.mark.parametrize("w, threads, verdict", [
    (window(), 8, "quiet"),
    (window(other=0.3), 8, "quiet"),                   # 8.3 threads' worth on 8: +3.75%
    (window(other=0.6), 8, "noisy"),                   # +7.5%: past WARN_SLOWDOWN
    (window(steal=0.10), 8, "noisy"),                  # up to 11% too long
    (window(steal=0.25), 8, "contended"),              # up to 33%: past REFUSE_SLOWDOWN
    (window(other=4.0), 4, "quiet"),                   # others on the cores this job left
    (window(other=4.0), 8, "contended"),               # 12 on 8 cores: 50%
    (Contention(1.0, 8, None, None, None, None), 8, "unknown"),
])
def test_verdicts_follow_the_stated_thresholds(w, threads, verdict):
    assert (WARN_SLOWDOWN, REFUSE_SLOWDOWN) == (1.05, 1.20)
    result = assess(w, threads)
    assert result["verdict"] == verdict
    assert bool(result["reasons"]) == (verdict in ("noisy", "contended"))


def test_a_contended_verdict_says_why_in_numbers():
    result = assess(window(steal=0.25, other=1.0), threads=8)
    assert result["verdict"] == "contended"
    line = summary(result)
    assert "stole 25%" in line and "other work used 1.0 of 8 cores" in line
    assert line.startswith("contended: ") and "may be up to 50% too long" in line
    assert summary(assess(window(), 8)) == "quiet (timings at most 0% too long from contention)"


def test_a_wide_spread_of_repeats_is_noisy_on_a_quiet_machine():
    records = [{"seconds": 1.0, "median_seconds": 1.5}, {"seconds": 2.0, "median_seconds": 2.6},
               {"seconds": 1.0}]
    assert repeat_spread(records) == pytest.approx(1.4)
    result = assess(window(), 8, spread=repeat_spread(records))
    assert result["verdict"] == "noisy" and "spread" in result["reasons"][0]


def test_without_proc_stat_the_load_average_stands_in():
    w = Contention(10.0, 8, None, None, load_start=12.0, load_end=12.0)
    result = assess(w, threads=8)                # 12 runnable, 8 of them this job's
    assert result["other_cores"] == 4.0 and result["verdict"] == "contended"


def test_a_validation_says_when_its_errors_are_likely_the_machines():
    quiet = assess(window(), 8)
    assert contention_suspects(quiet, None, 1.02) == []
    busy = assess(window(steal=0.3), 8)
    reasons = contention_suspects(quiet, busy, 0.8)
    assert len(reasons) == 2
    assert reasons[0].startswith("the machine during calibration: contended")
    assert "-20% vs when calibrated" in reasons[1]
    assert contention_suspects(busy, None, None)[0].startswith("the machine during validation")
