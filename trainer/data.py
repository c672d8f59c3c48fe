"""Training data: UTF-8 text through a byte-level tokenizer, or pre-tokenized shards.

* Text files: every UTF-8 byte is a token (vocabulary 256), so any language,
  Japanese included, trains with no tokenizer download. Bytes that are not UTF-8 are
  refused (a binary file is not a corpus).
* ``.bin`` shards in llm.c's layout: a header of 256 int32 (magic, version, token
  count) followed by the tokens; magic 20240520 / version 1 holds uint16 tokens
  (GPT-2 vocabularies), magic 20240801 / version 7 holds uint32 tokens (larger
  vocabularies, as llm.c's Llama 3 shards). A shard is recognised by its magic
  (neither magic's first byte can start UTF-8 text), so its name does not matter, and
  a file named ``.bin`` or ``.BIN`` without a shard's header is refused.

Sampling is deterministic: the positions of a step's whole global batch come from
one generator seeded by (seed, step), and rank r of w takes its contiguous share,
so w ranks together see exactly what one rank would.
"""

from __future__ import annotations

import codecs
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fpcore.atomic import atomic_write
from fpcore.errors import SpecError

from .memory import Need, check_fits

BYTE_VOCAB = 256
HEADER_INTS = 256
FORMATS = {(20240520, 1): np.uint16, (20240801, 7): np.uint32}
MAGICS = {magic for magic, _ in FORMATS}
UTF8_CHUNK = 1 << 24


def encode_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)


def decode_bytes(tokens) -> str:
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


def _regular_file(path: Path) -> int:
    """The size of ``path``, which must be a regular file (not a directory, a device or
    a pipe, which reading would hang on or misread)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SpecError("data", f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise SpecError("data", f"{str(path):.200}: {getattr(e, 'strerror', None) or e}") \
            from None
    if stat.S_ISDIR(st.st_mode):
        raise SpecError("data", f"{path}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise SpecError("data", f"{path}: not a regular file (a device, pipe or socket)")
    return st.st_size


def is_shard(path: str | Path) -> bool:
    """Whether ``path`` starts with an llm.c shard's magic (or is named ``.bin``)."""
    path = Path(path)
    if path.suffix.lower() == ".bin":
        return True
    try:
        if not path.is_file():
            return False
        with path.open("rb") as f:
            raw = f.read(4)
    except (OSError, ValueError):
        return False
    return len(raw) == 4 and int(np.frombuffer(raw, dtype=np.int32)[0]) in MAGICS


def load_tokens(path: str | Path) -> np.ndarray:
    """The token ids of an llm.c token shard (recognised by its header, whatever the file
    is called) or of a UTF-8 text file (its bytes). A ``.bin`` file (in any case) must be
    a shard: one without a valid header is refused, not read as text."""
    path = Path(path)
    size = _regular_file(path)
    try:
        with path.open("rb") as f:
            raw = f.read(HEADER_INTS * 4)
            magic = int(np.frombuffer(raw[:4], dtype=np.int32)[0]) if len(raw) >= 4 else None
            if magic in MAGICS or path.suffix.lower() == ".bin":
                return _read_shard(path, f, raw, size)
            check_fits(Need({"text": size, "tokens": 2 * size, "fingerprint": 4 * size}),
                       f"reading {path}", field="data")
            data = raw + f.read()
    except OSError as e:
        raise SpecError("data", f"{path}: cannot be read: {e.strerror or e}") from None
    _check_utf8(data, path)
    return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)


def _read_shard(path: Path, f, raw: bytes, size: int) -> np.ndarray:
    if len(raw) < HEADER_INTS * 4:
        raise SpecError("data", f"{path}: shorter than the {HEADER_INTS * 4}-byte header of an "
                                f"llm.c token shard")
    header = np.frombuffer(raw, dtype=np.int32)
    fmt = FORMATS.get((int(header[0]), int(header[1])))
    if fmt is None:
        known = ", ".join(f"magic {m} version {v}" for m, v in FORMATS)
        raise SpecError("data", f"{path}: not an llm.c token shard (magic {header[0]}, "
                                f"version {header[1]}); known: {known}")
    count = int(header[2])
    width = np.dtype(fmt).itemsize
    body = size - len(raw)
    if body % width:
        raise SpecError("data", f"{path}: {body} bytes of tokens is not a whole number "
                                f"of {width}-byte tokens")
    if body // width != count:
        raise SpecError("data", f"{path}: header says {count:,} tokens, file holds "
                                f"{body // width:,}")
    check_fits(Need({"tokens": body, "fingerprint": 4 * count}), f"reading {path}",
               field="data")
    tokens = np.frombuffer(f.read(), dtype=fmt)
    if len(tokens) != count:
        raise SpecError("data", f"{path}: header says {count:,} tokens, file holds "
                                f"{len(tokens):,}")
    return tokens


def _check_utf8(data: bytes, path: Path) -> None:
    """Text must be UTF-8 (a binary file is not a corpus); checked piece by piece."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    fed = 0                                   # bytes given to the decoder so far
    try:
        for start in range(0, len(data) + 1, UTF8_CHUNK):
            piece = view[start:start + UTF8_CHUNK]
            pending = len(decoder.getstate()[0])   # bytes of a character cut by the last piece
            decoder.decode(piece, final=start + UTF8_CHUNK >= len(data))
            fed += len(piece)
    except UnicodeDecodeError as e:
        at = fed - pending + e.start
        raise SpecError("data", f"{path}: neither an llm.c token shard nor UTF-8 text "
                                f"(byte {at:,} is {data[at:at + 1]!r})") from None


def check_length(tokens: np.ndarray, seq: int, path) -> None:
    """Training samples windows of seq + 1 tokens at more than one start."""
    if len(tokens) < seq + 2:
        raise SpecError("data", f"{path} holds {len(tokens):,} tokens; training on sequences "
                                f"of {seq} needs at least seq + 2 = {seq + 2:,}")


def write_shard(path: str | Path, tokens, dtype=np.uint16) -> None:
    """Write tokens as an llm.c shard (for tests and for users converting corpora)."""
    (magic, version), = [k for k, v in FORMATS.items() if v == np.dtype(dtype).type]
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = (magic, version, len(tokens))
    atomic_write(path, header.tobytes() + np.asarray(tokens, dtype=dtype).tobytes())


@dataclass(frozen=True)
class Sampler:
    """Deterministic (x, y) micro-batches of ``seq`` tokens for one rank."""

    tokens: np.ndarray
    seq: int
    micro_batch: int
    global_batch: int
    seed: int = 0
    rank: int = 0
    world: int = 1

    def __post_init__(self):
        if len(self.tokens) < self.seq + 2:
            raise SpecError("data", f"needs at least seq + 2 = {self.seq + 2} tokens; "
                                    f"has {len(self.tokens):,}")
        if self.global_batch % (self.world * self.micro_batch):
            raise SpecError("global_batch", f"must be divisible by ranks x micro_batch = "
                                            f"{self.world} x {self.micro_batch}")
        if not 0 <= self.rank < self.world:
            raise SpecError("rank", f"must be in [0, {self.world}); got {self.rank}")

    @property
    def micro_batches(self) -> int:
        return self.global_batch // (self.world * self.micro_batch)

    def positions(self, step: int) -> np.ndarray:
        """Start positions of the whole global batch of ``step`` (every rank agrees)."""
        rng = np.random.default_rng([self.seed, step])
        return rng.integers(0, len(self.tokens) - self.seq - 1, size=self.global_batch)

    def batch(self, step: int, micro: int, positions: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """(x, y), each (micro_batch, seq) int32: y is x shifted by one token.
        ``positions``: ``self.positions(step)``, when the caller already has them."""
        share = self.global_batch // self.world
        start = self.rank * share + micro * self.micro_batch
        if positions is None:
            positions = self.positions(step)
        starts = positions[start:start + self.micro_batch]
        idx = starts[:, None] + np.arange(self.seq + 1)[None, :]
        window = self.tokens[idx].astype(np.int32)
        return window[:, :-1], window[:, 1:]


def check_vocab(tokens: np.ndarray, vocab: int, path: str = "data") -> None:
    top = int(tokens.max(initial=0))
    if top >= vocab:
        raise SpecError("vocab", f"{path} holds token id {top}, but the model's vocabulary is "
                                 f"{vocab} (byte-level text needs --vocab 256 or more)")
