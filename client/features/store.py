"""Embeddings of single inputs, content-addressed: every note and film is encoded once per
encoder, whatever site, partition or profile it later lands in.

A store holds one encoder's vectors under ``cache_dir/embeddings/<encoder digest>/`` as shards
(``keys``: input digests, ``vectors``), each written atomically under a unique name, so several
processes can add to one store and an interrupted write leaves nothing that looks valid. An input
is keyed by what determines its embedding: a note by the sha256 of its text, a film by its path,
size and modification time (hashing every byte of a 377k-film archive would cost more than it
saves). The site cache (client/features/cache.py) is assembled from these vectors, so a
re-partition of an encoded cohort encodes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
SHARD_SUFFIX = ".npz"


def note_key(text: str) -> str:
    return hashlib.sha256(str(text).encode()).hexdigest()


def film_key(path: str) -> str:
    st = Path(path).stat()
    return hashlib.sha256(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()


class EmbeddingStore:
    """One encoder's embeddings of single inputs (see the module docstring)."""

    def __init__(self, cache_dir: Path, encoder_identity: str) -> None:
        digest = hashlib.sha256(encoder_identity.encode()).hexdigest()[:24]
        self.root = Path(cache_dir) / "embeddings" / digest
        self.identity = encoder_identity
        self._rows: dict[str, np.ndarray] = {}
        self._loaded: set[str] = set()

    def _read_new_shards(self) -> None:
        """Read the shards not read yet (another process may have added some)."""
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.glob(f"*{SHARD_SUFFIX}")):
            if shard.name in self._loaded:
                continue
            with np.load(shard) as data:
                self._rows.update(zip(data["keys"].tolist(), data["vectors"], strict=True))
            self._loaded.add(shard.name)

    def missing(self, keys: list[str]) -> list[int]:
        """Positions of the keys with no stored vector."""
        self._read_new_shards()
        return [i for i, key in enumerate(keys) if key not in self._rows]

    def add(self, keys: list[str], vectors: np.ndarray) -> None:
        """Store new vectors as one shard (atomic rename; a unique name per writer)."""
        if not keys:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "encoder.txt").write_text(self.identity + "\n")
        fd, tmp = tempfile.mkstemp(prefix=".writing-", suffix=SHARD_SUFFIX, dir=self.root)
        os.close(fd)
        try:
            np.savez(tmp, keys=np.asarray(keys), vectors=vectors.astype(np.float32))
            name = f"{uuid.uuid4().hex}{SHARD_SUFFIX}"
            os.replace(tmp, self.root / name)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._rows.update(zip(keys, vectors.astype(np.float32), strict=True))
        self._loaded.add(name)

    def dim(self) -> int | None:
        self._read_new_shards()
        return len(next(iter(self._rows.values()))) if self._rows else None

    def vectors(self, keys: list[str]) -> np.ndarray:
        self._read_new_shards()
        return np.stack([self._rows[key] for key in keys]) if keys else np.zeros((0, 0), np.float32)


def embed(store: EmbeddingStore, keys: list[str], items: list[str],
          encode: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, int]:
    """The vectors of ``items`` (keyed by ``keys``), encoding only those the store lacks with
    ``encode``; returns them and how many were encoded. Duplicate inputs are encoded once."""
    todo = store.missing(keys)
    fresh: dict[str, str] = {}
    for i in todo:
        fresh.setdefault(keys[i], items[i])
    if fresh:
        store.add(list(fresh), encode(list(fresh.values())))
    return store.vectors(keys), len(fresh)
