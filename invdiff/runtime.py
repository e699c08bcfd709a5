"""Runtime switches shared by tests, benchmarks and long jobs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads and at most ``n`` threads in the native
    BLAS/OpenMP pools (numpy/scipy's OpenBLAS, MKL; via threadpoolctl), then restore both.
    None leaves everything as is.

    Small tensors gain nothing from a second thread, and on a shared, loaded CPU the threads'
    barriers made small jobs 10-100x slower (measured in this project's tests and benchmarks).
    BLAS counts as much as torch: an MCMC reference whose FEM solves (LAPACK dpbsv) ran
    under ``torch_threads(1)`` with OpenBLAS's default two threads beside another job spent a
    second core spinning and ran several times slower than with one.
    """
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


_controller = None  # threadpoolctl's view of the loaded native libraries, built once


def native_threads(n: int) -> contextlib.AbstractContextManager:
    """A context that runs native BLAS/LAPACK/OpenMP code (numpy/scipy's OpenBLAS, MKL) on at
    most ``n`` threads and restores the previous limits on exit.

    Cheap enough to wrap each solve (the loaded libraries are looked up once, not on every
    call as ``threadpoolctl.threadpool_limits`` does). Why: OpenBLAS threads spin while they
    wait, so a small factorisation beside one busy process on two cores ran 4-5x slower with
    its default two threads than with one; parallelism over fields comes from processes."""
    global _controller
    from threadpoolctl import ThreadpoolController

    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=n)


def die_with_parent(parent_pid: int) -> None:
    """End this process when its parent ends, however it ends (Linux; elsewhere a no-op).

    For worker processes: a pool parent killed with ``-9`` cannot shut its workers down, and
    they would wait forever on their pipe, holding memory (and the output folder's lock,
    whose descriptor they inherit). ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` asks the kernel to
    kill this process when the parent dies; a parent that died before the call is caught by
    the pid check after it."""
    import ctypes
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl (e.g. another libc): best effort
        return
    if os.getppid() != parent_pid:
        os._exit(1)
