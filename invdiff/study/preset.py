"""Study presets: one TOML file says what to run at which scale.

The presets ``smoke``, ``cpu``, ``gpu`` and ``gpu-short`` ship inside the package
(``invdiff/presets/``); any other TOML file of the same schema works too. A preset holds
the matrix (problems x nets x samplers) and, per problem, the pieces of an
:class:`~invdiff.experiment.config.ExperimentConfig`. The experiment of a cell is built by
deep-merging, in order: the preset's ``base`` section, the problem's ``experiment`` section,
the net, and the training noise level (written into
``problem.noise_model.params[noise_param]``). Every preset goes through this same code; presets
differ only in numbers. Nets and samplers are registry names, so any installed plugin's
component joins the matrix with one table entry (or one ``--set 'samplers.NAME={}'``).
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from invdiff.errors import ConfigError, UnknownComponentError
from invdiff.experiment.config import (
    ComponentSpec,
    ExperimentConfig,
    Section,
    apply_overrides,
    check_components,
    deep_update,  # the configs' merge of tables
    format_validation_error,
    parse_config,
)
from invdiff.plugins import get_registry, validate_params
from invdiff.training.config import seed_field

CALIBRATION_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class ProblemSpec(Section):
    """One problem of the matrix.

    ``reference``: the registered reference posterior (kind ``"reference"``) the samples are
    measured against besides the truth, ``{ name = ..., params = {...} }``; unset: the one the
    prior names (its ``reference`` attribute) with its default parameters; ``"none"``: none.
    ``invdiff.available("reference")`` lists them (e.g. ``linear-gaussian``, ``inclusion-mcmc``,
    ``spheroid-mcmc``, ``oce-algebraic``).
    ``noise_param``: the key of ``problem.noise_model.params`` that ``noise_levels`` set; one
    model is trained per level and tested at the same level, plus the (train, test) pairs of
    ``misspecified``.
    ``n_samples``: posterior samples per measurement on this problem (unset: the preset's).
    A problem whose exact std field varies little across pixels needs more samples than the
    others before the std-field correlation can tell a good sampler from a perfect one.
    """

    reference: ComponentSpec | Literal["none"] | None = None
    noise_param: str
    noise_levels: list[float] = Field(min_length=1)
    misspecified: list[tuple[float, float]] = Field(default_factory=list)
    n_samples: int | None = Field(None, ge=2, description="posterior samples per measurement "
                                  "on this problem (None: the preset's n_samples)")
    missing: list[str] = Field(
        default_factory=list, description="gap scenarios of the held-out measurements at each "
        "training level, besides the complete ones: 'random-F' (a fraction F of the pixels "
        "missing at random) or 'block-F' (one block covering F of the field); needs "
        "training.masking = true (invdiff.data.masking)")
    experiment: dict[str, Any]

    @field_validator("missing")
    @classmethod
    def _scenarios(cls, v: list[str]) -> list[str]:
        from invdiff.data.masking import parse_scenario

        for name in v:
            try:
                parse_scenario(name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if "none" in v or len(set(v)) != len(v):
            raise ValueError(f"missing = {v}: list each gap scenario once; the complete "
                             f"measurements ('none') are always sampled")
        return v

    @model_validator(mode="after")
    def _pairs_trained(self) -> ProblemSpec:
        for train, _ in self.misspecified:
            if train not in self.noise_levels:
                raise ValueError(f"misspecified pair trains at {train}, which is not one of "
                                 f"noise_levels {self.noise_levels}: add it there")
        return self


class PeerSpec(Section):
    """Peer methods (``invdiff.study.peer``): other libraries' posterior estimators trained on
    the same simulations as the cSDMs and scored the same way (optional: each needs its
    library, ``pip install invdiff[peers]``).

    ``peers``: registered peer names (``sbi-npse``, ``bayesflow-fm``); ``problems``: where to
    run them (unset: every problem of the preset), each at its first training noise level;
    ``settings``: a peer's parameters, written in TOML as a table ``[peer.NAME]``. The older
    form ``problem = "reference"`` with ``max_epochs``, ``batch_size``, ``steps`` beside it
    still reads as sbi's NPSE on that one problem.
    """

    enabled: bool = True
    peers: list[str] = Field(default_factory=lambda: ["sbi-npse", "bayesflow-fm"])
    problems: list[str] | None = Field(None, description="None: every problem of the preset")
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _tables_and_older_keys(cls, data: Any) -> Any:
        from .peer.catalog import PEERS

        if not isinstance(data, dict):
            return data
        data = dict(data)
        settings = dict(data.pop("settings", None) or {})
        for name in [k for k in data if k in PEERS]:  # [peer.NAME] tables
            settings[name] = {**settings.get(name, {}), **data.pop(name)}
        older = {k: data.pop(k) for k in ("max_epochs", "batch_size", "steps") if k in data}
        if "problem" in data:
            if "problems" in data:
                raise ValueError("give peer.problems (a list) or the older peer.problem, "
                                 "not both")
            data["problems"] = [data.pop("problem")]
            data.setdefault("peers", ["sbi-npse"])
        if older:
            settings["sbi-npse"] = {**older, **settings.get("sbi-npse", {})}
        data["settings"] = settings
        return data

    @model_validator(mode="after")
    def _known_peers_and_settings(self) -> PeerSpec:
        from .peer.catalog import PEERS

        unknown = [n for n in [*self.peers, *self.settings] if n not in PEERS]
        if unknown:
            raise ValueError(f"unknown peer(s) {', '.join(unknown)}; known peers: "
                             f"{', '.join(PEERS)}")
        for name in self.settings:
            self.params(name)  # a setting that the peer does not take fails here
        return self

    def params(self, name: str) -> Any:
        """The validated settings of peer ``name`` (its defaults where the preset is silent)."""
        from .peer.catalog import PEERS

        return PEERS[name].params.model_validate(self.settings.get(name, {}))

    def problems_of(self, preset: Preset) -> list[str]:
        """The problems the peers run on."""
        return list(preset.problems) if self.problems is None else list(self.problems)


class Preset(Section):
    name: str
    out: str | None = Field(None, description="results folder; default RUNS/results")
    runs: str = Field(description="pipeline run folders (data, checkpoints); reruns resume")
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, description="torch threads (None: torch's default)")
    weights: Literal["ema", "raw", "auto"] = Field(
        "ema", description="auto: EMA or raw, whichever has the lower final validation loss")
    n_samples: int = Field(64, ge=2, description="posterior samples per measurement")
    seed: int = seed_field(1, "seed of the posterior chains of every cell")
    calibration_levels: list[float] = Field(default_factory=lambda: list(CALIBRATION_LEVELS))
    rank_bins: int = Field(10, ge=2, description="bins of the SBC rank histograms")
    calibration_pairs: int = Field(
        0, ge=0, description="validation pairs on which each model's spread calibration is "
        "fitted per sampler (invdiff.calibrate, as sampling.calibration_pairs); the cells then "
        "report the calibrated posterior with the raw one beside it (raw_*); 0: none")
    base: dict[str, Any] = Field(default_factory=dict)
    nets: dict[str, ComponentSpec] = Field(min_length=1)
    objectives: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"dsm": {}}, min_length=1,
        description="training objectives (kind 'objective') -> their params: each net is "
        "trained with each, as the run NET (dsm) or NET+OBJECTIVE")
    samplers: dict[str, dict[str, Any]] = Field(min_length=1, description="name -> params")
    problems: dict[str, ProblemSpec] = Field(min_length=1)
    peer: PeerSpec = Field(default_factory=PeerSpec)

    @model_validator(mode="after")
    def _peer_problems_exist(self) -> Preset:
        unknown = [p for p in self.peer.problems or [] if p not in self.problems]
        if unknown:
            raise ValueError(f"peer.problems: {', '.join(unknown)} not among the problems "
                             f"({', '.join(self.problems)})")
        return self

    @model_validator(mode="after")
    def _rank_bins_fit_the_samples(self) -> Preset:
        for problem in self.problems:  # n samples give n + 1 rank values
            n = self.samples_for(problem)
            if self.rank_bins > n + 1:
                raise ValueError(f"rank_bins = {self.rank_bins} exceeds the {n + 1} rank values "
                                 f"of {n} samples on problem {problem}: lower rank_bins or "
                                 f"raise n_samples")
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.runs) / "results"

    def runs_of(self) -> list[str]:
        """The trained runs of each (problem, level): every net with every objective, named
        ``NET`` with ``dsm`` (so earlier run folders keep serving) and ``NET+OBJECTIVE``
        otherwise."""
        return [net if obj == "dsm" else f"{net}+{obj}" for obj in self.objectives
                for net in self.nets]

    def split_run(self, run: str) -> tuple[str, str]:
        """``(net, objective)`` of a run name of :meth:`runs_of`."""
        net, _, obj = run.partition("+")
        if net not in self.nets or (obj or "dsm") not in self.objectives:
            raise ConfigError(f"preset {self.name}: no run {run!r}; runs are "
                              f"{', '.join(self.runs_of())}")
        return net, obj or "dsm"

    def run_dir(self, problem: str, noise: float, net: str | None = None) -> Path:
        """Folder of the data at one training noise level, and of each net's run inside it."""
        base = Path(self.runs) / problem / f"noise-{noise:g}"
        return base if net is None else base / net

    def experiment(self, problem: str, noise: float, net: str | None = None) -> ExperimentConfig:
        """The experiment config of (problem, training noise, run), a run being a net or
        ``NET+OBJECTIVE`` (:meth:`runs_of`); ``net=None``: the data only (the first net's
        config, with the data folder as output)."""
        spec = self.problems[problem]
        data = copy.deepcopy(self.base)
        deep_update(data, copy.deepcopy(spec.experiment))
        net_name, objective = self.split_run(net or self.runs_of()[0])
        data["net"] = self.nets[net_name].model_dump()
        data.setdefault("training", {})["device"] = self.device
        # the dsm runs' configs stay as they were; the data config is one of them (the
        # objective does not change the simulated data)
        if objective != "dsm" and net is not None:
            data["training"].update(objective=objective,
                                    objective_params=dict(self.objectives[objective]))
        data.setdefault("name", f"{self.name}-{problem}-{noise:g}-{net or net_name}")
        noise_model = data.get("problem", {}).get("noise_model")
        if noise_model is None:
            raise ConfigError(f"preset {self.name}: problems.{problem}.experiment has no "
                              f"problem.noise_model")
        noise_model.setdefault("params", {})[spec.noise_param] = noise
        if spec.reference is not None:  # else the prior's own (the run layer's rule)
            data.setdefault("sampling", {})["reference"] = (
                {"name": "none"} if spec.reference == "none" else spec.reference.model_dump())
        data.setdefault("output", {})["dir"] = str(self.run_dir(problem, noise, net))
        return parse_config(data, f"preset {self.name}, problem {problem}")

    def samples_for(self, problem: str) -> int:
        """Posterior samples per measurement on ``problem``: its own, else the preset's."""
        return self.problems[problem].n_samples or self.n_samples

    def cells(self, problem: str) -> list[tuple[float, float]]:
        """(noise_train, noise_test) pairs of a problem: the diagonal, then the misspecified."""
        spec = self.problems[problem]
        pairs = [(level, level) for level in spec.noise_levels]
        return pairs + [p for p in spec.misspecified if p not in pairs]


def preset_names() -> list[str]:
    """The presets shipped with invdiff (``invdiff/presets/*.toml``)."""
    folder = resources.files("invdiff").joinpath("presets")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_preset_text(name_or_path: str | Path) -> tuple[str, str]:
    """(TOML text, source name) of a shipped preset NAME or of a TOML file."""
    path = Path(name_or_path)
    if path.suffix or path.exists():
        if not path.is_file():
            raise ConfigError(f"no study preset file at {path}; shipped presets: "
                              f"{', '.join(preset_names())}")
        return path.read_text(), str(path)
    if str(name_or_path) not in preset_names():
        raise ConfigError(f"unknown study preset {str(name_or_path)!r}; known presets: "
                          f"{', '.join(preset_names())} (or give a TOML file)")
    res = resources.files("invdiff").joinpath("presets", f"{name_or_path}.toml")
    return res.read_text(), f"preset {name_or_path}"


def read_preset_data(name_or_path: str | Path, _seen: tuple[tuple[str, str], ...] = ()
                     ) -> tuple[dict[str, Any], str]:
    """(TOML tables, source name) of a preset, with ``extends`` resolved.

    ``extends = "cpu"`` builds on a shipped preset (or on a TOML file, relative to a preset
    file): the tables here are merged into its tables, key by key. ``runs`` is not inherited
    (two presets writing one run folder would clash): unset, it is ``runs/study/<name>``.
    Files are compared by their resolved paths, so an ``extends`` chain that comes back to a
    file by another spelling (``../dir/a.toml``) is an ``extends loop`` error naming the chain."""
    text, source = read_preset_text(name_or_path)
    key = _preset_key(name_or_path, source)
    if key in [k for k, _ in _seen]:
        chain = " -> ".join([*(s for _, s in _seen), source])
        raise ConfigError(f"{source}: extends loop: {chain} (`extends` loops back on itself); "
                          f"remove one")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    base = data.pop("extends", None)
    if base is None:
        return data, source
    if not isinstance(base, str):
        raise ConfigError(f'{source}: extends: expected a preset name or file, e.g. '
                          f'extends = "cpu"')
    here = Path(name_or_path).parent / base
    merged, _ = read_preset_data(here if Path(base).suffix and here.is_file() else base,
                                 (*_seen, (key, source)))
    merged.pop("runs", None)
    deep_update(merged, data)
    if isinstance(merged.get("name"), str):
        merged.setdefault("runs", f"runs/study/{merged['name']}")
    return merged, source


def _preset_key(name_or_path: str | Path, source: str) -> str:
    """What identifies a preset in an ``extends`` chain: a file's resolved path, or the
    shipped preset's name."""
    path = Path(name_or_path)
    if path.suffix or path.exists():
        return str(path.resolve())
    return source


def load_preset(name_or_path: str | Path, overrides: list[str] | None = None) -> Preset:
    """A shipped preset by name (``smoke``, ``cpu``, ``cpu-paper``, ``cpu-gaps``, ``gpu``,
    ``gpu-short``) or a TOML file (``extends`` resolved, :func:`read_preset_data`), with
    ``overrides`` (``KEY=VALUE``, see :func:`apply_overrides`) applied; components, sampler
    parameters and reference names are checked; :func:`check_fits` checks that each reference
    fits its problem (it builds the problems, which can take a while at large sizes)."""
    data, source = read_preset_data(name_or_path)
    data = apply_overrides(data, overrides or [])
    try:
        preset = Preset.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    reg = get_registry()
    for problem, spec in preset.problems.items():  # fail before any work, naming the field
        _check_reference(preset, problem, source)
        for net in preset.runs_of():
            cfg = preset.experiment(problem, spec.noise_levels[0], net)
            check_components(cfg, f"{source}: problems.{problem} with net {net}")
            if spec.missing and not getattr(cfg.training, "masking", False):
                raise ConfigError(f"{source}: problems.{problem}.missing = {spec.missing} needs "
                                  f"models trained for measurements with gaps: set "
                                  f"problems.{problem}.experiment.training.masking = true")
    for name, params in preset.samplers.items():
        try:
            validate_params(reg.get("sampler", name), params)
        except (ConfigError, UnknownComponentError) as exc:
            raise ConfigError(f"{source}: samplers.{name}: {exc}") from None
    return preset


def _check_reference(preset: Preset, problem: str, source: str) -> None:
    """The problem's reference exists and takes its parameters (building nothing: whether it
    fits the problem is checked by :func:`check_fits`, which builds the problem)."""
    ref = preset.problems[problem].reference
    if not isinstance(ref, ComponentSpec):
        return
    try:
        validate_params(get_registry().get("reference", ref.name), ref.params)
    except (ConfigError, UnknownComponentError) as exc:
        raise ConfigError(f"{source}: problems.{problem}.reference: {exc}") from None


def check_fits(preset: Preset, problem: str) -> None:
    """The problem's reference fits it (e.g. the spheroid MCMC needs unsmoothed speckle);
    builds the problem's components once, so the study calls it before any work."""
    from invdiff.experiment.run import Experiment

    exp = Experiment(preset.experiment(problem, preset.problems[problem].noise_levels[0]))
    spec = exp.reference_spec
    if spec is None:
        return
    ref = get_registry().create("reference", spec.name, **spec.params)
    why = ref.fits(*exp.components)
    if why is not None:
        raise ConfigError(f"preset {preset.name}: problems.{problem}.reference: {spec.name} "
                          f"does not fit this problem: {why}")
