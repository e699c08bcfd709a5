"""The embedded demos: configs shipped with invdiff (``invdiff/configs/*.toml``).

``invdiff demo`` runs ``demo-PROBLEM.toml`` end to end (``--quick``: ``demo-PROBLEM-quick.toml``,
a smoke test of every stage whose numbers mean nothing), each in a folder of its own.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from invdiff.errors import ConfigError
from invdiff.experiment.config import ExperimentConfig, parse_config, read_config_data

__all__ = ["DEMOS", "demo_config", "demo_name", "demo_out_dir", "embedded_config",
           "embedded_config_path"]


def embedded_config_path(name: str = "demo-elasticity") -> Path:
    """The path of a config shipped with invdiff (``invdiff/configs/NAME.toml``)."""
    return Path(str(resources.files("invdiff").joinpath("configs", f"{name}.toml")))


def embedded_config(name: str = "demo-elasticity") -> dict[str, Any]:
    """The tables of a config shipped with invdiff, ``extends`` resolved (not validated)."""
    return read_config_data(embedded_config_path(name))


DEMOS = ("elasticity", "reference")


def demo_name(problem: str = "elasticity", quick: bool = False) -> str:
    """The embedded config of a demo: ``demo-PROBLEM`` or ``demo-PROBLEM-quick``."""
    if problem not in DEMOS:
        raise ConfigError(f"unknown demo {problem!r}; choose one of {', '.join(DEMOS)}")
    return f"demo-{problem}" + ("-quick" if quick else "")


def demo_out_dir(problem: str = "elasticity", quick: bool = False) -> Path:
    """Each demo's own default folder, so that no two clash: ``runs/demo`` (elasticity),
    ``runs/demo-reference``, and ``-quick`` after either for the smoke runs."""
    stem = "demo" if problem == "elasticity" else f"demo-{problem}"
    return Path("runs") / (stem + ("-quick" if quick else ""))


def demo_config(problem: str = "elasticity", quick: bool = False,
                out: str | Path | None = None) -> ExperimentConfig:
    """The validated config of a demo, writing to ``out`` (default :func:`demo_out_dir`)."""
    name = demo_name(problem, quick)
    data = embedded_config(name)
    data.setdefault("output", {})["dir"] = str(out or demo_out_dir(problem, quick))
    return parse_config(data, f"invdiff/configs/{name}.toml")
