"""Study presets: one TOML file says what to run at which scale (``configs/study/*.toml``).

A preset holds the matrix (problems x nets x samplers) and, per problem, the pieces of an
:class:`~invdiff.config.ExperimentConfig`. The experiment of a cell is built by deep-merging,
in order: the preset's ``base`` section, the problem's ``experiment`` section, the net, and the
training noise level (written into ``problem.noise_model.params[noise_param]``). Every preset
goes through this same code; presets differ only in numbers.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from invdiff.config import (
    ComponentSpec,
    ExperimentConfig,
    Section,
    apply_overrides,
    check_components,
    format_validation_error,
    parse_config,
)
from invdiff.errors import ConfigError, UnknownComponentError
from invdiff.pipeline import deep_update  # the pipeline's merge of config tables
from invdiff.plugins import get_registry, validate_params

CALIBRATION_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class MCMCSpec(Section):
    """An MCMC reference (elasticity, OCE): how many held-out measurements get one, and its size."""

    n_ref: int = Field(2, ge=1, description="held-out measurements with an MCMC reference")
    steps: int = Field(2000, ge=2)
    walkers: int = Field(32, ge=4)


class ProblemSpec(Section):
    """One problem of the matrix.

    ``reference``: what the posterior is measured against besides the truth: ``exact`` (the
    linear-Gaussian closed form), ``mcmc`` (the inclusion-parameter MCMC of invdiff-elasticity),
    ``mcmc-oce`` (the spheroid-parameter MCMC of invdiff-oce, exact for unsmoothed speckle),
    ``algebraic`` (the OCE stress/strain estimate: a point estimate, no std) or ``none``.
    ``noise_param``: the key of ``problem.noise_model.params`` that ``noise_levels`` set; one
    model is trained per level and tested at the same level, plus the (train, test) pairs of
    ``misspecified``.
    """

    reference: Literal["exact", "mcmc", "mcmc-oce", "algebraic", "none"] = "none"
    noise_param: str
    noise_levels: list[float] = Field(min_length=1)
    misspecified: list[tuple[float, float]] = Field(default_factory=list)
    mcmc: MCMCSpec = Field(default_factory=MCMCSpec)
    experiment: dict[str, Any]

    @model_validator(mode="after")
    def _pairs_trained(self) -> ProblemSpec:
        for train, _ in self.misspecified:
            if train not in self.noise_levels:
                raise ValueError(f"misspecified pair trains at {train}, which is not one of "
                                 f"noise_levels {self.noise_levels}: add it there")
        if self.reference == "mcmc" and self.noise_param != "level":
            raise ValueError("the MCMC reference models relative Gaussian noise: noise_param "
                             f"must be 'level' (the gaussian noise model's), not "
                             f"{self.noise_param!r}")
        if self.reference == "mcmc-oce":
            spec = self.experiment.get("problem", {}).get("noise_model", {})
            noise = get_registry().create("noise_model", spec.get("name", "oce-phase-noise"),
                                          **spec.get("params", {}))
            if not getattr(noise, "independent_pixels", False):
                raise ValueError("the mcmc-oce reference has the exact likelihood only for "
                                 "unsmoothed speckle: set the noise model's "
                                 "speckle_smoothing = 0.0 (or speckle = false)")
        return self


class PeerSpec(Section):
    """sbi's NPSE on one problem with the same simulations as the cSDM (optional: needs sbi)."""

    enabled: bool = True
    problem: str = "reference"
    max_epochs: int = Field(200, ge=1)
    batch_size: int = Field(200, ge=1)
    steps: int = Field(500, ge=2, description="reverse-SDE (Euler-Maruyama) steps of sampling")


class Preset(Section):
    name: str
    out: str | None = Field(None, description="results folder; default docs/results/study/NAME")
    runs: str = Field(description="pipeline run folders (data, checkpoints); reruns resume")
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, description="torch threads (None: torch's default)")
    weights: Literal["ema", "raw", "auto"] = Field(
        "ema", description="auto: EMA or raw, whichever has the lower final validation loss")
    n_samples: int = Field(64, ge=2, description="posterior samples per measurement")
    seed: int = 1
    calibration_levels: list[float] = Field(default_factory=lambda: list(CALIBRATION_LEVELS))
    rank_bins: int = Field(10, ge=2, description="bins of the SBC rank histograms")
    base: dict[str, Any] = Field(default_factory=dict)
    nets: dict[str, ComponentSpec] = Field(min_length=1)
    samplers: dict[str, dict[str, Any]] = Field(min_length=1, description="name -> params")
    problems: dict[str, ProblemSpec] = Field(min_length=1)
    peer: PeerSpec = Field(default_factory=PeerSpec)

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"docs/results/study/{self.name}")

    def run_dir(self, problem: str, noise: float, net: str | None = None) -> Path:
        """Folder of the data at one training noise level, and of each net's run inside it."""
        base = Path(self.runs) / problem / f"noise-{noise:g}"
        return base if net is None else base / net

    def experiment(self, problem: str, noise: float, net: str | None = None) -> ExperimentConfig:
        """The pipeline config of (problem, training noise, net); ``net=None``: the data only
        (the first net's config, with the data folder as output)."""
        spec = self.problems[problem]
        data = copy.deepcopy(self.base)
        deep_update(data, copy.deepcopy(spec.experiment))
        net_name = net or next(iter(self.nets))
        data["net"] = self.nets[net_name].model_dump()
        data.setdefault("training", {})["device"] = self.device
        data.setdefault("name", f"{self.name}-{problem}-{noise:g}-{net_name}")
        noise_model = data.get("problem", {}).get("noise_model")
        if noise_model is None:
            raise ConfigError(f"preset {self.name}: problems.{problem}.experiment has no "
                              f"problem.noise_model")
        noise_model.setdefault("params", {})[spec.noise_param] = noise
        data.setdefault("output", {})["dir"] = str(self.run_dir(problem, noise, net))
        return parse_config(data, f"preset {self.name}, problem {problem}")

    def cells(self, problem: str) -> list[tuple[float, float]]:
        """(noise_train, noise_test) pairs of a problem: the diagonal, then the misspecified."""
        spec = self.problems[problem]
        pairs = [(level, level) for level in spec.noise_levels]
        return pairs + [p for p in spec.misspecified if p not in pairs]


def load_preset(name_or_path: str | Path, root: Path | None = None,
                overrides: list[str] | None = None) -> Preset:
    """A preset by name (``configs/study/NAME.toml`` under ``root``) or by path, with
    ``overrides`` (``KEY=VALUE``, see :func:`apply_overrides`) applied."""
    path = Path(name_or_path)
    if not path.suffix:
        path = (root or Path.cwd()) / "configs" / "study" / f"{name_or_path}.toml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.toml")) if path.parent.exists() else []
        raise ConfigError(f"no study preset at {path}; known presets: {', '.join(known) or '-'}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    data = apply_overrides(data, overrides or [])
    try:
        preset = Preset.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
    for problem, spec in preset.problems.items():  # fail before any work, naming the field
        for net in preset.nets:
            cfg = preset.experiment(problem, spec.noise_levels[0], net)
            check_components(cfg, f"{path}: problems.{problem} with net {net}")
    reg = get_registry()
    for name, params in preset.samplers.items():
        try:
            validate_params(reg.get("sampler", name), params)
        except (ConfigError, UnknownComponentError) as exc:
            raise ConfigError(f"{path}: samplers.{name}: {exc}") from None
    return preset
