"""A trained model pointed at your own measurements: :func:`load_model` and :func:`infer`.

A checkpoint records the experiment it was trained with, so the problem (prior, forward model,
noise model) and the sampler are rebuilt from it; ``overrides`` (``KEY=VALUE``, as
``invdiff sample --set``) change the sampling settings. Each measurement's posterior comes
with two checks that need no truth:

* **out of distribution** (:mod:`invdiff.evaluation.ood`): a typicality test of the
  measurement against the training measurements, thresholds set on held-out ones (a
  ``alpha`` false-alarm rate, 1% by default). It does not depend on the network.
* **posterior predictive check** (:mod:`invdiff.evaluation.ppc`): the posterior's samples
  pushed through the model's own forward and noise models, compared with the measurement.

The training measurements come from the run folder's ``data/train.npz`` when the model is a
run folder (or a checkpoint inside one) whose data are this experiment's; otherwise
``n_reference`` pairs are simulated afresh from the recorded problem (seeded, in memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from invdiff.checks import as_batch, to_tensor
from invdiff.errors import CheckpointError, ConfigError, DataError
from invdiff.experiment.config import apply_overrides, parse_config
from invdiff.experiment.parts import ExperimentParts
from invdiff.integrity import file_sha256

__all__ = ["Inference", "infer", "load_model", "check_measurements", "stored_calibration"]

#: simulated pairs when no training data are at hand: fit / held-out split of the OOD test
N_REFERENCE = 2000
REFERENCE_SEED = 271_828


def load_model(path: str | Path, device: str | torch.device | None = None,
               ema: bool = True) -> Any:
    """The trained model of a run folder (its ``checkpoints/final.pt``) or of a checkpoint
    file, in eval mode (a :class:`~invdiff.training.model.ScoreModel` that also knows its
    ``checkpoint`` path, the file's ``checkpoint_sha256``, hashed before loading, and the
    ``experiment`` it was trained with)."""
    from invdiff.training.checkpoint import load_model as load_checkpoint_model

    p = Path(path)
    if p.is_dir():
        ckpt = p / "checkpoints" / "final.pt"
        if not ckpt.is_file():
            busy = (p / "checkpoints" / "last.pt").is_file()
            raise CheckpointError(
                f"{p} holds no finished model (no checkpoints/final.pt"
                + ("; its training has not finished: rerun `invdiff train` on its config to "
                   "complete it" if busy else "; train one with `invdiff run CONFIG --out "
                   f"{p}`") + ")")
    elif p.is_file():
        ckpt = p
    else:
        raise CheckpointError(f"{p}: no such run folder or checkpoint file")
    from invdiff.training import distributed

    dev = torch.device(device) if device is not None else torch.device("cpu")
    ctx = distributed.setup(dev)  # joins the process group under torchrun (--nproc)
    sha = file_sha256(ckpt)  # the bytes that are loaded next
    model = load_checkpoint_model(ckpt, device=distributed.device_for(dev, ctx), ema=ema)
    model.checkpoint, model.checkpoint_sha256 = ckpt, sha
    return model


def check_measurements(y: Any, y_shape: tuple[int, ...], name: str = "y",
                       masking: bool = False) -> torch.Tensor:
    """Measurements ``(C, H, W)`` or ``(B, C, H, W)`` (tensor or array) as a float batch
    ``(B, *y_shape)``; a clear :class:`DataError` for complex or non-numeric data, an empty
    array, the wrong shape and non-finite entries. ``masking``: the model was trained with
    ``training.masking``, so NaN entries (not measured) are welcome, as long as each
    measurement has a measured one (:func:`invdiff.data.masking.check_gaps`)."""
    from invdiff.data.masking import check_gaps

    t = to_tensor(y, name)
    if t.numel() == 0:
        raise DataError(f"{name} is empty; give at least one measurement of shape {y_shape}")
    if tuple(t.shape) != tuple(y_shape) and tuple(t.shape[1:]) != tuple(y_shape):
        raise DataError(f"{name} has shape {tuple(t.shape)}, but the model expects "
                        f"measurements of shape {tuple(y_shape)} (one) or (B, "
                        f"{', '.join(map(str, y_shape))}) (a batch)")
    if not t.is_floating_point():
        raise DataError(f"{name} holds {t.dtype} values; measurements must be floating-point "
                        f"(convert them, e.g. numpy's .astype('float32'))")
    t = as_batch(t, tuple(y_shape), name)
    if masking:
        return check_gaps(t, True, name)
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        where = int(bad.flatten(1).any(1).nonzero()[0])
        raise DataError(f"{name} has {int(bad.sum())} NaN or infinite entries (first in "
                        f"measurement {where}); this model was trained on complete "
                        f"measurements (training.masking is off), so every entry must be "
                        f"finite")
    return t


@dataclass
class Inference:
    """The posterior of each measurement with its checks.

    posterior: :class:`~invdiff.sampling.posterior.Posterior` (physical units, input order);
    report: JSON-able: the model's identity, the sampler, nfe, seconds and a list
    ``measurements`` of per-measurement checks; residual: ``(M, *y_shape)``, the posterior
    predictive residual map (y - mean of F(x) over the checked draws); labels: what x and y
    are physically, for figures."""

    posterior: Any
    report: dict[str, Any] = field(default_factory=dict)
    residual: torch.Tensor | None = None
    labels: dict[str, Any] | None = None  # what x and y are physically (figures)

    @property
    def measurements(self) -> list[dict[str, Any]]:
        return self.report["measurements"]


def infer(model: Any, y: Any, *, n: int | None = None, sampler: str | None = None,
          overrides: list[str] | tuple[str, ...] = (), seed: int | None = None,
          checks: bool = True, alpha: float = 0.01, ppc_draws: int = 16,
          replicates: int = 99, progress: bool = False, calibration: Any = "stored"
          ) -> Inference | None:
    """Sample the posterior of measurements ``y`` (``(C, H, W)`` or ``(B, C, H, W)``, numpy or
    torch, physical units) with a model from :func:`load_model` and check each one (module
    docstring). ``n``, ``sampler``, ``seed``: the sampling settings (default: the recorded
    experiment's); ``overrides``: further ``KEY=VALUE`` changes to the experiment, e.g.
    ``"sampling.sampler.params.steps=12"``. ``checks=False`` skips the OOD test and the PPC.
    Returns None on torchrun ranks other than 0 (their measurements went to rank 0)."""
    from invdiff.evaluation.score import sample_and_score

    parts = _parts(model, overrides, n, sampler, seed, progress)
    y = check_measurements(y, tuple(model.y_shape), masking=bool(getattr(model, "masking",
                                                                          False)))
    s = parts.cfg.sampling
    cal, cal_note = _calibration(model, parts, calibration)
    scored = sample_and_score(model, y, seed=s.seed, sampler=parts.sampler, n=s.n_samples,
                              threads=s.threads, calibration=cal or None)
    if scored is None:
        return None
    post = scored.posterior
    report = {"model": _identity(model, parts), "sampler": s.sampler.name,
              "sampler_params": dict(s.sampler.params), "n_samples": s.n_samples,
              "seed": s.seed, "nfe": post.nfe, "seconds": post.seconds,
              "calibration": cal.summary() if cal else None, "calibration_note": cal_note,
              "measurements": [{"index": m} for m in range(len(y))]}
    from invdiff.evaluation.verdicts import field_labels

    result = Inference(post, report, labels=field_labels(*parts.components[:2]))
    if checks:
        _check(result, parts, model, y, alpha, ppc_draws, replicates)
    return result


def _calibration(model: Any, parts: ExperimentParts, calibration: Any) -> tuple[Any, str]:
    """The calibration :func:`infer` applies, and a note for the report."""
    from invdiff.evaluation.recalibration import Calibration

    if isinstance(calibration, str) and calibration == "stored":
        return stored_calibration(model, parts)
    if calibration is None:
        return None, "not asked for"
    if isinstance(calibration, Calibration):
        return calibration, "given by the caller"
    raise ConfigError(f"calibration={calibration!r}: give 'stored' (the one kept beside the "
                      f"checkpoint), None (the raw posterior) or an invdiff.Calibration")


def stored_calibration(model: Any, parts: ExperimentParts) -> tuple[Any, str]:
    """The spread calibration kept beside ``model``'s checkpoint for the sampler of
    ``parts`` (``calibration-SAMPLER.json``, written by ``invdiff run``/``sample``), if it was
    fitted for this checkpoint, sampler, settings and sample count; else None. With a note
    on which, for the report."""
    from invdiff.evaluation.recalibration import Calibration, calibration_path, fitted_for

    s, ckpt = parts.cfg.sampling, getattr(model, "checkpoint", None)
    path = calibration_path(Path(ckpt).parent, s.sampler.name) if ckpt else None
    if path is None or not path.is_file():
        return None, (f"none stored for sampler {s.sampler.name!r} beside the checkpoint "
                      f"(`invdiff sample` with sampling.calibration_pairs > 0 fits one)")
    cal = Calibration.load(path)
    want = fitted_for(getattr(model, "checkpoint_sha256", None), s.sampler.name,
                      dict(s.sampler.params), s.n_samples, s.seed, 0)
    if not cal.applies_to(want):
        return None, (f"{path} was fitted for other settings ({cal.fitted_for}); not applied: "
                      f"sample with those settings, or fit one for these with `invdiff "
                      f"sample` or invdiff.calibrate")
    return cal, f"applied: {path}"


def _parts(model: Any, overrides: Any, n: int | None, sampler: str | None,
           seed: int | None, progress: bool) -> ExperimentParts:
    """The recorded experiment, with the sampling changes, rebuilt (its run folder: the
    model's, so its data serve the OOD test)."""
    if not getattr(model, "experiment", None):
        raise ConfigError("this model records no experiment (it was not trained by invdiff's "
                          "run layer), so its problem cannot be rebuilt; sample it with "
                          "invdiff.sample_posterior(model, y, sampler=...) instead")
    data = dict(model.experiment)
    changes = list(overrides)
    if sampler is not None:
        changes += [f'sampling.sampler.name="{sampler}"', "sampling.sampler.params={}"]
    if n is not None:
        changes.append(f"sampling.n_samples={int(n)}")
    if seed is not None:
        changes.append(f"sampling.seed={int(seed)}")
    data = apply_overrides(data, changes)
    ckpt = getattr(model, "checkpoint", None)
    run = Path(ckpt).parent.parent if ckpt and Path(ckpt).parent.name == "checkpoints" else None
    data.setdefault("output", {})["dir"] = str(run) if run else None
    return ExperimentParts(parse_config(data, "the model's recorded experiment"), progress)


def _identity(model: Any, parts: ExperimentParts) -> dict[str, Any]:
    p = parts.cfg.problem
    noise = p.noise_model
    return {"checkpoint": str(getattr(model, "checkpoint", "")),
            "checkpoint_sha256": getattr(model, "checkpoint_sha256", None),
            "experiment": parts.cfg.name, "prior": p.prior.model_dump(),
            "forward_model": p.forward_model.model_dump(), "noise_model": noise.model_dump(),
            "net": parts.cfg.net.model_dump(), "training_steps": parts.cfg.training.steps}


def reference_measurements(parts: ExperimentParts) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Training measurements to fit the typicality test and held-out ones to calibrate it
    (physical units), and where they came from."""
    p = parts.paths
    if p.out is not None and p.train.is_file():
        try:
            train, val = parts.training_data
        except DataError:
            pass  # data of other settings: simulate the recorded problem's instead
        else:
            if val is not None and len(val) >= 50:
                return train.y, val.y, f"{p.train} (training split / validation split)"
            if len(train) >= 200:
                k = len(train) // 4
                return train.y[k:], train.y[:k], f"{p.train} (split 3:1)"
    from invdiff.data.simulation import simulate

    ds = simulate(*parts.components, n=N_REFERENCE, seed=REFERENCE_SEED, progress=False)
    k = len(ds) // 4
    return ds.y[k:], ds.y[:k], (f"{len(ds)} pairs simulated from the recorded problem "
                                f"(seed {REFERENCE_SEED}; split 3:1)")


def _check(result: Inference, parts: ExperimentParts, model: Any, y: torch.Tensor,
           alpha: float, ppc_draws: int, replicates: int) -> None:
    """Fill each measurement's OOD verdict and posterior predictive check into ``result``."""
    from invdiff.evaluation.ood import Typicality
    from invdiff.evaluation.ppc import posterior_predictive_check

    norm = model.normalization
    fit_y, cal_y, source = reference_measurements(parts)
    test = Typicality.fit(norm.normalize_y(fit_y.float())).calibrate(
        norm.normalize_y(cal_y.float()), alpha)
    judged = test.assess(norm.normalize_y(y.float()))  # gaps: on the measured entries
    scores, pct, flags = judged["score"], judged["percentile"], judged["flag"]
    g = torch.Generator().manual_seed(parts.cfg.sampling.seed)
    samples = result.posterior.samples.detach().cpu()
    scale = norm._view(norm.y_std, y).cpu()
    ppc = posterior_predictive_check(y.cpu(), samples, parts.components[1],  # NaN: skipped
                                     parts.components[2], scale, ppc_draws, replicates, g)
    result.residual = ppc.residual
    result.report["checks"] = {
        "out_of_distribution": f"two-sided typicality test in normalised y space against "
                               f"{source}; flagged outside the held-out [{alpha / 2:g}, "
                               f"{1 - alpha / 2:g}] quantiles (false-alarm rate {alpha:g})",
        "ppc": f"sampled posterior predictive p-value of T = ||residual / y_scale||^2, "
               f"{replicates} replicates of one posterior draw; classical p-value over "
               f"{ppc.forward_evaluations} draws ({ppc.forward_evaluations} forward-model "
               f"evaluations per measurement)"}
    for m, row in enumerate(result.measurements):
        row.update({
            "out_of_distribution": bool(flags[m]), "ood_score": float(scores[m]),
            "ood_threshold": [float(judged["lower"][m]), float(judged["upper"][m])],
            "ood_percentile": float(pct[m]),
            "ppc_pvalue": float(ppc.pvalue[m]),
            "ppc_pvalue_classic": float(ppc.pvalue_classic[m]),
            "ppc_discrepancy": _finite(ppc.discrepancy[m]),
            "ppc_replicated_discrepancy": float(ppc.replicated_discrepancy[m]),
            "ppc_failed_draws": int(ppc.failed_draws[m])})
        if row["ppc_failed_draws"]:
            row["ppc_error"] = ppc.error
        row["verdict"] = verdict(row)


def _finite(v: torch.Tensor) -> float | None:
    """A number for report.json (strict JSON has no infinity: None stands for it)."""
    return float(v) if bool(torch.isfinite(v)) else None


def verdict(row: dict[str, Any], level: float = 0.01) -> str:
    """One line on a checked measurement."""
    if row["out_of_distribution"]:
        side = "far outside" if row["ood_percentile"] >= 50 else "far inside"
        return (f"OUT OF DISTRIBUTION: unlike the training measurements (typicality score "
                f"{row['ood_score']:.4g}, {side} the held-out range "
                f"[{row['ood_threshold'][0]:.4g}, {row['ood_threshold'][1]:.4g}]); the "
                f"posterior is not to be trusted (other units, noise or specimen?)")
    if row.get("ppc_failed_draws"):
        return (f"POSTERIOR PREDICTIVE CHECK FAILED: {row['ppc_failed_draws']} checked "
                f"posterior draws lie outside the forward model's domain "
                f"({row['ppc_error']}); the posterior is not to be trusted")
    if row["ppc_pvalue"] <= level:
        return (f"POSTERIOR PREDICTIVE CHECK FAILED (p = {row['ppc_pvalue']:.3g}): the "
                f"posterior does not reproduce the measurement within its noise")
    return (f"ok: like the training measurements (percentile {row['ood_percentile']:.0f}), "
            f"posterior predictive p = {row['ppc_pvalue']:.2f}")
