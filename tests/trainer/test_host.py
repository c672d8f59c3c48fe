"""How busy the machine is: /proc/stat read into CPU time, the cores other work keeps,
the default thread count that leaves them alone, and the CPU's name. /proc files and
the clock are replaced by fakes, so each figure is known exactly."""

import pytest

from trainer import host
from trainer.host import ContentionMeter, CoreUse, CpuTimes, core_use, cpu_model, threads_for


def test_proc_stat_is_read_into_seconds_by_state(monkeypatch, tmp_path):
    path = tmp_path / "stat"       # user nice system idle iowait irq softirq steal, 1/100 s
    path.write_text("cpu  100 20 30 400 50 6 4 90 0 0\ncpu0 0 0 0 0 0 0 0 0\n")
    monkeypatch.setattr(host, "PROC_STAT", str(path))
    monkeypatch.setattr(host.os, "sysconf", lambda name: 100)
    t = host.read_cpu_times()
    assert t == CpuTimes(busy=1.6, idle=4.5, steal=0.9) and t.total == pytest.approx(7.0)


@pytest.mark.parametrize("text", ["", "intr 1 2 3", "cpu  x y z", "cpu 1 2"])
def test_an_unreadable_proc_stat_is_unknown_not_an_error(monkeypatch, tmp_path, text):
    path = tmp_path / "stat"
    path.write_text(text)
    monkeypatch.setattr(host, "PROC_STAT", str(path))
    assert host.read_cpu_times() is None
    monkeypatch.setattr(host, "PROC_STAT", str(tmp_path / "missing"))
    assert host.read_cpu_times() is None


def fake_machine(monkeypatch, cores, times, own, clock):
    """A machine of ``cores`` whose counters read, in turn, the given machine-wide CPU
    times, this process's CPU seconds and clock readings."""
    times, own, clock = iter(times), iter(own), iter(clock)
    monkeypatch.setattr(host, "read_cpu_times", lambda: next(times))
    monkeypatch.setattr(host, "process_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(host.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(host.os, "cpu_count", lambda: cores)


def test_core_use_counts_other_work_but_not_this_process(monkeypatch):
    """4 cores over 1 s: 3 cores' worth busy, of which this process used 1: 2 are others'."""
    fake_machine(monkeypatch, 4, times=[CpuTimes(0, 0, 0), CpuTimes(busy=3.0, idle=1.0, steal=0.0)],
                 own=[10.0, 11.0], clock=[0.0, 1.0])
    monkeypatch.setattr(host.time, "sleep", lambda s: None)
    use = core_use(1.0)
    assert use == CoreUse(cores=4, busy=pytest.approx(2.0), sample_s=1.0)
    assert use.idle == 2


def test_core_use_is_unknown_without_proc_stat(monkeypatch):
    monkeypatch.setattr(host, "read_cpu_times", lambda: None)
    monkeypatch.setattr(host.time, "sleep", lambda s: None)
    assert core_use(0.01) is None


@pytest.mark.parametrize("busy, ranks, threads", [
    (0.0, 1, 8),        # a quiet machine: every core
    (3.0, 1, 5),        # 3 cores busy: the other 5
    (3.4, 1, 5),        # a core counts as free when at least half of it is
    (3.6, 1, 4),
    (3.0, 2, 2),        # 5 free cores shared by 2 ranks: 2 each
    (8.0, 1, 1),        # nothing free: still one thread
])
def test_default_threads_leave_busy_cores_alone(monkeypatch, busy, ranks, threads):
    monkeypatch.setattr(host.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(host.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert threads_for(CoreUse(8, busy, 0.25), ranks) == threads


def test_default_threads_stay_within_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(host.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(host.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert threads_for(CoreUse(8, 0.0, 0.25)) == 2
    assert threads_for(None) == 2                    # unknown use: every allowed core


def test_a_meter_sees_steal_and_other_work_over_its_window(monkeypatch):
    """2 cores over 2 s (4 core-seconds): 1 stolen (a quarter), 2.5 busy (1.25 cores'
    worth), of which this process used 1.5 s (0.75 of a core): others used 0.5 cores."""
    fake_machine(monkeypatch, 2, times=[CpuTimes(0, 0, 0), CpuTimes(busy=2.5, idle=0.5, steal=1.0)],
                 own=[0.0, 1.5], clock=[0.0, 2.0])
    window = ContentionMeter().stop()
    assert window.wall_s == 2.0 and window.cores == 2
    assert window.steal_fraction == pytest.approx(0.25)
    assert window.other_cores == pytest.approx(0.5)


@pytest.mark.parametrize("cpuinfo, name", [
    ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz\n",
     "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz"),
    ("processor\t: 0\nCPU implementer\t: 0x46\nCPU architecture: 8\nCPU part\t: 0x001\n",
     "Fujitsu A64FX"),
    ("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n", "Arm Neoverse V2"),
    ("processor\t: 0\nCPU implementer\t: 0x61\nCPU part\t: 0x022\n",
     "ARM implementer 0x61 part 0x022"),
])
def test_the_cpu_is_named_from_proc_cpuinfo(monkeypatch, tmp_path, cpuinfo, name):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    monkeypatch.setattr(host, "PROC_CPUINFO", str(path))
    assert cpu_model() == name
