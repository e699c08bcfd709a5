"""The ``invdiff`` command line: a thin layer over the Python API.

``invdiff --help`` and ``invdiff plugins`` import neither torch nor any plugin implementation
(plugins register factories by name), so they stay fast however many plugins are installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from invdiff import __version__
from invdiff.errors import InvdiffError, os_error_message

DEMO_HELP = "run the embedded demo end to end (simulate, train, sample, figures, metrics)"


def _cmd_plugins(args: argparse.Namespace) -> int:
    from invdiff.plugins import get_registry, plugin_table

    rows = plugin_table()
    failed = get_registry().failed
    conflicts = list(get_registry().conflicts.values())
    if args.json:
        print(json.dumps({"plugins": rows, "failed": failed, "conflicts": conflicts}, indent=2))
        return 0
    print(f"{'plugin':<14} {'distribution':<20} {'version':<9} components")
    for row in rows:
        comps = ", ".join(f"{c['name']} ({c['kind']})" for c in row["components"])
        print(f"{row['name']:<14} {row['distribution']:<20} {row['version']:<9} {comps}")
    for name, msg in failed.items():
        print(f"{name:<14} FAILED: {msg}")
    for msg in conflicts:
        print(f"WARNING: {msg}")
    return 0


def _rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's variables, without importing torch."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        return 0, 1


#: the arguments of a command restarted under torchrun (:func:`_torchrun`)
ARGV_ENV = "INVDIFF_TORCHRUN_ARGV"


def _torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Start this command again under ``torch.distributed.run`` with ``nproc`` ranks on this
    machine (``--standalone``: a free rendezvous port), without ``--nproc``."""
    if nproc < 1:
        print("invdiff: error: --nproc must be >= 1", file=sys.stderr)
        return 2
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    # the command's own arguments travel in the environment: torchrun's parser would read an
    # option such as --n as an abbreviation of one of its own (--nnodes, --node-rank, ...)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "invdiff.cli"]
    return subprocess.call(cmd, env={**os.environ, ARGV_ENV: json.dumps(rest)})


def _stage(name: str):
    def run(args: argparse.Namespace) -> int:
        from invdiff.experiment.config import load_config
        from invdiff.experiment.run import Experiment

        if getattr(args, "nproc", None) is not None and _rank()[1] == 1:
            return _torchrun(args.nproc, args.argv)

        cfg = load_config(args.config, overrides=args.set)
        if getattr(args, "out", None):
            cfg.output.dir = args.out
        exp = Experiment(cfg, progress=not args.quiet, say=_say)
        if name == "sample":  # hints repeat the user's own paths
            result = exp.sample(args.checkpoint or None, source=args.config)
        else:
            result = getattr(exp, name)()
        if isinstance(result, dict) and _rank()[0] == 0:  # one report, not one per rank
            print(json.dumps(result, indent=2, default=str))
        return 0

    return run


def _say(message: str) -> None:
    """A line for the person at the terminal (stderr: stdout carries the JSON result)."""
    print(f"invdiff: {message}", file=sys.stderr)


SMOKE_NOTE = ("--quick is a smoke test: it checks that every stage runs on this machine. Its "
              "model is barely trained, so the numbers above mean nothing; run `invdiff demo` "
              "without --quick for a real posterior.")


def _cmd_demo(args: argparse.Namespace) -> int:
    from invdiff.evaluation.verdicts import calibration_verdict
    from invdiff.experiment.demo import demo_config
    from invdiff.experiment.run import Experiment

    exp = Experiment(demo_config(args.problem, args.quick, args.out), not args.quiet, _say)
    cfg, paths = exp.cfg, exp.paths
    metrics = exp.run()
    shown = {k: v for k, v in metrics.items()
             if k not in ("descriptions", "units", "fields", "sampling_config")}
    print(json.dumps(shown, indent=2, default=str))
    _say(f"metrics (with units and a description of each): {paths.metrics}")
    if cfg.output.figures:
        _say(f"figures (posterior_*.png per held-out measurement, loss.png): "
             f"{paths.figures}/")
    if args.quick:
        _say(SMOKE_NOTE)
    else:
        _say(calibration_verdict(metrics) or "calibration: the 50% and 90% credible "
             "intervals cover about their share of the true values")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    """Posteriors of measurement files with their checks (invdiff.experiment.infer_files)."""
    if args.nproc is not None and _rank()[1] == 1:
        return _torchrun(args.nproc, args.argv)
    from invdiff.experiment.infer_files import read_measurements, write_results
    from invdiff.experiment.inference import infer, load_model

    model = load_model(args.model)
    y, sources = read_measurements(args.measurements, tuple(model.y_shape),  # before any work
                                   masking=model.masking)
    result = infer(model, y, n=args.n, sampler=args.sampler, overrides=args.set,
                   seed=args.seed, progress=not args.quiet,
                   calibration=None if args.no_calibration else "stored")
    if result is None:  # another rank than 0: its measurements went to rank 0
        return 0
    files = write_results(args.out, result, y, sources, samples=not args.no_samples,
                          figures=not args.no_figures, labels=result.labels)
    for row in result.measurements:
        print(f"{row['index']} {Path(row['source']).name}: {row.get('verdict', 'unchecked')}")
    cal = result.report["calibration"]
    _say(f"spread calibration x{cal['scale']:g} applied ({result.report['calibration_note']})"
         if cal else f"no spread calibration: {result.report['calibration_note']}")
    _say(f"wrote {', '.join(str(f) for f in files[:2])}"
         + (f" and {len(files) - 2} figures" if len(files) > 2 else ""))
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    import shlex

    from invdiff.study import study

    argv = [args.preset, *(["--out", str(args.out)] if args.out else []),
            *(["--runs", str(args.runs)] if args.runs else []),
            *(["--only", *args.only] if args.only else []),
            *(["--nets", *args.nets] if args.nets else []),
            *[a for item in args.set for a in ("--set", item)],
            *(["--no-peer"] if args.no_peer else []),
            *(["--peers-only"] if args.peers_only else [])]
    study(args.preset, out=args.out, runs=args.runs, only=args.only, nets=args.nets,
          overrides=args.set, peer=not args.no_peer, peers_only=args.peers_only,
          quiet=args.quiet,
          command="invdiff study " + " ".join(shlex.quote(a) for a in argv))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invdiff",
        description="Conditional score-based diffusion models for inverse problems in mechanics.",
    )
    p.add_argument("--version", action="version", version=f"invdiff {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("plugins", help="list installed plugins and their components")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=_cmd_plugins)

    stages = {
        "simulate": "simulate training, validation and test pairs from a config",
        "train": "train the score network of a config (resumes from its last checkpoint)",
        "sample": "sample posteriors of the held-out measurements; write metrics and figures",
        "run": "all stages of a config: simulate, train, sample",
    }
    for name, help_ in stages.items():
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", help="experiment config (TOML)")
        sp.add_argument("--out", help="override output.dir (default: runs/<config name>)")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (TOML syntax), e.g. --set training.steps=600"
                             " --set net.params.output=edm; repeatable")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        if name == "sample":
            sp.add_argument("--checkpoint", help="checkpoint to load (default: the run's)")
        if name in ("train", "sample", "run"):
            sp.add_argument("--nproc", type=int, metavar="K",
                            help="start K processes on this machine with torchrun (DDP "
                                 "training, measurements shared out); see docs/scale-out.md")
        sp.set_defaults(func=_stage(name))

    sp = sub.add_parser("demo", help=DEMO_HELP)
    sp.add_argument("--out", help="output folder (default: runs/demo, runs/demo-reference; "
                                  "with --quick runs/demo-quick, runs/demo-reference-quick)")
    sp.add_argument("--quick", action="store_true",
                    help="a smoke test in seconds: checks every stage runs; its numbers mean "
                         "nothing")
    sp.add_argument("--problem", choices=("elasticity", "reference"), default="elasticity",
                    help="elastography of an inclusion (default) or the exact reference problem")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sp.set_defaults(func=_cmd_demo)

    sp = sub.add_parser("infer", help="posteriors of your own measurements (.npy/.npz) with "
                        "an out-of-distribution verdict and a posterior predictive check")
    sp.add_argument("model", help="a run folder (its checkpoints/final.pt) or a checkpoint")
    sp.add_argument("measurements", nargs="+", metavar="MEASUREMENT",
                    help=".npy of shape (C, H, W) or (B, C, H, W), or .npz with an array y")
    sp.add_argument("--out", required=True, help="folder for posterior.npz, report.json, "
                                                 "figures/")
    sp.add_argument("--n", type=int, help="posterior samples per measurement (default: the "
                                          "model's sampling.n_samples)")
    sp.add_argument("--sampler", help="a registered sampler (default: the model's)")
    sp.add_argument("--seed", type=int, help="sampling seed (default: the model's)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a value of the model's recorded experiment, e.g. --set "
                         "sampling.sampler.params.steps=12 (repeatable)")
    sp.add_argument("--no-samples", action="store_true",
                    help="leave the samples out of posterior.npz (summaries only)")
    sp.add_argument("--no-figures", action="store_true", help="no PNG figures")
    sp.add_argument("--no-calibration", action="store_true",
                    help="the raw posterior: leave out the spread calibration stored beside "
                         "the checkpoint")
    sp.add_argument("--nproc", type=int, metavar="K",
                    help="share the measurements out over K processes (torchrun)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sp.set_defaults(func=_cmd_infer)

    sp = sub.add_parser("study", help="benchmark study: problems x nets x samplers against "
                                      "reference posteriors (resumable)")
    sp.add_argument("preset", help="a shipped preset (smoke, cpu, cpu-paper, cpu-gaps, gpu, "
                    "gpu-short) or a preset TOML file")
    sp.add_argument("--out", help="results folder (default: the preset's, else RUNS/results)")
    sp.add_argument("--runs", help="folder of data, checkpoints and cached cells (reruns resume)")
    sp.add_argument("--only", nargs="+", metavar="PROBLEM", help="run only these problems")
    sp.add_argument("--nets", nargs="+", metavar="NET", help="run only these nets")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a preset value, e.g. --set base.training.steps=600 or add "
                         "an installed sampler: --set 'samplers.NAME={}' (repeatable)")
    which = sp.add_mutually_exclusive_group()
    which.add_argument("--no-peer", action="store_true",
                       help="skip the peer methods (sbi NPSE, BayesFlow flow matching)")
    which.add_argument("--peers-only", action="store_true",
                       help="run only the peer methods of the preset's [peer] section (data "
                            "and references are made or read back; no cSDM is trained)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars or cell lines")
    sp.set_defaults(func=_cmd_study)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and ARGV_ENV in os.environ and len(sys.argv) == 1:  # a torchrun rank
        argv = json.loads(os.environ[ARGV_ENV])
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    rank, world = _rank()
    where = f" (rank {rank} of {world})" if world > 1 else ""
    try:
        return int(args.func(args) or 0)
    except InvdiffError as exc:
        print(f"invdiff {args.command}{where}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only or forbidden output folder, ...
        print(f"invdiff {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"invdiff {args.command}{where}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        if world > 1 and "torch" in sys.modules:
            from invdiff.training.distributed import shutdown

            shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
