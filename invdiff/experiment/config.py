"""Experiment configuration: pydantic models, loaded from TOML.

An experiment names its components by registry name and parameters, so the same file works
with any installed plugin::

    name = "reference-16"
    [problem.prior]
    name = "gaussian-field"
    params = { n = 16, length_scale = 0.2 }
    [problem.forward_model]
    name = "blur"
    ...
    [net]
    name = "unet"
    params = { base_width = 32 }
    [training]
    steps = 2000
    [sampling.sampler]
    name = "predictor-corrector"

Errors point at the field (``training.lr: Input should be greater than 0``; a misspelt name
gets a suggestion: ``training.stepz: unknown field (did you mean 'steps'?)``), and
:func:`check_components` checks component names and parameters against the registry before any
work starts.

A config may build on another with a top-level ``extends = "other.toml"`` (a path relative to
the file): the other file is read first and this file's tables are merged into it, table by
table (:func:`deep_update`); only ``output.dir`` is not inherited. The shipped
``invdiff/configs/demo-*-quick.toml`` are written so. Unless ``output.dir`` is set, a run
writes to ``runs/<config file name without .toml>``.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from invdiff.errors import ConfigError, UnknownComponentError
from invdiff.params import (
    DEFAULT_CALIBRATION_PAIRS,
    DEFAULT_N_SAMPLES,
    DEFAULT_SAMPLER,
    DEFAULT_THREADS,
)
from invdiff.training.config import (  # the trainer's own model: one source of truth
    TrainingConfig,
    seed_field,
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentSpec(Section):
    """A registered component: its ``name`` and the ``params`` passed to its factory."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ProblemConfig(Section):
    prior: ComponentSpec
    forward_model: ComponentSpec
    noise_model: ComponentSpec


class SecurityConfig(Section):
    """TLS between this process and a Dask cluster (``data.security``): PEM files of a
    certificate authority, and a certificate (with its key) that it signed. Dask exchanges
    pickles, which can run code: on a network you do not trust, use ``tls://`` with these
    (docs/scale-out.md)."""

    ca_file: str = Field(description="the certificate authority the peers must be signed by")
    cert: str = Field(description="this side's certificate; a LocalCluster's scheduler and "
                      "workers use it too")
    key: str | None = Field(None, description="the certificate's private key (unset: in cert)")


class DataConfig(Section):
    n_train: int = Field(2000, ge=2)
    n_val: int = Field(200, ge=0)
    n_test: int = Field(5, ge=1, description="held-out measurements to sample")
    chunk_size: int = Field(256, ge=1)
    workers: int = Field(1, ge=1, description="processes that simulate chunks in parallel")
    seed: int = seed_field(0, "master seed of the simulated pairs")
    executor: Literal["local", "dask"] = Field(
        "local", description="where chunks run: 'local' (a process pool of `workers`) or "
        "'dask' (dask.distributed; pip install 'invdiff[dask]'): the same data either way"
    )
    scheduler: str | None = Field(
        None, description="dask: address of a running scheduler (e.g. 'tcp://host:8786'); "
        "unset = a LocalCluster of `workers` single-threaded worker processes"
    )
    # exclude: how chunks travel changes no result, so it stays out of every fingerprint and
    # checkpoint (runs made before this field existed keep their keys; no key paths stored)
    security: SecurityConfig | None = Field(
        None, exclude=True, description="dask: TLS credentials (ca_file, cert, key) for the "
        "scheduler, workers and client; needed for a tls:// scheduler"
    )

    @model_validator(mode="after")
    def _scheduler_needs_dask(self) -> DataConfig:
        if self.scheduler is not None and self.executor != "dask":
            raise ValueError("data.scheduler is a Dask address: set data.executor = 'dask'")
        if self.security is not None and self.executor != "dask":
            raise ValueError("data.security is TLS for Dask: set data.executor = 'dask'")
        tls = self.scheduler is not None and self.scheduler.startswith("tls://")
        if tls and self.security is None:
            raise ValueError(f"data.scheduler {self.scheduler!r} speaks TLS: set data.security "
                             f"(ca_file, cert, key)")
        if self.security is not None and self.scheduler is not None and not tls:
            raise ValueError(f"data.security makes the cluster speak TLS: give data.scheduler "
                             f"as tls://..., not {self.scheduler!r}")
        return self


class LadderConfig(Section):
    """The noise ladder. Unset ``sigma_1`` / ``n_levels`` follow the NCSNv2 heuristics
    (:func:`invdiff.sampling.sigmas.suggest`) on the normalised training data."""

    sigma_1: float | None = Field(None, gt=0)
    sigma_L: float = Field(0.01, gt=0)
    n_levels: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _order(self) -> LadderConfig:
        if self.sigma_1 is not None and self.sigma_1 <= self.sigma_L:
            raise ValueError(f"sigma_1 ({self.sigma_1}) must exceed sigma_L ({self.sigma_L})")
        return self


class SamplingConfig(Section):
    sampler: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name=DEFAULT_SAMPLER)
    )
    n_samples: int = Field(DEFAULT_N_SAMPLES, ge=2)
    seed: int = seed_field(1, "seed of the posterior chains")
    threads: int | None = Field(DEFAULT_THREADS, ge=1, description="CPU threads while "
                                "sampling; None: one per core (see training.threads)")
    reference: ComponentSpec | None = Field(
        None, description="reference posterior to compare with (kind 'reference'; name 'none': "
                          "no comparison); default: the one the prior names")
    calibration_pairs: int = Field(
        DEFAULT_CALIBRATION_PAIRS, ge=0,
        description="validation pairs (the net never trained on them) on which a spread "
                    "factor is fitted by CRPS after training (invdiff.calibrate), stored beside "
                    "the checkpoint and applied to every posterior; 0: no calibration")


class OutputConfig(Section):
    dir: str | None = Field(None, description="folder for data, checkpoints, figures "
                            "(default: runs/<config file name>, or runs/<name>)")
    figures: bool = True


class ExperimentConfig(Section):
    """A whole experiment: problem, data, net, training, ladder, sampling, output."""

    name: str = "experiment"
    problem: ProblemConfig
    data: DataConfig = Field(default_factory=DataConfig)
    net: ComponentSpec
    ladder: LadderConfig = Field(default_factory=LadderConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @property
    def out_dir(self) -> Path:
        return Path(self.output.dir) if self.output.dir else Path("runs") / self.name


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a misspelt ``word``, or ``""``
    when none is close (difflib's ratio >= 0.6)."""
    close = difflib.get_close_matches(word, sorted(choices), n=2, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the section that ``loc`` (a pydantic error location) lies in."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        sub = getattr(field, "annotation", None)
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return []
        model = sub
    return list(model.model_fields)


def format_validation_error(exc: ValidationError, source: str = "config",
                            model: type[BaseModel] | None = None) -> str:
    """One line per problem: ``source: section.field: message``; an unknown field of
    ``model`` gets the closest known names."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            known = _fields_at(model, err["loc"]) if model is not None else []
            msg = "unknown field" + did_you_mean(str(err["loc"][-1]), known)
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a config dict; raise :class:`ConfigError` that points at the fields."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, ExperimentConfig)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``dotted.key=VALUE`` items in nested config tables, in place (and return them).

    VALUE is read as a TOML value (``training.steps=600``, ``net.params.output="edm"``,
    ``ladder.sigma_L=0.02``, ``'data.sizes=[1, 2]'``); a bare word that is not valid TOML is
    taken as a string (``net.params.output=edm``). Missing tables are created; validation is
    left to the caller's model, so a misspelt key is reported there.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.steps=600")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word: a string
        *parents, last = key.split(".")
        table = data
        for part in parents:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a table")
        table[last] = value
    return data


def deep_update(base: dict[str, Any], over: dict[str, Any]) -> None:
    """Merge ``over`` into ``base`` in place, table by table (nested dicts merge, values
    replace)."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value


def read_config_data(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The TOML tables of a config file, with ``extends`` resolved (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    if path.resolve() in _seen:  # resolved: ../dir/a.toml and a.toml are one file
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ConfigError(f"{path}: extends loop: {chain} (`extends` loops back on itself); "
                          f"remove one")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected a file name, e.g. extends = \"base.toml\"")
    merged = read_config_data(path.parent / base, (*_seen, path.resolve()))
    # the output folder is not inherited: two configs writing one folder would clash
    if isinstance(merged.get("output"), dict):
        merged["output"].pop("dir", None)
    deep_update(merged, data)
    return merged


def load_config(path: str | Path, check: bool = True,
                overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate a TOML experiment config (and its components, if ``check``), with
    ``overrides`` (``KEY=VALUE`` items, :func:`apply_overrides`) applied before validation.

    An unset ``output.dir`` becomes ``runs/<file name without .toml>``.
    """
    path = Path(path)
    data = read_config_data(path)
    apply_overrides(data, overrides or [])
    output = data.setdefault("output", {})
    if isinstance(output, dict):
        output.setdefault("dir", f"runs/{path.stem}")
    cfg = parse_config(data, str(path))
    if check:
        check_components(cfg, str(path))
    return cfg


def component_specs(cfg: ExperimentConfig) -> dict[str, tuple[str, ComponentSpec]]:
    """Field path -> (kind, spec) for every component of the experiment."""
    return {
        "problem.prior": ("prior", cfg.problem.prior),
        "problem.forward_model": ("forward_model", cfg.problem.forward_model),
        "problem.noise_model": ("noise_model", cfg.problem.noise_model),
        "net": ("score_net", cfg.net),
        "sampling.sampler": ("sampler", cfg.sampling.sampler),
        "training.objective": ("objective", ComponentSpec(
            name=cfg.training.objective, params=cfg.training.objective_params)),
        **({"sampling.reference": ("reference", cfg.sampling.reference)}
           if cfg.sampling.reference is not None and cfg.sampling.reference.name != "none"
           else {}),
    }


def check_components(cfg: ExperimentConfig, source: str = "config") -> None:
    """Check each component's name and parameters against the registry (builds nothing).

    Score-net shapes (``x_shape``, ``y_shape``) are filled in from the problem at build time,
    so they may be absent here.
    """
    from invdiff.plugins import get_registry, validate_params

    reg = get_registry()
    for field_path, (kind, spec) in component_specs(cfg).items():
        try:
            comp = reg.get(kind, spec.name)
        except UnknownComponentError as exc:
            hint = did_you_mean(spec.name, reg.available(kind))
            raise ConfigError(f"{source}: {field_path}: {exc}{hint}") from None
        params = dict(spec.params)
        if kind == "score_net":
            params.setdefault("x_shape", (1, 4, 4))
            params.setdefault("y_shape", (1, 4, 4))
        try:
            validate_params(comp, params)
        except ConfigError as exc:
            known = list(comp.params.model_fields) if comp.params is not None else []
            hints = [f"{k}{hint}" for k in params if k not in known
                     for hint in [did_you_mean(k, known)] if hint]
            hint = "\n  " + "; ".join(hints) if hints else ""
            raise ConfigError(f"{source}: {field_path}: {exc}{hint}") from None
