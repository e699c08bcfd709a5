"""One run at a time per output folder.

Each stage (``simulate``, ``train``, ``sample``, ``run``) holds an exclusive lock on
``<out>/.invdiff.lock`` while it works. A second run on the same folder is refused with an
error naming the folder and the holder's pid, instead of both writing ``last.pt`` in turn.

The lock is an OS file lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows), which the
kernel releases when its process ends, however it ends: the lock of a run killed with ``-9``
is free at once and the next run takes it over (the file's pid text is only a label for the
error message). Nested stages in one process (``run`` calls ``simulate``, ``train``,
``sample``) share the lock, and so do the processes of one distributed job (``torchrun``:
rank 0 holds it, the other ranks take part in its run). While it holds the lock, a stage
removes the temporary files that atomic writes of a killed run left behind
(:func:`invdiff.io.remove_stale_temporaries`: invdiff's own, whose writer is dead).

The lock file is opened without following a symbolic link (``O_NOFOLLOW``) and must be a plain
file with one name: a link planted in a shared output folder is refused, never written through.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from invdiff.errors import FolderInUseError, InvdiffError
from invdiff.io import remove_stale_temporaries

LOCK_NAME = ".invdiff.lock"
T = TypeVar("T")
_held: dict[Path, int] = {}  # folder -> nesting depth, for the locks this process holds


@contextlib.contextmanager
def stage_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) for the block; yields the folder.

    Raises :class:`FolderInUseError` when another process holds it, and
    :class:`~invdiff.errors.InvdiffError` when ``<folder>/.invdiff.lock`` is a symbolic link,
    a hard link or not a plain file."""
    folder = Path(folder).resolve()
    if _follower_rank():  # under torchrun, rank 0 holds the lock for the whole job
        yield folder
        return
    if folder in _held:
        _held[folder] += 1
        try:
            yield folder
        finally:
            _held[folder] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = _open_lock_file(folder / LOCK_NAME)
    try:
        if not _try_lock(fd):
            raise FolderInUseError(
                f"output folder {folder} is in use by another invdiff run ({_holder(fd)}); wait "
                f"for it to finish, or give this run another folder (--out)"
            )
        _write_label(fd)
        remove_stale_temporaries(folder)
        _held[folder] = 1
        try:
            yield folder
        finally:
            del _held[folder]
            os.ftruncate(fd, 0)  # an empty label: nobody holds it
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_lock_file(path: Path) -> int:
    """A descriptor of the lock file ``path`` (created if missing), refusing a symbolic link
    (``O_NOFOLLOW``), anything but a plain file, and a file with other names (hard links): its
    label is written into it, which must never land in a file the link points at."""
    fix = (f"remove it (`rm {path}`; invdiff makes a new lock file) and check who put it there, "
           f"or give this run another folder (--out)")
    if path.is_symlink():  # also where O_NOFOLLOW does not exist (Windows)
        raise InvdiffError(f"{path} is a symbolic link (to {os.readlink(path)}), not "
                           f"invdiff's lock file; refusing to write through it: {fix}")
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link planted between the check and the open
            raise InvdiffError(f"{path} is a symbolic link, not invdiff's lock file; "
                               f"refusing to write through it: {fix}") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        what = "not a plain file" if not stat.S_ISREG(st.st_mode) else (
            f"a file with {st.st_nlink} names (hard links)")
        raise InvdiffError(f"{path} is {what}, not invdiff's lock file; refusing to write "
                           f"to it: {fix}")
    return fd


def _follower_rank() -> bool:
    """True in a distributed job's processes other than rank 0 (``torchrun`` sets ``RANK``
    and ``WORLD_SIZE``): they share rank 0's run, and must not be refused its folder."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ["RANK"]) > 0
    except (KeyError, ValueError):
        return False


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _write_label(fd: int) -> None:
    label = {"pid": os.getpid(), "host": socket.gethostname(),
             "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, 0)
    os.write(fd, json.dumps(label).encode())


def _holder(fd: int) -> str:
    """``pid N on HOST since TIME`` from the lock file's label (best effort)."""
    try:
        os.lseek(fd, 0, 0)
        label = json.loads(os.read(fd, 4096) or b"{}")
        return (f"pid {label['pid']} on {label.get('host', '?')}, started "
                f"{label.get('started', '?')}")
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


def locked(stage: Callable[..., T]) -> Callable[..., T]:
    """Decorate a pipeline stage ``stage(cfg, ...)`` to run under ``cfg.out_dir``'s lock."""

    @functools.wraps(stage)
    def run(cfg: Any, *args: Any, **kwargs: Any) -> T:
        with stage_lock(cfg.out_dir):
            return stage(cfg, *args, **kwargs)

    return run
