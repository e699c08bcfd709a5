"""Run the study matrix: train each (problem, noise level, net) once, sample each cell.

A cell is (problem, net, sampler, noise_train, noise_test). Training and data go through the
core pipeline's resumable stages (``run_simulate``, ``run_train``) in ``preset.runs``:

```
<runs>/<problem>/noise-<L>/data/*.npz            simulated once per level, shared by the nets
<runs>/<problem>/noise-<L>/<net>/checkpoints/    the pipeline run of one net (data linked in)
<runs>/<problem>/noise-<L>/<net>/study/*.json    finished cells (skipped on a rerun)
<runs>/<problem>/references/noise-<L>/*.npz     MCMC reference chains, shared by every cell
```
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from invdiff.evaluation.calibration import calibration_summary
from invdiff.evaluation.metrics import sample_metrics
from invdiff.evaluation.references import HeldOut, Reference, held_out, reference_on
from invdiff.experiment import stages as pipeline
from invdiff.io import atomic_write_text
from invdiff.sampling.posterior import sample_posterior
from invdiff.training.checkpoint import load_model

from .preset import Preset


@dataclass
class StudyResult:
    """Rows of ``results.csv`` (one per cell), calibration per cell, trainings, notes."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    trainings: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, cell: dict[str, Any], ref: Reference | None, metrics: dict[str, Any],
            calib: dict[str, Any]) -> dict[str, Any]:
        """Record one cell: ``cell`` names it (problem, net, sampler, noise_param,
        noise_train, noise_test and any extra columns); returns its row."""
        row = {**cell, "reference": ref.kind if ref else "",
               "n_ref": len(ref.index) if ref else 0,
               "ref_seconds": ref.seconds if ref else None,
               "ref_sampled": bool(ref and ref.info.get("sampled")), **metrics}
        self.rows.append(row)
        key = "/".join([cell["problem"], cell["net"], cell["sampler"],
                        f"{cell['noise_train']:g}", f"{cell['noise_test']:g}"])
        self.calibration[key] = calib
        return row


def link_data(src: Path, dst: Path) -> None:
    """Make the simulated pairs of ``src`` visible in the run folder ``dst`` (hard links,
    copies where the file system has none), so each net trains on the same data."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.npz"):
        target = dst / f.name
        if not target.exists():
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)


def use_ema(choice: str, history: Path) -> bool:
    """True for the EMA weights; ``auto`` takes the lower final validation loss."""
    if choice != "auto":
        return choice == "ema"
    last = json.loads(history.read_text())["history"][-1]
    raw, ema = last.get("val_loss"), last.get("val_loss_ema")
    return raw is None or ema is None or ema <= raw


def train_net(cfg: Any, progress: bool) -> dict[str, Any]:
    """The pipeline's training summary of ``cfg``: read back when an earlier run finished all
    its steps with this very experiment (``run_train`` would change nothing), else from
    ``run_train``, which resumes, or refuses a checkpoint of other settings with an error that
    names them (a changed recipe never reuses a model trained with the old one)."""
    if pipeline.is_trained(cfg):
        return json.loads(pipeline.output_paths(cfg)["history"].read_text())
    return pipeline.run_train(cfg, progress=progress)


def train_level(preset: Preset, problem: str, level: float, progress: bool
                ) -> dict[str, dict[str, Any]]:
    """Simulate the data of one training level and train every net on it (both resume)."""
    data_cfg = preset.experiment(problem, level)
    pipeline.run_simulate(data_cfg, progress=progress)
    out = {}
    for net in preset.nets:
        cfg = preset.experiment(problem, level, net)
        link_data(data_cfg.out_dir / "data", cfg.out_dir / "data")
        summary = train_net(cfg, progress)
        out[net] = {"problem": problem, "net": net, "noise_train": level,
                    "steps": summary["steps"], "seconds": summary["seconds"],
                    "parameters": summary["parameters"], "n_levels": summary["n_levels"],
                    "val_loss_ema": summary["val_loss_ema"]}
    return out


def cell_key(preset: Preset, sampler: str, h: HeldOut, cfg: Any, ema: bool) -> str:
    """A digest of everything a cell's numbers depend on (a changed input reruns the cell).
    The model enters through its experiment config: training is deterministic for a config
    and its step count (``Trainer.fit`` resumes bit-identically)."""
    spec = preset.problems[h.problem].reference
    blob = json.dumps({"sampler": sampler, "params": preset.samplers[sampler],
                       "n": preset.samples_for(h.problem), "seed": preset.seed, "test": h.level,
                       "experiment": cfg.model_dump(mode="json"), "ema": ema,
                       "ref": spec if isinstance(spec, str | None) else spec.model_dump(),
                       "levels": preset.calibration_levels, "bins": preset.rank_bins,
                       "device": preset.device}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def score_samples(preset: Preset, samples: torch.Tensor, h: HeldOut, ref: Reference | None,
                  nfe: int, seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics and calibration of posterior samples ``(M, n, *x_shape)`` (CPU) of ``h``;
    ``seconds``: sampling wall time for all M measurements."""
    metrics = sample_metrics(samples, h.x, ref)
    calib = calibration_summary(samples, h.x, preset.calibration_levels, preset.rank_bins)
    metrics.update(nfe=nfe, seconds=seconds / len(h.x), n_test=len(h.x),
                   n_samples=int(samples.shape[1]), sbc_chi2_p=calib["sbc_chi2_p"],
                   sbc_ks=calib["sbc_ks"], tarp_dev=calib["tarp_dev"])
    return metrics, calib


def run_cell(preset: Preset, model: Any, sampler: str, h: HeldOut, ref: Reference | None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample the held-out posteriors with one sampler; metrics and calibration."""
    params = {"progress": False, **preset.samplers[sampler]}
    dev = model.sigmas.device
    gen = torch.Generator(device=dev).manual_seed(preset.seed)
    post = sample_posterior(model, h.y.to(dev), sampler=sampler, n=preset.samples_for(h.problem),
                            generator=gen, **params)
    return score_samples(preset, post.samples.detach().float().cpu(), h, ref, post.nfe,
                         post.seconds)


def held_out_set(preset: Preset, problem: str, level: float) -> HeldOut:
    """The held-out set of ``problem`` at test noise ``level``: the pairs simulated at the
    problem's first training level, noised at ``level``."""
    spec = preset.problems[problem]
    return held_out(preset.experiment(problem, spec.noise_levels[0]),
                    preset.experiment(problem, level), level, problem)


def problem_reference(preset: Preset, h: HeldOut) -> Reference | None:
    """The problem's reference posterior on the held-out set ``h`` (chains cached per level
    under ``<runs>/<problem>/references``)."""
    spec = preset.reference_spec(h.problem, h.components[0])
    cache = Path(preset.runs) / h.problem / "references" / f"noise-{h.level:g}"
    return reference_on(spec, h.components, h.y, h.y_clean, cache)


def run_problem(preset: Preset, problem: str, result: StudyResult,
                log: Callable[[str], None], progress: bool) -> None:
    """Train the problem's models, then fill its cells into ``result``."""
    spec = preset.problems[problem]
    trained = {level: train_level(preset, problem, level, progress)
               for level in spec.noise_levels}
    result.trainings += [t for per_net in trained.values() for t in per_net.values()]
    sets: dict[float, tuple[HeldOut, Reference | None]] = {}
    for noise_train, noise_test in preset.cells(problem):
        if noise_test not in sets:
            h = held_out_set(preset, problem, noise_test)
            sets[noise_test] = (h, problem_reference(preset, h))
        h, ref = sets[noise_test]
        for net in preset.nets:
            cfg = preset.experiment(problem, noise_train, net)
            paths = pipeline.output_paths(cfg)
            ema = use_ema(preset.weights, paths["history"])
            model = None
            for sampler in preset.samplers:
                key = cell_key(preset, sampler, h, cfg, ema)
                cache = cfg.out_dir / "study" / f"{sampler}-test{noise_test:g}-{key}.json"
                if cache.exists():
                    metrics, calib = json.loads(cache.read_text())
                else:
                    if model is None:
                        model = load_model(paths["final"], device=preset.device, ema=ema)
                    metrics, calib = run_cell(preset, model, sampler, h, ref)
                    atomic_write_text(cache, json.dumps([metrics, calib]))
                cell = {"problem": problem, "net": net, "sampler": sampler,
                        "noise_param": spec.noise_param, "noise_train": noise_train,
                        "noise_test": noise_test, "weights": "ema" if ema else "raw",
                        "train_seconds": trained[noise_train][net]["seconds"],
                        "train_steps": trained[noise_train][net]["steps"]}
                row = result.add(cell, ref, metrics, calib)
                log(f"{problem} {net} {sampler} train {noise_train:g} test {noise_test:g}: "
                    f"rmse {row['rmse_truth']:.4g}, cov90 {row['coverage_90']:.2f}, "
                    f"{row['seconds']:.3g} s/measurement")
