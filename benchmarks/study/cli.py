"""Command line of the study: ``python benchmarks/study.py PRESET [--out DIR] [--only P ...]``.

Runs every problem of the preset (or those named by ``--only``): simulate and train each
(problem, noise level, net) once through the resumable pipeline stages, sample every cell with
every sampler, then write ``results.csv``, ``results.md``, ``calibration.json`` and the plots
into ``--out`` (default: the preset's ``out``, else ``docs/results/study/<preset>/``). A rerun
resumes: finished trainings, MCMC references and cells are read back, not recomputed.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from invdiff.errors import ConfigError
from invdiff.runtime import torch_threads

from .peer import run_peer
from .preset import load_preset
from .report import write_all
from .runner import StudyResult, run_problem

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/study.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("preset", help="preset name (configs/study/NAME.toml) or a TOML path")
    ap.add_argument("--out", type=Path, help="results folder (default: the preset's)")
    ap.add_argument("--runs", type=Path, help="pipeline run folders (default: the preset's)")
    ap.add_argument("--only", nargs="+", metavar="PROBLEM", help="run only these problems")
    ap.add_argument("--nets", nargs="+", metavar="NET", help="run only these nets")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a preset value, e.g. --set base.training.steps=600 "
                         "(repeatable; recorded in the results' command line)")
    ap.add_argument("--no-peer", action="store_true", help="skip the sbi NPSE peer")
    ap.add_argument("--quiet", action="store_true", help="no progress bars or per-cell lines")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = load_preset(args.preset, ROOT, args.set)
    if args.runs is not None:
        preset = preset.model_copy(update={"runs": str(args.runs)})
    out = args.out or preset.out_dir
    problems = _select("--only", args.only, preset.problems, preset.name)
    nets = _select("--nets", args.nets, preset.nets, preset.name)
    preset = preset.model_copy(update={"nets": {n: preset.nets[n] for n in nets}})
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    result = StudyResult()
    start = time.perf_counter()
    with torch_threads(preset.threads):
        for problem in problems:
            run_problem(preset, problem, result, log, progress=not args.quiet)
        peer_note = None
        if preset.peer.enabled and not args.no_peer and preset.peer.problem in problems:
            peer_note = run_peer(preset, result, log)
            log(peer_note)
    command = "python benchmarks/study.py " + " ".join(shlex.quote(a) for a in
                                                       (argv if argv is not None else sys.argv[1:]))
    header = [f"Problems: {', '.join(problems)}; nets: {', '.join(preset.nets)}; samplers: "
              f"{', '.join(preset.samplers)}; {preset.n_samples} samples per measurement.",
              f"Device `{preset.device}`, torch {torch.__version__}, {preset.threads or 'default'}"
              f" torch threads, {platform.machine()} with {_cpus()} CPUs; wall time "
              f"{(time.perf_counter() - start) / 60:.1f} min (resumed parts are not re-timed)."]
    files = write_all(result, out, preset.name, command, header,
                      preset.peer.problem if peer_note else None, peer_note)
    log("wrote " + ", ".join(str(f) for f in files))
    return 0


def _select(option: str, chosen: list[str] | None, known: dict, preset: str) -> list[str]:
    """The names an option picks (all if not given); unknown ones are an error naming them."""
    if not chosen:
        return list(known)
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ConfigError(f"{option} {' '.join(unknown)}: not in preset {preset}; it has "
                          f"{', '.join(known)}")
    return list(chosen)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
