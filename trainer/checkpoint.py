"""Checkpoints: a safe format (no pickle), written atomically, checked before use,
resumed exactly.

A checkpoint is one ``step_NNNNNNNN.npz`` (numpy's zip of ``.npy`` arrays, never read
with pickle): ``params``, AdamW's ``m`` and ``v`` (flat float32 buffers, one value per
parameter of the model) and ``meta``, UTF-8 JSON holding

    format, version   "fugakuperf-checkpoint", 1
    step              optimizer steps completed (0 to MAX_STEP; the file is named for it)
    model             the ModelSpec's fields
    settings          what defines the run (trainer.train.RUN_DEFINING): global_batch,
                      micro_batch, seed, world, data (its fingerprint), optimizer (AdamW's
                      fields), decay_steps, val_fraction
    determinism       the threads, ranks and libraries it was computed with
                      (trainer.determinism; absent from checkpoints written before)

Everything a resumed run needs is there, and the data sampler is a pure function of
(seed, step), so a resumed run repeats exactly what the uninterrupted run would do.

Nothing read is trusted: every metadata field goes through fpcore's checks; each
array's header (name, shape, dtype) is checked against the model before its data is
read, and only when the memory to hold it is there; the values must be finite (``v``
non-negative). Any problem is one SpecError naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np

from fpcore.atomic import atomic_write, remove_stale_temps, target
from fpcore.errors import SpecError, check_float, check_int, check_keys, check_str, require
from fpcore.readers import decode_text, dumps, parse_json
from perfmodel.model import ModelSpec

from . import determinism
from .memory import Need, check_fits
from .params import check_trainable

FORMAT = "fugakuperf-checkpoint"
VERSION = 1
NAME = re.compile(r"^step_(\d{8})\.npz$")
MAX_STEP = 99_999_999                     # the eight digits of the file name
ARRAYS = ("params", "m", "v")
MEMBERS = tuple(f"{k}.npy" for k in (*ARRAYS, "meta"))
MAX_META_BYTES = 1 << 20
CHUNK = 1 << 24                           # values checked or read at a time
META_KEYS = ("format", "version", "step", "model", "settings", "determinism")
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSpec))
MODEL_REQUIRED = ("layers", "hidden", "heads", "vocab", "seq")
SETTINGS_KEYS = ("global_batch", "micro_batch", "seed", "world", "data", "optimizer",
                 "decay_steps", "val_fraction")
OPTIMIZER_KEYS = ("lr", "min_lr", "warmup", "decay_steps", "beta1", "beta2", "eps",
                  "weight_decay", "clip")
FINGERPRINT = re.compile(r"^\d+:[0-9a-f]{24}$")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.npz"


# ---------------------------------------------------------------------- writing
def save(directory: str | Path, step: int, model: ModelSpec, settings: dict, params: np.ndarray,
         m: np.ndarray, v: np.ndarray, keep: int = 2, environment: dict | None = None) -> Path:
    """Write the checkpoint after ``step`` completed steps; keep the newest ``keep``
    (0: all). ``environment`` (trainer.determinism.environment) is recorded when given."""
    directory = Path(directory)
    try:
        directory.mkdir(exist_ok=True)
    except OSError as e:
        raise SpecError("checkpoint_dir", f"cannot create {directory}: {e.strerror or e}") from e
    meta = {"format": FORMAT, "version": VERSION, "step": step,
            "model": dataclasses.asdict(model), "settings": settings}
    if environment is not None:
        meta["determinism"] = environment
    arrays = {"params": params, "m": m, "v": v,
              "meta": np.frombuffer(dumps(meta).encode("utf-8"), dtype=np.uint8)}
    path = checkpoint_path(directory, step)
    atomic_write(path, lambda f: np.savez(f, **arrays), field="checkpoint_dir")
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def prepare_directory(directory: str | Path, last_step: int,
                      continues: Path | None = None) -> list[str]:
    """Before any work: ``directory`` exists (created if its folder does) and can be
    written, the checkpoint of ``last_step`` can be written there, and a run does not
    mix its checkpoints with another's: a folder that holds checkpoints is refused
    unless the run ``continues`` from one of them. Removes the temporary files of
    writers killed there (fpcore.atomic) and returns their paths."""
    field = "checkpoint_dir"
    directory = Path(directory)
    try:
        st = directory.stat()
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as e:
        raise SpecError(field, f"{str(directory):.200}: {getattr(e, 'strerror', None) or e}") \
            from None
    if st is None:
        parent = directory.absolute().parent
        if not os.path.isdir(parent):
            raise SpecError(field, f"cannot create {directory}: the folder {parent} does not "
                                   f"exist")
        try:
            directory.mkdir()
        except OSError as e:
            raise SpecError(field, f"cannot create {directory}: {e.strerror or e}") from None
    elif not stat.S_ISDIR(st.st_mode):
        raise SpecError(field, f"{directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SpecError(field, f"{directory} is not writable")
    target(checkpoint_path(directory, last_step), field)
    found = list_checkpoints(directory)
    if found and (continues is None or continues.resolve().parent != directory.resolve()):
        raise SpecError(field, f"{directory} already holds checkpoints of a run (newest "
                               f"{found[-1].name}): --resume {directory} continues it; to "
                               f"start a new run, give an empty or new directory")
    return remove_stale_temps(directory)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest step first."""
    directory = Path(directory)
    if not os.path.isdir(directory):          # False, never an error, for any name
        return []
    found = [p for p in directory.iterdir() if NAME.match(p.name) and p.is_file()]
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))


def latest(path: str | Path, field: str = "resume") -> Path:
    """A checkpoint file itself, or the newest one in a directory."""
    if not str(path):
        raise SpecError(field, "is empty; give a checkpoint file or a directory of them")
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SpecError(field, f"{path}: no such file or directory") from None
    except (OSError, ValueError) as e:
        raise SpecError(field, f"{str(path):.200}: {getattr(e, 'strerror', None) or e}") from None
    if stat.S_ISREG(st.st_mode):
        return path
    if not stat.S_ISDIR(st.st_mode):
        raise SpecError(field, f"{path}: not a checkpoint file or a directory of them")
    found = list_checkpoints(path)
    if not found:
        raise SpecError(field, f"{path}: no checkpoint (step_NNNNNNNN.npz) there")
    return found[-1]


# ---------------------------------------------------------------------- reading
@dataclasses.dataclass
class Checkpoint:
    """A checkpoint's checked metadata, and its arrays once read (``read_arrays``)."""

    path: Path
    step: int
    model: ModelSpec
    settings: dict
    determinism: dict | None = None        # None: not recorded
    params: np.ndarray | None = None
    m: np.ndarray | None = None
    v: np.ndarray | None = None
    meta_digest: str = ""


class _Reader:
    """The zip of one checkpoint; every failure to read it is a SpecError naming it."""

    def __init__(self, path: Path, field: str):
        self.path, self.field = path, field

    def fail(self, what: str) -> SpecError:
        return SpecError(self.field, f"{self.path}: {what}")

    def __enter__(self):
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
            raise self.fail(f"not a checkpoint (unreadable as a zip of arrays: {e})") from None
        names = self.zip.namelist()
        missing = [n for n in MEMBERS if n not in names]
        if missing:
            self.zip.close()
            raise self.fail(f"not a fugakuperf checkpoint (missing "
                            f"{', '.join(n[:-4] for n in missing)})")
        extra = sorted(set(names) - set(MEMBERS))
        if extra or len(names) != len(MEMBERS):
            self.zip.close()
            raise self.fail(f"not a fugakuperf checkpoint (unexpected member "
                            f"{(extra or names)[0][:80]!r})")
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def _io(self, name: str, action):
        try:
            with self.zip.open(name) as f:
                return action(f)
        except SpecError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
                NotImplementedError, RuntimeError, SyntaxError) as e:
            # RuntimeError: an encrypted member; SyntaxError: a header numpy cannot parse;
            # and zipfile's error for a member compressed by a method it does not read
            raise self.fail(f"damaged checkpoint ({name[:-4]}: {type(e).__name__}: {e})") \
                from None

    def header(self, name: str) -> tuple[tuple, np.dtype]:
        """(shape, dtype) of a member, from its .npy header alone."""
        def read(f):
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"npy format version {version}")
            if fortran and len(shape) > 1:
                raise ValueError("Fortran-ordered array")
            return shape, dtype
        return self._io(name, read)

    def read_into(self, name: str, out: np.ndarray) -> None:
        """The data of a member whose header matched ``out``, into ``out``."""
        def read(f):
            version = np.lib.format.read_magic(f)
            (np.lib.format.read_array_header_1_0 if version == (1, 0)
             else np.lib.format.read_array_header_2_0)(f)
            view = memoryview(out.reshape(-1)).cast("B")
            done, step = 0, CHUNK * out.itemsize
            while done < len(view):
                n = f.readinto(view[done:done + step])
                if not n:
                    raise EOFError(f"{done:,} of {len(view):,} bytes")
                done += n
        self._io(name, read)

    def meta_bytes(self) -> bytes:
        shape, dtype = self.header("meta.npy")
        if dtype != np.uint8 or len(shape) != 1:
            raise self.fail(f"damaged checkpoint (meta is {dtype} {shape}, not UTF-8 bytes)")
        if shape[0] > MAX_META_BYTES:
            raise self.fail(f"damaged checkpoint (meta of {shape[0]:,} bytes; at most "
                            f"{MAX_META_BYTES:,})")
        out = np.empty(shape, dtype=np.uint8)
        self.read_into("meta.npy", out)
        return out.tobytes()


def read_header(path: str | Path, field: str = "resume") -> Checkpoint:
    """A checkpoint's metadata, every field checked (its arrays are not read)."""
    path = latest(path, field)
    with _Reader(path, field) as r:
        raw = r.meta_bytes()
    c = _check_meta(raw, path, field)
    c.meta_digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
    return c


def read_arrays(c: Checkpoint, out: dict[str, np.ndarray], field: str = "resume") -> None:
    """Read the arrays named in ``out`` (flat float32 buffers of the model's size) into
    them, each checked (header, values). On failure the buffers hold partial data."""
    size = c.model.params
    with _Reader(c.path, field) as r:
        raw = r.meta_bytes()
        if hashlib.blake2b(raw, digest_size=16).hexdigest() != c.meta_digest:
            raise r.fail("changed while it was being read")
        for name, buffer in out.items():
            if buffer.shape != (size,) or buffer.dtype != np.float32:
                raise ValueError(f"buffer for {name} must be float32 ({size},)")
            shape, dtype = r.header(f"{name}.npy")
            if shape != (size,) or dtype.str != buffer.dtype.str:
                raise r.fail(f"array {name} is {dtype} {shape}; the model "
                             f"{c.model.name} ({c.model.layers} layers, hidden "
                             f"{c.model.hidden}) needs float32 ({size},)")
            r.read_into(f"{name}.npy", buffer)
            bad = _first_bad(buffer, non_negative=name == "v")
            if bad is not None:
                raise r.fail(f"array {name}[{bad}] is {buffer[bad]} (must be finite"
                             f"{' and >= 0' if name == 'v' else ''})")
        for name, buffer in out.items():
            setattr(c, name, buffer)


def load(path: str | Path, field: str = "resume", arrays=ARRAYS) -> Checkpoint:
    """Read and check a checkpoint (the named arrays into new buffers); a damaged or
    foreign file is refused by name."""
    c = read_header(path, field)
    need = Need({name: 4 * c.model.params for name in arrays})
    check_fits(need, f"reading {c.path}", field=field)
    read_arrays(c, {name: np.empty(c.model.params, dtype=np.float32) for name in arrays}, field)
    return c


def _first_bad(a: np.ndarray, non_negative: bool) -> int | None:
    """Index of the first value that is not finite (or negative), chunk by chunk."""
    for start in range(0, a.size, CHUNK):
        part = a[start:start + CHUNK]
        ok = np.isfinite(part)
        if non_negative:
            ok &= part >= 0
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


# ---------------------------------------------------------------------- metadata
def _check_meta(raw: bytes, path: Path, field: str) -> Checkpoint:
    where = f"{path}: metadata"
    try:
        meta = parse_json(decode_text(raw, "meta"), "meta")
    except SpecError as e:
        raise SpecError(field, f"{where} {e.message}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SpecError(field, f"{path}: not a fugakuperf checkpoint")
    version = meta.get("version")
    if isinstance(version, bool) or version != VERSION:
        raise SpecError(field, f"{path}: checkpoint format version {str(version)[:40]}; this "
                               f"fugakuperf reads version {VERSION}")
    try:
        check_keys("meta", meta, META_KEYS)
        require("meta", meta, ("step", "model", "settings"))
        step = check_int("step", meta["step"], lo=0, hi=MAX_STEP)
        model = _check_model(meta["model"])
        settings = _check_settings(meta["settings"])
        env = meta.get("determinism")
        env = None if env is None else determinism.check(env, "determinism")
    except SpecError as e:
        raise SpecError(field, f"{where} {e.field.removeprefix('meta.')}: {e.message}") from None
    named = NAME.match(path.name)
    if named and int(named.group(1)) != step:
        raise SpecError(field, f"{where} step is {step}, but the file is named for step "
                               f"{int(named.group(1))}")
    return Checkpoint(path, step, model, settings, env)


def _check_model(data) -> ModelSpec:
    check_keys("model", data, MODEL_FIELDS)
    require("model", data, MODEL_REQUIRED)
    for key in ("name", "source"):
        if key in data:
            check_str(f"model.{key}", data[key], max_len=1000)
    try:
        model = ModelSpec(**data)
        check_trainable(model)
    except SpecError as e:
        raise e.within("model") from None
    return model


def _check_settings(data) -> dict:
    check_keys("settings", data, SETTINGS_KEYS)
    require("settings", data, SETTINGS_KEYS)
    s = {}
    for key in ("global_batch", "micro_batch", "world", "decay_steps"):
        s[key] = check_int(f"settings.{key}", data[key])
    s["seed"] = check_int("settings.seed", data["seed"], lo=0)
    s["val_fraction"] = check_float("settings.val_fraction", data["val_fraction"], lo=0.0,
                                    lo_open=False, hi=1.0, hi_open=True)
    s["data"] = check_str("settings.data", data["data"], max_len=100)
    if not FINGERPRINT.match(s["data"]):
        raise SpecError("settings.data", f"must be a data fingerprint (tokens:hash), got "
                                         f"{s['data']!r}")
    s["optimizer"] = _check_optimizer(data["optimizer"])
    return s


def _check_optimizer(data) -> dict:
    from .optim import AdamWConfig
    where = "settings.optimizer"
    check_keys(where, data, OPTIMIZER_KEYS)
    require(where, data, OPTIMIZER_KEYS)
    o = {}
    o["lr"] = check_float(f"{where}.lr", data["lr"])
    o["eps"] = check_float(f"{where}.eps", data["eps"])
    for key in ("beta1", "beta2"):
        o[key] = check_float(f"{where}.{key}", data[key], lo=0.0, lo_open=False, hi=1.0,
                             hi_open=True)
    for key in ("weight_decay", "clip"):
        o[key] = check_float(f"{where}.{key}", data[key], lo=0.0, lo_open=False)
    o["min_lr"] = None if data["min_lr"] is None else \
        check_float(f"{where}.min_lr", data["min_lr"], lo=0.0, lo_open=False)
    o["warmup"] = check_int(f"{where}.warmup", data["warmup"], lo=0)
    o["decay_steps"] = None if data["decay_steps"] is None else \
        check_int(f"{where}.decay_steps", data["decay_steps"])
    try:
        AdamWConfig(**o)
    except SpecError as e:
        raise e.within(where) from None
    return {k: o[k] for k in OPTIMIZER_KEYS}
