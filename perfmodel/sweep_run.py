"""Running a sweep (perfmodel.sweep): on a local process pool, or under ``mpiexec`` on
mpi4py.futures, into an append-only results file that a killed run resumes.

The results file is JSON lines: a header naming the sweep (its file's digest, knobs
and models), then one record per hardware point in point order. Points finish in any
order on any number of workers; each is written once every point before it has been,
in one ``write`` of one whole line, so the file is the same bytes whatever the number
of workers, and a run killed at any moment leaves a prefix of it (a last line cut
short is dropped when the run resumes). Resuming checks the header against the sweep
and starts at the first point not written.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Executor, wait

from fpcore.errors import SpecError

from .sweep import Sweep, evaluate

CHUNK = 8                  # points per task: seeds carried further, still balanced


def dumps(record: dict) -> str:
    """One record as the results file writes it (sorted keys, no spaces, standard JSON)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _evaluate_chunk(sweep: Sweep, start: int, stop: int) -> list[str]:
    """Points [start, stop) as result lines, each point's search seeded with the answers
    of the point before it in the chunk (in a worker: its own searches run serially,
    the pool already has every core). Chunks start at multiples of CHUNK whatever the
    workers or where a run resumed, so every point gets the same seeds, and the same
    answer, in every run."""
    from . import parallel
    parallel.run_serially()
    seeds: dict = {}
    return [dumps(evaluate(sweep, i, seeds)) for i in range(start, stop)]


def _json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def read_results(path: str, sweep: Sweep | None = None) -> tuple[dict | None, list[dict], int]:
    """(header, records, bytes of whole lines) of a results file; a last line without
    its newline (a run killed mid-write) is not counted. With ``sweep``, a header of
    another sweep is a SpecError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, [], 0
    except OSError as e:
        raise SpecError("out", f"cannot read {path}: {e.strerror or e}") from None
    end = data.rfind(b"\n") + 1
    lines = data[:end].splitlines()
    if not lines:
        return None, [], 0
    try:
        header = json.loads(lines[0])
        records = [json.loads(line) for line in lines[1:]]
    except (ValueError, UnicodeDecodeError):
        bad = next(i for i, line in enumerate(lines, 1) if not _json(line))
        raise SpecError("out", f"{path} is not a results file of fugakuperf sweep (line "
                               f"{bad} is not JSON); give another --out") from None
    if not isinstance(header, dict) or "sweep" not in header or "digest" not in header:
        raise SpecError("out", f"{path} is not a results file of fugakuperf sweep (no sweep "
                               f"header); give another --out")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or rec.get("point") != i:
            raise SpecError("out", f"{path}: line {i + 2} is not point {i}; the file was "
                                   f"edited or mixed with another; give another --out")
        wrong = _record_error(rec)
        if wrong:
            raise SpecError("out", f"{path}: line {i + 2} is not a point as a sweep writes it "
                                   f"({wrong}); the file was edited; give another --out, or "
                                   f"--restart to replace it")
    expected = None if sweep is None else sweep.header()
    if expected is not None and header != expected:
        changed = sorted(k for k in set(header) | set(expected)
                         if header.get(k) != expected.get(k))
        raise SpecError("out", f"{path} holds results of another sweep (its {', '.join(changed)} "
                               f"differ from {sweep.path}'s); give another --out, or --restart "
                               f"to replace it")
    if sweep is not None:
        moved = next((i for i, rec in enumerate(records[:sweep.points])
                      if rec["hardware"] != sweep.point(i)), None)
        if moved is not None or len(records) > sweep.points:
            line = (sweep.points if moved is None else moved) + 2
            raise SpecError("out", f"{path}: line {line} is not a point of {sweep.path}; the "
                                   f"file was edited; give another --out, or --restart to "
                                   f"replace it")
    return header, records, end


# A model's figures in a point's record (sweep._plan_one), each a finite number >= 0;
# energy_mwh may be null (a system that gives no power), the rest are named below.
_FIGURES = ("iteration_s", "days", "days_low", "days_high", "ranked_days", "mfu",
            "tokens_per_s", "node_hours", "power_mw", "cost", "memory_gb")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < float("inf")


def _record_error(rec: dict) -> str:
    """What in a point's record is not as perfmodel.sweep.evaluate writes it ('' if
    nothing): a resumed sweep's summary reads every record."""
    if not isinstance(rec.get("hardware"), dict) or not all(
            isinstance(k, str) and _number(v) for k, v in rec["hardware"].items()):
        return "its hardware is not knob: number"
    if "error" in rec:
        return "" if isinstance(rec["error"], str) else "its error is not text"
    if not _number(rec.get("price_factor")) or not isinstance(rec.get("models"), list):
        return "no price_factor or models"
    for m in rec["models"]:
        if not isinstance(m, dict) or not isinstance(m.get("model"), str):
            return "a model's entry has no name"
        if "error" in m:
            if not isinstance(m["error"], str):
                return f"model {m['model'][:30]!r}: its error is not text"
            continue
        bad = next((k for k in _FIGURES if not _number(m.get(k))), None) or next(
            (k for k in ("nodes", "evidence") if not isinstance(m.get(k), int)
             or isinstance(m.get(k), bool) or m[k] < 0), None) or next(
            (k for k in ("layout", "precision") if not isinstance(m.get(k), str)), None)
        if bad is None and m.get("energy_mwh") is not None and not _number(m["energy_mwh"]):
            bad = "energy_mwh"
        if bad is None and not isinstance(m.get("meets"), bool):
            bad = "meets"
        if bad is None and not isinstance(m.get("misses", []), list):
            bad = "misses"
        if bad is not None:
            return f"model {m['model'][:30]!r}: {bad} is missing or not what it can be"
    return ""


class Progress:
    """Points done, their rate and the time left, on one line of stderr (rewritten on a
    terminal, every few seconds otherwise)."""

    def __init__(self, total: int, done: int, stream=None, quiet: bool = False):
        self.total, self.start_done, self.done = total, done, done
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = self.last = time.monotonic()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, done: int, final: bool = False) -> None:
        self.done = done
        now = time.monotonic()
        if self.quiet or (not final and now - self.last < (0.5 if self.tty else 5.0)):
            return
        self.last = now
        new = done - self.start_done
        rate = new / (now - self.t0) if now > self.t0 else 0.0
        left = (self.total - done) / rate if rate > 0 else float("nan")
        eta = "" if final or left != left else f", about {_duration(left)} left"
        text = (f"sweep: {done:,}/{self.total:,} points ({100 * done / max(1, self.total):.0f}%), "
                f"{rate:.2f} points/s{eta}")
        if self.tty:
            self.stream.write("\r" + text.ljust(78) + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def run(sweep: Sweep, out: str, *, executor: Executor | None = None, restart: bool = False,
        progress: Progress | None = None, local_share: bool = False) -> list[dict]:
    """Run every point not yet in ``out`` and return all records (in point order).

    ``executor`` runs the chunks (None: this process alone). With ``local_share`` this
    process also runs chunks itself while the executor's workers run theirs (the root
    of an MPI run, whose executor's workers are the other ranks)."""
    if restart:
        _truncate(out, 0)
    header, records, end = read_results(out, sweep)
    total = sweep.points
    if header is None:
        _truncate(out, 0)
        _append(out, dumps(sweep.header()) + "\n")
    else:
        _truncate(out, end)               # drop a line cut short
    done = len(records)
    progress = progress or Progress(total, done, quiet=True)
    # whole chunks, the first from its aligned start: a point's seeds come from the
    # points before it in its chunk, so a resumed chunk runs again from its start
    chunks = [(s, min(s + CHUNK, total)) for s in range(done - done % CHUNK, total, CHUNK)]
    pending: dict[int, list[str]] = {}
    next_start = done

    def keep(start: int, lines: list[str]) -> None:
        skip = max(0, done - start)            # points of a resumed chunk already written
        pending[start + skip] = lines[skip:]

    def flush():
        nonlocal next_start
        while next_start in pending:
            lines = pending.pop(next_start)
            _append(out, "".join(line + "\n" for line in lines))
            records.extend(json.loads(line) for line in lines)
            next_start += len(lines)
        progress.update(next_start)

    if executor is None:
        for start, stop in chunks:
            keep(start, _evaluate_chunk(sweep, start, stop))
            flush()
    else:
        # every chunk queued at once: the executor hands them out from the front as its
        # workers free up; with local_share this process takes chunks from the back
        # while they are still queued (a queued future can be cancelled, a running one
        # not), so nobody waits on anybody until the last chunks
        running = {executor.submit(_evaluate_chunk, sweep, start, stop): (start, stop)
                   for start, stop in chunks}

        def harvest(futures) -> None:
            for f in futures:
                keep(running.pop(f)[0], f.result())
            flush()

        for f in reversed(list(running)) if local_share else ():
            if not f.cancel():
                break                     # this one and those before it are out already
            start, stop = running.pop(f)
            keep(start, _evaluate_chunk(sweep, start, stop))
            harvest([g for g in running if g.done()])
        while running:
            done_now, _ = wait(running, return_when=FIRST_COMPLETED)
            harvest(done_now)
    progress.update(next_start, final=True)
    return records


def _append(path: str, text: str) -> None:
    """One whole write of ``text`` at the end of ``path`` (created if missing)."""
    data = text.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)
    except OSError as e:
        raise SpecError("out", f"cannot write {path}: {e.strerror or e}") from None


def _truncate(path: str, size: int) -> None:
    try:
        if os.path.exists(path):
            os.truncate(path, size)
    except OSError as e:
        raise SpecError("out", f"cannot write {path}: {e.strerror or e}") from None


def mpi_world() -> int:
    """The number of ranks mpiexec started (0: not started by an MPI launcher, whose
    variables mpi4py is imported only when present)."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE"):
        if os.environ.get(var, "").isdigit():
            from mpi4py import MPI
            return MPI.COMM_WORLD.Get_size()
    return 0
