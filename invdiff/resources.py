"""Memory limits checked before work: the big steps estimate what they will hold and refuse
to start when the machine (or the GPU) has less available.

A huge ``data.n_train``, ``sampling.n_samples`` or ``training.batch_size`` would otherwise fail
late, with an out-of-memory error after minutes of simulation or a killed process. The
estimates count the arrays invdiff itself holds, in float32 (4 bytes a number):

- simulation: ``SIMULATION_FACTOR`` x n pairs x (x + y + y_clean) (the finished chunks and
  their concatenation into one dataset), plus the chunks the workers hold at once;
- training: the training pairs as loaded (x, y, y_clean) plus their normalised copies (x, y)
  on the training device;
- sampling: ``SAMPLING_FACTOR`` x M measurements x n samples x the numbers of one x (the
  chains, the gathered samples and the sorted copy the quantiles are read from).

They leave out the network's own memory (weights, activations of one batch) and the forward
model's working memory, so passing the check does not promise that a run fits; failing it
means it certainly does not. Available memory is ``MemAvailable`` of ``/proc/meminfo``
(capped by a cgroup v2 limit, as in a container or a SLURM job), else psutil's, else the
physical memory; on a CUDA device ``torch.cuda.mem_get_info``. Where none can be read the
check is skipped. ``INVDIFF_MEMORY_CHECK=0`` turns it off (for an estimate that is wrong on
your machine, e.g. with swap).

This module is on the lowest floor: the experiment-level checks (:func:`check_stage_memory`)
read the config and components of the experiment they are given by attribute.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from invdiff.errors import ConfigError

__all__ = ["available_memory", "check_memory", "format_bytes", "simulation_bytes",
           "training_bytes", "sampling_bytes", "check_stage_memory", "SWITCH"]

SWITCH = "INVDIFF_MEMORY_CHECK"  # "0": no memory checks
FLOAT_BYTES = 4
SIMULATION_FACTOR = 2  # the finished chunks, and their concatenation into one dataset
SAMPLING_FACTOR = 4  # chains + score/noise of one measurement, gathered samples, sorted copy


def format_bytes(n: float) -> str:
    """``"300 GiB"``, ``"1.5 MiB"``: two significant digits, binary units."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2g} {unit}" if n / size < 10 else f"{n / size:.0f} {unit}"
    return f"{int(n)} bytes"


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in shape))


def simulation_bytes(n: int, x_shape: Sequence[int], y_shape: Sequence[int],
                     in_flight: int = 0) -> int:
    """Bytes a simulation of ``n`` pairs holds: :data:`SIMULATION_FACTOR` copies of x, y and
    y_clean, plus ``in_flight`` pairs being simulated (workers x chunk size)."""
    pair = (_numel(x_shape) + 2 * _numel(y_shape)) * FLOAT_BYTES
    return (SIMULATION_FACTOR * n + in_flight) * pair


def training_bytes(n: int, x_shape: Sequence[int], y_shape: Sequence[int]) -> tuple[int, int]:
    """``(host, device)`` bytes of ``n`` training pairs: x, y, y_clean as loaded, and their
    normalised x, y on the training device."""
    dx, dy = _numel(x_shape), _numel(y_shape)
    return n * (dx + 2 * dy) * FLOAT_BYTES, n * (dx + dy) * FLOAT_BYTES


def sampling_bytes(m: int, n: int, x_shape: Sequence[int]) -> int:
    """Bytes of sampling ``n`` chains for each of ``m`` measurements of x shaped ``x_shape``."""
    return SAMPLING_FACTOR * m * n * _numel(x_shape) * FLOAT_BYTES


def available_memory(device: Any = None) -> int | None:
    """Bytes available for new arrays on ``device`` (None or ``"cpu"``: this machine's
    memory; ``"cuda"``, ``"cuda:1"``: that GPU's free memory); None when unknown."""
    kind = str(device) if device is not None else "cpu"
    if kind.startswith("cuda"):
        return _cuda_free(kind)
    if kind != "cpu":
        return None  # mps, xpu, ...: not known here
    return _host_available()


def _cuda_free(device: str) -> int | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    except Exception:  # noqa: BLE001 - no driver, bad index: not known
        return None


def _host_available() -> int | None:
    avail = _meminfo_available()
    if avail is None:
        try:
            import psutil

            avail = int(psutil.virtual_memory().available)
        except Exception:  # noqa: BLE001 - not installed, or unsupported platform
            avail = None
    if avail is None:
        try:
            avail = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            avail = None
    limit = _cgroup_room()
    if limit is not None:
        avail = limit if avail is None else min(avail, limit)
    return avail


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """``memory.max - memory.current`` of this process's cgroup (v2), if it has a limit."""
    try:
        rel = next(line.split(":", 2)[2] for line in
                   Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
        base = Path("/sys/fs/cgroup") / rel.strip().lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text()))
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def check_memory(need: int, *, setting: str, value: Any, what: str, fix: str = "",
                 device: Any = None) -> None:
    """Raise :class:`~invdiff.errors.ConfigError` when ``need`` bytes exceed the memory
    available on ``device``; the message names ``setting = value`` and what the bytes are for,
    and says to lower the setting (or ``fix``)."""
    if os.environ.get(SWITCH, "").strip() == "0" or need <= 0:
        return
    avail = available_memory(device)
    if avail is None or need <= avail:
        return
    where = "" if device is None or str(device) == "cpu" else f" on {device}"
    raise ConfigError(
        f"{setting} = {value} needs about {format_bytes(need)} for {what} but "
        f"{format_bytes(avail)} are available{where}; lower {setting}{fix} (or, if this "
        f"estimate is wrong for your machine, set {SWITCH}=0)"
    )


# -- the stages of an experiment ----------------------------------------------------------
def problem_shapes(prior: Any, forward_model: Any) -> tuple[tuple, tuple] | None:
    """``(x_shape, y_shape)`` of one pair from the components, or None if they do not say."""
    try:
        x_shape = tuple(int(s) for s in prior.shape)
        y_shape = tuple(int(s) for s in forward_model.output_shape(x_shape))
    except Exception:  # noqa: BLE001 - a component without shapes: no estimate
        return None
    return x_shape, y_shape


def check_stage_memory(exp: Any, stage: str) -> None:
    """Check, before ``stage`` ("simulate", "train" or "sample") of the experiment ``exp``
    (an :class:`~invdiff.experiment.run.Experiment`) does any work, that its sizes fit the
    memory available; names the config setting to change. Data already on disk are not
    simulated again, so their simulation is not counted."""
    cfg = exp.cfg
    d, t, s = cfg.data, cfg.training, cfg.sampling
    if stage == "train" and t.batch_size > d.n_train:
        raise ConfigError(f"training.batch_size = {t.batch_size} exceeds data.n_train = "
                          f"{d.n_train} (the training pairs); lower training.batch_size or "
                          f"raise data.n_train")
    if stage == "simulate" and exp.paths.train.is_file():
        return  # the data are there: nothing to simulate
    shapes = problem_shapes(*exp.components[:2])
    if shapes is None:
        return
    x_shape, y_shape = shapes
    n_pairs = d.n_train + d.n_val
    if stage == "simulate":
        in_flight = min(d.workers * d.chunk_size, n_pairs)
        check_memory(simulation_bytes(n_pairs, x_shape, y_shape, in_flight),
                     setting="data.n_train", value=d.n_train,
                     what=f"the {n_pairs} simulated pairs (x {x_shape}, y {y_shape})",
                     fix=" (or data.n_val), or data.workers x data.chunk_size")
    elif stage == "train":
        host, device = training_bytes(n_pairs, x_shape, y_shape)
        on_cpu = not str(t.device).startswith("cuda")
        check_memory(host + device if on_cpu else host, setting="data.n_train",
                     value=d.n_train, what=f"the {n_pairs} training pairs and their "
                     f"normalised copies", fix=" (or data.n_val)")
        if not on_cpu:
            check_memory(device, setting="data.n_train", value=d.n_train,
                         what=f"the {n_pairs} normalised training pairs", device=t.device,
                         fix=" (or data.n_val), or train on another device")
    elif stage == "sample":
        check_memory(sampling_bytes(d.n_test, s.n_samples, x_shape),
                     setting="sampling.n_samples", value=s.n_samples,
                     what=f"{s.n_samples} chains of x {x_shape} for each of the "
                     f"{d.n_test} held-out measurements", fix=" or data.n_test",
                     device=t.device)
