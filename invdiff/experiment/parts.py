"""The parts of an experiment, each built once: components, data, ladder, net, model.

:class:`ExperimentParts` owns everything an experiment config describes and its run folder
(:class:`RunPaths`)::

    <out>/data/train.npz, data/test.npz     simulated pairs (resumable chunks while running)
    <out>/checkpoints/last.pt, final.pt     training state (resume) and the final model
    <out>/training.json                     loss history and the ladder with its reasoning
    <out>/posterior.npz                     samples, mean, std of the held-out measurements
    <out>/metrics.json                      accuracy and cost
    <out>/figures/*.png                     posterior panels, loss curve
    <out>/references/                       cached reference chains (MCMC)

Its parts are built on first use and kept: the prior, forward model and noise model, the
sampler, the datasets (loaded and checked once), the normalisation and the noise ladder, the
reference posterior, the trained model. The stages that use them are
:class:`~invdiff.experiment.run.Experiment`'s, so one ``invdiff run`` builds each component
once.

One reuse rule: a result on disk is reused when the fingerprint
(:func:`invdiff.integrity.fingerprint`) of everything that determines it equals the one
recorded with it: the simulation settings for data (``meta["signature"]``), the experiment
less its output and sampling sections for a model (:func:`training_key`), the checkpoint's
bytes and the sampling settings for samples (:meth:`ExperimentParts.samples_key`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from invdiff import plugins
from invdiff.errors import CheckpointError, ConfigError, DataError
from invdiff.experiment.config import ComponentSpec, ExperimentConfig
from invdiff.integrity import file_sha256, fingerprint

TEST_SEED_OFFSET = 104_729  # test pairs use another master seed than training pairs
#: sections of an experiment that do not change what training produces
NOT_TRAINING = ("output", "name", "sampling")


@dataclass(frozen=True)
class RunPaths:
    """Where each stage of an experiment reads and writes, below ``out``."""

    out: Path

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def train(self) -> Path:
        return self.data / "train.npz"

    @property
    def test(self) -> Path:
        return self.data / "test.npz"

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    @property
    def final(self) -> Path:
        return self.checkpoints / "final.pt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def history(self) -> Path:
        return self.out / "training.json"

    @property
    def posterior(self) -> Path:
        return self.out / "posterior.npz"

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.json"

    @property
    def figures(self) -> Path:
        return self.out / "figures"

    @property
    def references(self) -> Path:
        return self.out / "references"

    def dataset(self, which: str) -> Path:
        """``train`` or ``test``."""
        return {"train": self.train, "test": self.test}[which]


def training_key(experiment: dict[str, Any] | None) -> str:
    """The fingerprint of what a training run depends on: the experiment (JSON) less the
    sections in :data:`NOT_TRAINING`."""
    return fingerprint({k: v for k, v in (experiment or {}).items() if k not in NOT_TRAINING})


def with_progress(kind: str, name: str, params: dict[str, Any], progress: bool) -> dict:
    """``params`` with the progress switch added, for a component whose parameters have one."""
    model = plugins.get_registry().get(kind, name).params
    if model is not None and "progress" in model.model_fields:
        params = {**params}
        params.setdefault("progress", progress)
    return params


class ExperimentParts:
    """The parts of one experiment config and its run folder, each built once (module
    docstring); :class:`~invdiff.experiment.run.Experiment` adds the stages.

    cfg: a validated :class:`~invdiff.experiment.config.ExperimentConfig`.
    progress: progress bars for the heavy work. say: one line per reused stage (or None).
    """

    def __init__(self, cfg: ExperimentConfig, progress: bool = True,
                 say: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.paths = RunPaths(cfg.out_dir)
        self.progress = progress
        self.say = say or (lambda message: None)
        self._datasets: dict[str, Any] = {}
        self._model: Any = None  # the trained model, once trained or loaded

    # -- components ----------------------------------------------------------------------
    @cached_property
    def components(self) -> tuple[Any, Any, Any]:
        """Prior, forward model and noise model of the config."""
        p = self.cfg.problem
        return tuple(plugins.create(kind, spec.name, **spec.params) for kind, spec in (
            ("prior", p.prior), ("forward_model", p.forward_model),
            ("noise_model", p.noise_model)))

    @cached_property
    def sampler(self) -> Any:
        """The config's sampler (its progress bar on rank 0 only)."""
        from invdiff.training import distributed

        s = self.cfg.sampling.sampler
        show = self.progress and distributed.context().is_main
        return plugins.create("sampler", s.name,
                              **with_progress("sampler", s.name, dict(s.params), show))

    @cached_property
    def reference_spec(self) -> ComponentSpec | None:
        """``sampling.reference`` if the config names one (``"none"``: no reference), else the
        reference the prior names (its ``reference`` attribute)."""
        spec = self.cfg.sampling.reference
        if spec is not None:
            return None if spec.name == "none" else spec
        name = getattr(self.components[0], "reference", None)
        return ComponentSpec(name=name) if name else None

    # -- data ----------------------------------------------------------------------------
    def simulation_settings(self, which: str) -> dict[str, Any]:
        """The settings ``simulate`` is called with for ``which`` ("train" or "test"); the
        fingerprint of the same values is the dataset's ``meta["signature"]``."""
        d = self.cfg.data
        n, seed = ((d.n_train + d.n_val, d.seed) if which == "train"
                   else (d.n_test, d.seed + TEST_SEED_OFFSET))
        return {"n": n, "chunk_size": d.chunk_size, "seed": seed,
                "spec": self.cfg.problem.model_dump(mode="json")}

    def _simulate_one(self, which: str) -> Any:
        from invdiff.data.simulation import simulate

        d = self.cfg.data
        ds = simulate(*self.components, workers=d.workers, path=self.paths.dataset(which),
                      progress=self.progress, executor=d.executor, scheduler=d.scheduler,
                      security=d.security,  # safety: TLS to the Dask cluster (data.security)
                      **self.simulation_settings(which))
        self._datasets.pop(which, None)  # read back (and checked) from the file when used
        return ds

    def dataset(self, which: str) -> Any:
        """The ``which`` dataset of the run folder, loaded and checked once: refused unless
        its signature is this config's (data of another prior, size or seed would otherwise
        be trained on or scored silently); simulated first where missing."""
        if which not in self._datasets:
            if not (self.paths.train.exists() and self.paths.test.exists()):
                self.simulate()
            self._datasets[which] = self._checked_dataset(which)
        return self._datasets[which]

    def _checked_dataset(self, which: str) -> Any:
        from invdiff.data.dataset import load_dataset
        from invdiff.data.simulation import simulation_signature

        path = self.paths.dataset(which)
        ds = load_dataset(path)
        want = self.simulation_settings(which)
        have = ds.meta.get("signature")
        if have is None:
            warnings.warn(f"{path} records no simulation signature (not written by invdiff "
                          f"simulate); its settings cannot be checked against the config",
                          stacklevel=3)
        elif have != simulation_signature(**want):
            differ = _differences(want, {k: ds.meta.get("n_requested" if k == "n" else k)
                                         for k in want})
            raise DataError(
                f"{path} was simulated with other settings than this config ({differ}); use "
                f"another output folder (--out), or delete {path.parent} and rerun "
                f"`invdiff simulate CONFIG` to simulate data for these settings"
            )
        return ds

    @cached_property
    def training_data(self) -> tuple[Any, Any]:
        """``(train, val)``: the training file split as ``data.n_val`` says (val None for 0),
        each checked once for finite, consistent pairs."""
        from invdiff.training.setup import check_data

        full = self.dataset("train")
        n_val = self.cfg.data.n_val
        train, val = full.split(n_val) if n_val else (full, None)
        for name, ds in (("train", train), ("val", val)):
            if ds is not None:
                check_data(None, ds, name, self.cfg.training.masking)
        return train, val

    # -- training ------------------------------------------------------------------------
    @cached_property
    def normalization(self) -> Any:
        """The normalisation the net trains in (fitted once on the training split)."""
        from invdiff.training.setup import training_normalization

        return training_normalization(self.training_data[0], self.cfg.training)

    @cached_property
    def ladder(self) -> tuple[Any, list[str]]:
        """The noise ladder and its reasoning (:func:`make_ladder`), sized for this config's
        sampler."""
        from invdiff.params import DEFAULT_STEPS_PER_LEVEL

        steps = int(getattr(self.sampler, "steps_per_level", DEFAULT_STEPS_PER_LEVEL))
        return make_ladder(self.cfg, self.training_data[0], steps, self.normalization)

    def build_net(self) -> tuple[Any, dict[str, Any]]:
        """The config's score net for the data's shapes (:func:`build_net`)."""
        ds = self.dataset("train")
        return build_net(self.cfg, ds.x_shape, ds.y_shape)

    def is_trained(self) -> bool:
        """Whether ``final.pt`` finished this config's training: its experiment has this
        config's :func:`training_key` and all ``training.steps`` are done (or early stopping
        ended the run)."""
        from invdiff.training.checkpoint import load_checkpoint

        if not (self.paths.final.is_file() and self.paths.history.is_file()):
            return False
        try:
            ckpt = load_checkpoint(self.paths.final)
        except CheckpointError:
            return False  # unreadable: train again (resuming from last.pt where possible)

        stopped = json.loads((ckpt.get("training") or {}).get("early_stopped", "null"))
        done = int(ckpt["step"]) == self.cfg.training.steps or stopped is not None
        return done and training_key(ckpt["experiment"]) == training_key(self.experiment_json)

    @property
    def experiment_json(self) -> dict[str, Any]:
        return self.cfg.model_dump(mode="json")

    # -- sampling ------------------------------------------------------------------------
    def model(self, checkpoint: str | Path | None = None, source: str = "CONFIG",
              sha256: str | None = None) -> Any:
        """The trained model: the one this experiment just trained, else ``checkpoint``
        (default ``final.pt``) loaded on the config's device (this rank's GPU under
        torchrun); ``sha256``: the bytes the file must have (hashed before, see
        :func:`~invdiff.training.checkpoint.load_checkpoint`)."""
        import torch

        from invdiff.training import distributed
        from invdiff.training.checkpoint import load_model

        if checkpoint is None and self._model is not None:
            return self._model
        ckpt = Path(checkpoint) if checkpoint else self.paths.final
        if not ckpt.exists():
            raise CheckpointError(f"no trained model at {ckpt}; run `invdiff train {source} "
                                  f"--out {self.cfg.out_dir}` first")
        device = torch.device(self.cfg.training.device)
        ctx = distributed.setup(device)  # joins the process group under torchrun
        model = load_model(ckpt, device=distributed.device_for(device, ctx),
                           sha256=sha256)  # safety: loaded from the bytes that were hashed
        if checkpoint is None:
            self._model = model
        return model

    def samples_key(self, checkpoint: Path, sha256: str | None = None) -> str:
        """The fingerprint of what the held-out samples depend on: the checkpoint's bytes
        (their ``sha256``, hashed here unless given) and the sampling settings."""
        digest = sha256 if sha256 is not None else file_sha256(checkpoint)
        return fingerprint(digest, self.cfg.sampling.model_dump(mode="json"))

    def calibration(self, model: Any, checkpoint: Path, sha256: str | None) -> Any:
        """The spread calibration of ``model`` (the bytes ``sha256`` of ``checkpoint``) for
        this config's sampling settings: the one stored beside the checkpoint
        (``calibration-SAMPLER.json``) if it was fitted for them, else fitted now on the first
        ``sampling.calibration_pairs`` validation pairs and stored
        (:func:`invdiff.evaluation.recalibration.load_or_fit`). None when
        ``calibration_pairs`` is 0, when there is no validation split, and on torchrun ranks
        other than 0."""
        from invdiff.evaluation.recalibration import calibration_path, fitted_for, load_or_fit
        from invdiff.training import distributed

        s, val = self.cfg.sampling, self.training_data[1]
        if not s.calibration_pairs or val is None or len(val) < 2:
            return None
        k = min(s.calibration_pairs, len(val))
        sha = sha256 if sha256 is not None else file_sha256(checkpoint)
        record = fitted_for(sha, s.sampler.name, dict(s.sampler.params), s.n_samples,
                            s.seed, k)
        return load_or_fit(calibration_path(checkpoint.parent, s.sampler.name), record, model,
                           (val.x[:k], val.y[:k]), sampler=self.sampler, threads=s.threads,
                           write=distributed.context().is_main)

    def reference(self, y: Any, y_clean: Any = None) -> tuple[Any, str]:
        """The reference posterior of measurements ``y`` (chains cached under
        ``references/``), and a note when the prior's own reference does not fit this problem
        (a reference the config names must fit: that is an error)."""
        from invdiff.evaluation.references import reference_on

        spec = self.reference_spec
        if spec is not None:
            spec = spec.model_copy(update={"params": with_progress(
                "reference", spec.name, dict(spec.params), self.progress)})
        try:
            return reference_on(spec, self.components, y, y_clean,
                                cache=self.paths.references), ""
        except ConfigError as exc:
            if self.cfg.sampling.reference is not None:
                raise ConfigError(f"sampling.reference: {exc}") from None
            return None, str(exc)


def make_ladder(cfg: ExperimentConfig, train: Any, steps_per_level: int | None = None,
                normalization: Any = None) -> tuple[Any, list[str]]:
    """The noise ladder of ``cfg`` for the training pairs ``train``, and its reasoning: config
    values where set, NCSNv2 heuristics for the rest, on x in the units the net trains in
    (``normalization``, fitted here if not given). ``steps_per_level``: T of the step rule
    (the sampler's Langevin steps per level; default the rule's own)."""
    from invdiff.params import DEFAULT_STEPS_PER_LEVEL
    from invdiff.sampling.sigmas import geometric, suggest
    from invdiff.training.setup import check_data, training_normalization

    # before the ladder measures x (checked once per dataset)
    check_data(None, train, "train", cfg.training.masking)
    lad = cfg.ladder
    norm = normalization or training_normalization(train, cfg.training)
    sug = suggest(norm.normalize_x(train.x), sigma_L=lad.sigma_L,
                  steps_per_level=steps_per_level or DEFAULT_STEPS_PER_LEVEL)
    sigma_1 = lad.sigma_1 if lad.sigma_1 is not None else sug.sigma_1
    n_levels = lad.n_levels if lad.n_levels is not None else sug.n_levels
    reasoning = list(sug.reasoning)
    if lad.sigma_1 is not None or lad.n_levels is not None:
        reasoning.append(f"config sets sigma_1 = {sigma_1:.4g}, L = {n_levels}")
    return geometric(sigma_1, lad.sigma_L, n_levels), reasoning


def build_net(cfg: ExperimentConfig, x_shape: tuple, y_shape: tuple
              ) -> tuple[Any, dict[str, Any]]:
    """The score net of ``cfg`` for these shapes, and the spec that rebuilds it. Initial
    weights come from torch's global generator, seeded here from the config (without
    disturbing the caller's stream): two fresh runs of a config are identical. Under
    ``training.masking`` the net's y has one channel more than the measurement: its mask
    (:func:`invdiff.data.masking.masked_input`)."""
    import torch

    if cfg.training.masking:
        y_shape = (int(y_shape[0]) + 1, *y_shape[1:])
    params = {**cfg.net.params, "x_shape": list(x_shape), "y_shape": list(y_shape)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.training.seed)
        net = plugins.create("score_net", cfg.net.name, **params)
    return net, {"name": cfg.net.name, "params": params}


def _differences(want: Any, have: Any, prefix: str = "") -> str:
    """``key: old -> new`` for the leaves that differ between two nested dicts (at most 3)."""
    if isinstance(want, dict) and isinstance(have, dict):
        items = [_differences(want.get(k), have.get(k), f"{prefix}{k}.")
                 for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
        return "; ".join([i for i in items if i][:3])
    key = prefix.rstrip(".")
    key = "problem." + key[5:] if key.startswith("spec.") else key
    return f"{key}: data have {have!r}, config has {want!r}"
