"""The ``invdiff`` command line: a thin layer over the Python API.

``invdiff --help`` and ``invdiff plugins`` import neither torch nor any plugin implementation
(plugins register factories by name), so they stay fast however many plugins are installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from invdiff import __version__
from invdiff.errors import InvdiffError

DEMO_HELP = "run the embedded demo end to end (simulate, train, sample, figures, metrics)"


def _cmd_plugins(args: argparse.Namespace) -> int:
    from invdiff.plugins import get_registry, plugin_table

    rows = plugin_table()
    failed = get_registry().failed
    if args.json:
        print(json.dumps({"plugins": rows, "failed": failed}, indent=2))
        return 0
    print(f"{'plugin':<14} {'distribution':<20} {'version':<9} components")
    for row in rows:
        comps = ", ".join(f"{c['name']} ({c['kind']})" for c in row["components"])
        print(f"{row['name']:<14} {row['distribution']:<20} {row['version']:<9} {comps}")
    for name, msg in failed.items():
        print(f"{name:<14} FAILED: {msg}")
    return 0


def _stage(name: str):
    def run(args: argparse.Namespace) -> int:
        from invdiff import pipeline
        from invdiff.config import load_config

        cfg = load_config(args.config, overrides=args.set)
        if getattr(args, "out", None):
            cfg.output.dir = args.out
        fn = getattr(pipeline, f"run_{name}")
        kwargs = {"progress": not args.quiet}
        if name == "sample" and args.checkpoint:
            kwargs["checkpoint"] = args.checkpoint
        result = fn(cfg, **kwargs)
        if isinstance(result, dict):
            print(json.dumps(result, indent=2, default=str))
        return 0

    return run


def _cmd_demo(args: argparse.Namespace) -> int:
    from invdiff import pipeline

    metrics = pipeline.run_demo(out=args.out, quick=args.quick, progress=not args.quiet,
                                problem=args.problem)
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    import shlex

    from invdiff.evaluation import study

    argv = [args.preset, *(["--out", str(args.out)] if args.out else []),
            *(["--runs", str(args.runs)] if args.runs else []),
            *(["--only", *args.only] if args.only else []),
            *(["--nets", *args.nets] if args.nets else []),
            *[a for item in args.set for a in ("--set", item)],
            *(["--no-peer"] if args.no_peer else [])]
    study(args.preset, out=args.out, runs=args.runs, only=args.only, nets=args.nets,
          overrides=args.set, peer=not args.no_peer, quiet=args.quiet,
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
        sp.add_argument("--out", help="override output.dir")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (TOML syntax), e.g. --set training.steps=600"
                             " --set net.params.output=edm; repeatable")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        if name == "sample":
            sp.add_argument("--checkpoint", help="checkpoint to load (default: the run's)")
        sp.set_defaults(func=_stage(name))

    sp = sub.add_parser("demo", help=DEMO_HELP)
    sp.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    sp.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    sp.add_argument("--problem", choices=("elasticity", "reference"), default="elasticity",
                    help="elastography of an inclusion (default) or the exact reference problem")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sp.set_defaults(func=_cmd_demo)

    sp = sub.add_parser("study", help="benchmark study: problems x nets x samplers against "
                                      "reference posteriors (resumable)")
    sp.add_argument("preset", help="a shipped preset (smoke, cpu, gpu, gpu-short) or a preset "
                    "TOML file")
    sp.add_argument("--out", help="results folder (default: the preset's, else RUNS/results)")
    sp.add_argument("--runs", help="folder of data, checkpoints and cached cells (reruns resume)")
    sp.add_argument("--only", nargs="+", metavar="PROBLEM", help="run only these problems")
    sp.add_argument("--nets", nargs="+", metavar="NET", help="run only these nets")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a preset value, e.g. --set base.training.steps=600 or add "
                         "an installed sampler: --set 'samplers.NAME={}' (repeatable)")
    sp.add_argument("--no-peer", action="store_true", help="skip the sbi NPSE peer")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars or cell lines")
    sp.set_defaults(func=_cmd_study)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InvdiffError as exc:
        print(f"invdiff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"invdiff {args.command}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
