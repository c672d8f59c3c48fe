"""Checkpoints: a safe format (no pickle), written atomically, resumed exactly.

A checkpoint is one ``step_NNNNNNNN.npz`` (numpy's zip of ``.npy`` arrays, read back
with ``allow_pickle=False``): ``params``, AdamW's ``m`` and ``v`` (flat float32
buffers) and ``meta``, UTF-8 JSON holding the format version, the ModelSpec, the
training settings that define the run, the step reached and the data's fingerprint.
Everything a resumed run needs is there, and the data sampler is a pure function of
(seed, step), so a resumed run repeats exactly what the uninterrupted run would do.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np

from fpcore.atomic import atomic_write
from fpcore.errors import SpecError
from fpcore.readers import dumps
from perfmodel.model import ModelSpec

FORMAT = "fugakuperf-checkpoint"
VERSION = 1
NAME = re.compile(r"^step_(\d{8})\.npz$")
ARRAYS = ("params", "m", "v")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.npz"


def save(directory: str | Path, step: int, model: ModelSpec, settings: dict, params: np.ndarray,
         m: np.ndarray, v: np.ndarray, keep: int = 2) -> Path:
    """Write the checkpoint after ``step`` completed steps; keep the newest ``keep``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpecError("checkpoint_dir", f"cannot create {directory}: {e.strerror or e}") from e
    meta = {"format": FORMAT, "version": VERSION, "step": step,
            "model": dataclasses.asdict(model), "settings": settings}
    arrays = {"params": params, "m": m, "v": v,
              "meta": np.frombuffer(dumps(meta).encode("utf-8"), dtype=np.uint8)}
    path = checkpoint_path(directory, step)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if NAME.match(p.name)]
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))


def latest(path: str | Path) -> Path:
    """A checkpoint file itself, or the newest one in a directory."""
    path = Path(path)
    if path.is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise SpecError("resume", f"{path}: no checkpoint (step_NNNNNNNN.npz) there")
    return found[-1]


@dataclasses.dataclass
class Checkpoint:
    path: Path
    step: int
    model: ModelSpec
    settings: dict
    params: np.ndarray
    m: np.ndarray
    v: np.ndarray


def load(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint; a damaged or foreign file is refused by name."""
    path = latest(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (*ARRAYS, "meta") if k not in z.files]
            if missing:
                raise SpecError("resume", f"{path}: not a fugakuperf checkpoint "
                                          f"(missing {', '.join(missing)})")
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            arrays = {k: z[k] for k in ARRAYS}
    except SpecError:
        raise
    except (OSError, ValueError, KeyError, EOFError, io.UnsupportedOperation) as e:
        raise SpecError("resume", f"{path}: unreadable checkpoint ({e})") from e
    except Exception as e:  # zipfile.BadZipFile and friends: damaged file
        raise SpecError("resume", f"{path}: damaged checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SpecError("resume", f"{path}: not a fugakuperf checkpoint")
    if meta.get("version") != VERSION:
        raise SpecError("resume", f"{path}: checkpoint format version {meta.get('version')}; "
                                  f"this fugakuperf reads version {VERSION}")
    model = ModelSpec(**meta["model"])
    sizes = {k: a.size for k, a in arrays.items()}
    if len(set(sizes.values())) != 1 or any(a.dtype != np.float32 for a in arrays.values()):
        raise SpecError("resume", f"{path}: damaged checkpoint (arrays {sizes})")
    return Checkpoint(path, int(meta["step"]), model, meta.get("settings", {}),
                      arrays["params"], arrays["m"], arrays["v"])
