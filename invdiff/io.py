"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A crash mid-write leaves the previous file (or none), never a truncated one.

The temporary file of ``NAME`` is ``.NAME.invdiff-HOST-PID-RANDOM.tmp``: HOST (a short digest
of the host name) and PID name the writing process, so :func:`remove_stale_temporaries` removes
only invdiff's own temporaries whose writer is dead, never another tool's file, nor one that
another live invdiff process is writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

#: an atomic write's temporary file: .NAME.invdiff-HOST-PID-RANDOM.tmp
TEMP_PATTERN = re.compile(r"^\..+\.invdiff-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^.]*\.tmp$")
#: a temporary written on another host is removed only when untouched for this long (its
#: writer's liveness cannot be checked from here; writes take seconds, not a day)
FOREIGN_HOST_AGE_S = 24 * 3600.0
#: folders below the locked folder searched for stale temporaries (invdiff writes at most
#: a few levels deep: data/train.npz.parts/chunk_*.npz, references/noise-L/*.npz)
TEMP_SEARCH_DEPTH = 4


def host_tag() -> str:
    """8 hex digits naming this host in temporary file names."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def temp_prefix(name: str) -> str:
    """The start of the temporary file name of ``name`` written by this process."""
    return f".{name}.invdiff-{host_tag()}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
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
    """Delete the temporary files that :func:`atomic_open` leaves when its process is killed
    mid-write, in ``folder`` and up to :data:`TEMP_SEARCH_DEPTH` levels below it; returns them.

    Only invdiff's own temporaries (:data:`TEMP_PATTERN`) are touched, and only those whose
    writer is dead: written on this host by a process that no longer runs, or on another host
    and untouched for :data:`FOREIGN_HOST_AGE_S`. Other files (another tool's ``.x.tmp``), a
    live process's write in flight, symbolic links and anything reached through one (outside
    ``folder``) are left alone. Hidden folders are not searched."""
    root = Path(folder)
    removed = []
    here, now = host_tag(), time.time()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = [] if depth >= TEMP_SEARCH_DEPTH else [
            d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            m = TEMP_PATTERN.match(name)
            if m is None:
                continue
            tmp = Path(dirpath) / name
            try:
                st = tmp.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # a link or a device: never invdiff's
            if m["host"] == here:
                if pid_alive(int(m["pid"])):
                    continue
            elif now - st.st_mtime < FOREIGN_HOST_AGE_S:
                continue
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (True when it cannot be told)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill would end the process there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process: alive
        return True
    return True


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


CACHE_CHECKSUM = "sha256"  # the array of a cache file holding content_digest of the others


def cached_arrays(path: str | os.PathLike, compute: Callable[[], dict]) -> dict:
    """``compute()``'s dict of numpy arrays, read back from the ``.npz`` at ``path`` if an
    earlier run wrote it, else computed and written atomically (expensive references, e.g. an
    MCMC chain, survive an interrupted or repeated run). Arrays only: no pickles. The file
    carries the checksum of its arrays (array ``sha256``, :func:`invdiff.integrity.content_digest`);
    an unreadable or damaged cache file is reported in a warning and computed again, one
    without checksum (older invdiff) is used with a warning."""
    import warnings
    import zipfile

    import numpy as np

    from invdiff.integrity import content_digest

    path = Path(path)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            warnings.warn(f"cached arrays {path} are unreadable ({err}); computing them again",
                          stacklevel=2)
        else:
            stored = arrays.pop(CACHE_CHECKSUM, None)
            if stored is None:
                warnings.warn(f"cached arrays {path} carry no checksum (written by an older "
                              f"invdiff), so damage to them cannot be detected; delete the "
                              f"file to compute them again", stacklevel=2)
                return arrays
            if content_digest(arrays) == str(stored):
                return arrays
            warnings.warn(f"cached arrays {path} are damaged (they do not match the sha256 "
                          f"checksum written with them); computing them again", stacklevel=2)
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    if CACHE_CHECKSUM in arrays:
        raise ValueError(f"cached arrays may not be named {CACHE_CHECKSUM!r} (the checksum's "
                         f"name)")
    stored = {**arrays, CACHE_CHECKSUM: np.array(content_digest(arrays))}
    atomic_write(path, lambda fh: np.savez(fh, **stored))
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
