"""The study driver: :func:`study` runs it all (``invdiff study PRESET`` on the command line).

Runs every problem of the preset (or those named by ``only``): simulate and train each
(problem, noise level, net) once through the resumable pipeline stages, sample every cell with
every sampler, then write ``results.csv``, ``results.md``, ``calibration.json`` and the plots
into ``out`` (default: the preset's ``out``, else ``<runs>/results``). A rerun resumes:
finished trainings, MCMC references and cells are read back, not recomputed.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from invdiff.errors import ConfigError
from invdiff.runtime import torch_threads

from .peer import peer_title, run_peers
from .preset import Preset, check_fits, load_preset
from .report import write_all
from .runner import StudyResult, run_problem


def study(
    preset: str | Path | Preset,
    out: str | Path | None = None,
    runs: str | Path | None = None,
    only: Sequence[str] | None = None,
    nets: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    peer: bool = True,
    peers_only: bool = False,
    quiet: bool = False,
    command: str | None = None,
) -> StudyResult:
    """Run the study ``preset`` (a shipped name such as ``"smoke"``, a TOML path, or a loaded
    :class:`Preset`) and write its results; returns them.

    ``runs``: pipeline run folders (data, checkpoints, cached cells); ``only`` / ``nets``: run
    only these problems / nets; ``overrides``: ``KEY=VALUE`` items applied to the preset (e.g.
    ``"samplers.my-sampler={}"`` adds an installed sampler to the matrix); ``peer``: run the
    preset's peer methods (``[peer]``: sbi's NPSE, BayesFlow's flow matching) on its peer
    problems; ``peers_only``: run only those (simulating the data and computing the references
    they need, but training no cSDM); ``command``: how to rerun it, for the report.
    """
    if not isinstance(preset, Preset):
        preset = load_preset(preset, list(overrides))
    elif overrides:
        raise ConfigError("overrides apply to a preset name or file, not to a loaded Preset")
    if runs is not None:
        preset = preset.model_copy(update={"runs": str(runs)})
    out_dir = Path(out) if out is not None else preset.out_dir
    problems = _select("only", only, preset.problems, preset.name)
    chosen = _select("nets", nets, preset.nets, preset.name)
    preset = preset.model_copy(update={"nets": {n: preset.nets[n] for n in chosen}})
    log = (lambda s: None) if quiet else (lambda s: print(s, flush=True))
    result = StudyResult()
    start = time.perf_counter()
    with torch_threads(preset.threads):
        for problem in problems:  # a reference that does not fit fails before any work
            check_fits(preset, problem)
        if not peers_only:
            for problem in problems:
                run_problem(preset, problem, result, log, progress=not quiet)
        peer_notes = None
        if peer or peers_only:
            peer_notes = run_peers(preset, problems, result, log)
    own = ", ".join(f"{p}: {preset.samples_for(p)}" for p in problems
                    if preset.samples_for(p) != preset.n_samples)
    matrix = (f"peers only (no cSDM trained): {', '.join(preset.peer.peers)}" if peers_only
              else f"runs (net+objective): {', '.join(preset.runs_of())}; samplers: "
                   f"{', '.join(preset.samplers)}")
    header = [f"Problems: {', '.join(problems)}; {matrix}; {preset.n_samples} samples per "
              f"measurement{f' ({own})' if own else ''}.",
              f"Device `{preset.device}`, torch {torch.__version__}, {preset.threads or 'default'}"
              f" torch threads, {platform.machine()} with {_cpus()} CPUs; wall time "
              f"{(time.perf_counter() - start) / 60:.1f} min (resumed parts are not re-timed)."]
    peer_section = None
    if peer_notes is not None:
        chosen = [p for p in preset.peer.problems_of(preset) if p in problems]
        peer_section = (peer_title(preset.peer.peers), chosen, peer_notes)
    files = write_all(result, out_dir, preset.name, command or f"invdiff study {preset.name}",
                      header, peer_section)
    log("wrote " + ", ".join(str(f) for f in files))
    return result


def _select(option: str, chosen: Sequence[str] | None, known: dict, preset: str) -> list[str]:
    """The names an option picks (all if not given); unknown ones are an error naming them."""
    if not chosen:
        return list(known)
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ConfigError(f"--{option} {' '.join(unknown)}: not in preset {preset}; it has "
                          f"{', '.join(known)}")
    return list(chosen)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
