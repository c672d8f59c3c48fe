"""Training data: UTF-8 text through a byte-level tokenizer, or pre-tokenized shards.

* Text files: every UTF-8 byte is a token (vocabulary 256), so any language,
  Japanese included, trains with no tokenizer download.
* ``.bin`` shards in llm.c's layout: a header of 256 int32 (magic, version, token
  count) followed by the tokens; magic 20240520 / version 1 holds uint16 tokens
  (GPT-2 vocabularies), magic 20240801 / version 7 holds uint32 tokens (larger
  vocabularies, as llm.c's Llama 3 shards).

Sampling is deterministic: the positions of a step's whole global batch come from
one generator seeded by (seed, step), and rank r of w takes its contiguous share,
so w ranks together see exactly what one rank would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fpcore.atomic import atomic_write
from fpcore.errors import SpecError

BYTE_VOCAB = 256
HEADER_INTS = 256
FORMATS = {(20240520, 1): np.uint16, (20240801, 7): np.uint32}


def encode_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)


def decode_bytes(tokens) -> str:
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


def load_tokens(path: str | Path) -> np.ndarray:
    """The token ids of a text file (bytes) or of an llm.c ``.bin`` shard."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("data", f"{path}: no such file")
    if path.suffix != ".bin":
        return np.frombuffer(path.read_bytes(), dtype=np.uint8).astype(np.uint16)
    with path.open("rb") as f:
        raw = f.read(HEADER_INTS * 4)
        if len(raw) < HEADER_INTS * 4:
            raise SpecError("data", f"{path}: shorter than the {HEADER_INTS * 4}-byte header")
        header = np.frombuffer(raw, dtype=np.int32)
        fmt = FORMATS.get((int(header[0]), int(header[1])))
        if fmt is None:
            known = ", ".join(f"magic {m} version {v}" for m, v in FORMATS)
            raise SpecError("data", f"{path}: not an llm.c token shard (magic {header[0]}, "
                                    f"version {header[1]}); known: {known}")
        count = int(header[2])
        body = f.read()
        width = np.dtype(fmt).itemsize
        if len(body) % width:
            raise SpecError("data", f"{path}: {len(body)} bytes of tokens is not a whole number "
                                    f"of {width}-byte tokens")
        tokens = np.frombuffer(body, dtype=fmt)
    if len(tokens) != count:
        raise SpecError("data", f"{path}: header says {count:,} tokens, file holds {len(tokens):,}")
    return tokens


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

    def batch(self, step: int, micro: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y), each (micro_batch, seq) int32: y is x shifted by one token."""
        share = self.global_batch // self.world
        start = self.rank * share + micro * self.micro_batch
        starts = self.positions(step)[start:start + self.micro_batch]
        idx = starts[:, None] + np.arange(self.seq + 1)[None, :]
        window = self.tokens[idx].astype(np.int32)
        return window[:, :-1], window[:, 1:]


def check_vocab(tokens: np.ndarray, vocab: int, path: str = "data") -> None:
    top = int(tokens.max(initial=0))
    if top >= vocab:
        raise SpecError("vocab", f"{path} holds token id {top}, but the model's vocabulary is "
                                 f"{vocab} (byte-level text needs --vocab 256 or more)")
