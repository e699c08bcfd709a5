"""Several processes working as one: the ``torch.distributed`` process group under ``torchrun``.

``torchrun --nproc_per_node K ...`` (or ``python -m torch.distributed.run``) starts K copies of
a command and gives each the environment variables ``RANK`` (0..K-1 over all nodes),
``LOCAL_RANK`` (0..k-1 on its node), ``WORLD_SIZE`` (K over all nodes) and the rendezvous
address. :func:`context` reads them; outside torchrun it describes a single process (rank 0 of
1) and nothing here touches ``torch.distributed``.

:func:`setup` joins the process group (``nccl`` on CUDA, ``gloo`` on CPU) with a timeout, so a
rank that dies does not leave the others waiting forever in a collective:
``INVDIFF_DIST_TIMEOUT`` seconds (default 600). :func:`check_same` refuses to start when the
ranks were given different settings (a sha256 digest of the config is compared across ranks).

The trainer (:mod:`invdiff.training.trainer`) and the pipeline (:mod:`invdiff.experiment.run`)
call :func:`setup` themselves; a script that drives them under torchrun needs nothing else, and may
call :func:`shutdown` at the end (the command line does).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from invdiff.errors import ConfigError

__all__ = ["DistContext", "context", "setup", "shutdown", "check_same", "shard",
           "all_gather", "barrier", "digest", "wait_for_files"]

#: Seconds a collective may wait for the other ranks before failing (a crashed rank).
TIMEOUT_ENV = "INVDIFF_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` in ``0..world_size-1`` over all nodes, and
    ``local_rank`` on its node (the GPU index it should use)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True when there are other ranks to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The rank that writes files (checkpoints, history, metrics, figures)."""
        return self.rank == 0


def context() -> DistContext:
    """This process's rank and world size: from the joined process group when there is one,
    else from torchrun's environment variables, else a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return DistContext(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", 0)))
    try:
        ws = int(os.environ.get("WORLD_SIZE", 1))
        rank = int(os.environ.get("RANK", 0))
        local = int(os.environ.get("LOCAL_RANK", 0))
    except ValueError as exc:
        raise ConfigError(
            f"WORLD_SIZE / RANK / LOCAL_RANK must be integers (as torchrun sets them): {exc}"
        ) from None
    if ws < 1 or not 0 <= rank < ws:
        raise ConfigError(f"RANK {rank} does not lie in 0..WORLD_SIZE-1 = 0..{ws - 1}")
    return DistContext(rank, ws, local)


def timeout() -> timedelta:
    """The process-group timeout (``INVDIFF_DIST_TIMEOUT`` seconds, default 600)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if seconds <= 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be positive, got {seconds}")
    return timedelta(seconds=seconds)


def setup(device: torch.device | str = "cpu") -> DistContext:
    """Join the process group when started by torchrun with several ranks (idempotent).

    ``device``: where this rank computes; CUDA ranks use ``nccl`` (and select the GPU
    ``LOCAL_RANK``), CPU ranks ``gloo``. Returns :func:`context`; a single process joins nothing.
    """
    ctx = context()
    if not ctx.active or torch.distributed.is_initialized():
        return ctx
    if not torch.distributed.is_available():
        raise ConfigError("this torch build has no torch.distributed; run a single process")
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        index = device.index if device.index is not None else ctx.local_rank
        torch.cuda.set_device(index)
        kwargs["device_id"] = torch.device("cuda", index)
    try:
        torch.distributed.init_process_group(backend, timeout=timeout(), **kwargs)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"rank {ctx.rank} of {ctx.world_size} could not join the process group "
            f"({backend}): {exc}. Start all ranks with the same torchrun command"
        ) from None
    return context()


def shutdown() -> None:
    """Leave the process group (no-op without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def device_for(device: torch.device, ctx: DistContext) -> torch.device:
    """A bare ``cuda`` means this rank's own GPU (``cuda:LOCAL_RANK``) when ranks run."""
    if ctx.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def digest(obj: Any) -> str:
    """sha256 of a JSON-able object (keys sorted): equal settings give equal digests."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for a single process."""
    ctx = context()
    if not ctx.active:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if context().active:
        torch.distributed.barrier()


def check_same(obj: Any, what: str = "config") -> None:
    """Refuse to go on when the ranks hold different ``obj`` (compared by :func:`digest`)."""
    if not context().active:
        return
    digests = all_gather(digest(obj))
    if len(set(digests)) > 1:
        groups: dict[str, list[int]] = {}
        for rank, d in enumerate(digests):
            groups.setdefault(d, []).append(rank)
        detail = "; ".join(f"ranks {ranks}: {d[:12]}" for d, ranks in groups.items())
        raise ConfigError(
            f"the ranks were started with different {what}s (digests {detail}); start every "
            f"rank with the same config file and --set overrides"
        )


def shard(n: int, ctx: DistContext | None = None) -> range:
    """The items ``0..n-1`` this rank handles: ``rank, rank + W, rank + 2W, ...`` (round
    robin, so the ranks' loads differ by at most one item)."""
    ctx = ctx if ctx is not None else context()
    return range(ctx.rank, n, ctx.world_size)


def wait_for_files(*paths: Path, poll_s: float = 2.0) -> None:
    """Wait until rank 0 has written ``paths`` (atomically, so a file that exists is whole).

    Polls the file system instead of waiting in a collective, so a long simulation on rank 0
    is not cut short by the process-group timeout; if rank 0 fails, torchrun stops this rank.
    """
    while not all(Path(p).exists() for p in paths):
        time.sleep(poll_s)
