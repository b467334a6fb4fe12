"""Parsed or decoded data kept on disk, keyed by what it was made from, so the next run skips the work.

A key is a hash of the source files' resolved paths, sizes and modification times plus whatever else shaped the
result (an image size, a fitted preprocessing), so a changed source is read again and never served stale. Entries
are written atomically; a damaged one is rebuilt; a read-only location just means no cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_stamp(paths, extra: str = "") -> str:
    """A short hash naming these files as they are now, plus `extra`."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"|{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns}".encode())  # abspath: resolve() is 20x slower
    return h.hexdigest()[:16]


def cached_tensors(path: Path, make, mmap: bool = False, keep: int | None = None):
    """torch.load(path) if it holds a good entry, else make() saved there; mmap maps the file instead of reading it
    (pages come in as they are used, so a large entry opens at once and is shared with the page cache).

    keep: after writing, keep only the `keep` most recently used entries of the same prefix (`images-*.pt`).
    """
    import torch

    if path.is_file():
        try:
            value = torch.load(path, weights_only=True, mmap=mmap)
            os.utime(path)  # recently used: pruned last
            return value
        except Exception:  # a damaged or truncated entry is rebuilt, never trusted
            pass
    value = make()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(value, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError):  # read-only or full (torch says so as RuntimeError): no cache, no partial file
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return value
    if keep is not None:
        _prune(path, keep)
    return value


def _prune(path: Path, keep: int) -> None:
    prefix = path.name.split("-")[0]
    entries = sorted(path.parent.glob(f"{prefix}-*.pt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in entries[keep:]:
        try:
            old.unlink()
        except OSError:
            pass
