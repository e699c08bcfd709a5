"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A crash mid-write leaves the previous file (or none), never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would give
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) that :func:`atomic_open` leaves when its
    process is killed mid-write, anywhere under ``folder``; returns them.

    Only safe while no other process writes there: call it holding the folder's lock
    (:func:`invdiff.experiment.lock.stage_lock` does)."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        if tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "wb") -> Path:
    """Call ``write(fh)`` on a temporary file and move it to ``path`` atomically."""
    with atomic_open(path, mode) as fh:
        write(fh)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def cached_arrays(path: str | os.PathLike, compute: Callable[[], dict]) -> dict:
    """``compute()``'s dict of numpy arrays, read back from the ``.npz`` at ``path`` if an
    earlier run wrote it, else computed and written atomically (expensive references, e.g. an
    MCMC chain, survive an interrupted or repeated run). Arrays only: no pickles. An unreadable
    cache file (e.g. damaged by hand) is reported in a warning and computed again."""
    import warnings
    import zipfile

    import numpy as np

    path = Path(path)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            warnings.warn(f"cached arrays {path} are unreadable ({err}); computing them again",
                          stacklevel=2)
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return arrays


def content_key(*parts: Any, length: int = 12) -> str:
    """A short hex digest of ``parts`` for cache file names: arrays and tensors by their bytes,
    dtype and shape, anything else by its sorted JSON (e.g. a config's ``model_dump``). Equal
    inputs give equal keys across runs; a changed measurement or problem gives a new key."""
    import hashlib
    import json

    import numpy as np

    h = hashlib.sha1()
    for p in parts:
        if hasattr(p, "detach"):  # a torch tensor, without importing torch here
            p = p.detach().cpu().numpy()
        if isinstance(p, np.ndarray):
            h.update(f"{p.dtype}{p.shape}".encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:length]
