"""Content hashes that identify encoder weights and input data for cache keys."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (memoized per path, size and mtime)."""
    st = Path(path).stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


def directory_digest(path: Path, suffixes: tuple[str, ...]) -> str:
    """sha256 over the names and contents of the files in ``path`` with the given suffixes."""
    h = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix in suffixes):
        h.update(file.relative_to(path).as_posix().encode())
        h.update(file_digest(file).encode())
    return h.hexdigest()
