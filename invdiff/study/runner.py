"""Run the study matrix: train each (problem, noise level, net) once, sample each cell.

A cell is (problem, net, sampler, noise_train, noise_test). Each (problem, level, net) is one
:class:`~invdiff.experiment.run.Experiment` (:class:`StudyRuns` builds each once), trained
through the run layer's resumable stages in ``preset.runs``, and every cell is sampled and
scored by :func:`~invdiff.evaluation.score.sample_and_score`, the code path of
``invdiff sample``, with the same seeding rule:

```
<runs>/<problem>/noise-<L>/data/*.npz            simulated once per level, shared by the nets
<runs>/<problem>/noise-<L>/<net>/checkpoints/    the run of one net (data linked in)
<runs>/<problem>/noise-<L>/<net>/study/*.json    finished cells (skipped on a rerun)
<runs>/<problem>/references/noise-<L>/*.npz     reference chains, shared by every cell
```

Held-out sets (:func:`held_out_set`): at the problem's first training level, the held-out
pairs exactly as simulated (``data/test.npz``: the measurements ``invdiff sample`` scores);
at any other test level L, the same truths and clean measurements with fresh measurement noise
at L, drawn with one seeding rule, seed = 7919 + round(1e6 L). Every net, sampler and
training level is thus tested on the same truths, and a model trained at L' != L sees exactly
the measurements a model trained at L sees.

Measurements with gaps (``problems.NAME.missing``, e.g. ``["random-0.3", "block-0.25"]``): at
each training level the held-out measurements are also sampled with NaN at the entries each
scenario hides (:func:`invdiff.data.masking.apply_scenario`: measurement m's gap from a
generator seeded by (60013, m), the same for every net and sampler); the reference is computed
on the same gappy measurements, and the cells carry the scenario in the ``missing`` column
("none" for complete measurements).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from invdiff.data.masking import apply_scenario
from invdiff.errors import DataError
from invdiff.evaluation.references import Reference, reference_on
from invdiff.evaluation.score import Scored, sample_and_score
from invdiff.experiment.run import Experiment
from invdiff.integrity import content_digest, file_sha256, fingerprint
from invdiff.io import atomic_write_text
from invdiff.training.checkpoint import load_model

from .preset import Preset

HELD_OUT_SEED = 7_919  # the held-out noise draws at another level: seed + round(1e6 L)
#: the version of the cell rule: a cell's numbers depend on it (seeding, held-out sets)
CELL_RULE = "measurement-seeded/2"  # 2: with the memorisation check


@dataclass
class HeldOut:
    """Held-out pairs at one test noise level: x, y, y_clean ``(M, ...)``, physical units."""

    problem: str
    level: float
    x: torch.Tensor
    y: torch.Tensor
    y_clean: torch.Tensor
    components: tuple[Any, Any, Any]  # prior, forward model, noise model at this level
    missing: str = "none"  # the gap scenario: y is NaN where it hides entries


class StudyRuns:
    """The experiments of a study, each (problem, level, net) built once; ``net=None`` is a
    level's data run."""

    def __init__(self, preset: Preset, progress: bool = True) -> None:
        self.preset, self.progress = preset, progress
        self._runs: dict[tuple[str, float, str | None], Experiment] = {}

    def get(self, problem: str, level: float, net: str | None = None) -> Experiment:
        key = (problem, float(level), net)
        if key not in self._runs:
            self._runs[key] = Experiment(self.preset.experiment(problem, level, net),
                                         self.progress)
        return self._runs[key]


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
        row = {"missing": "none", **cell, "reference": ref.kind if ref else "",
               "n_ref": len(ref.index) if ref else 0,
               "ref_seconds": ref.seconds if ref else None,
               "ref_sampled": bool(ref and ref.info.get("sampled")), **metrics}
        self.rows.append(row)
        key = "/".join([cell["problem"], cell["net"], cell["sampler"],
                        f"{cell['noise_train']:g}", f"{cell['noise_test']:g}"])
        if row["missing"] != "none":
            key += f" {row['missing']}"
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


def train_net(exp: Experiment) -> dict[str, Any]:
    """The training summary of ``exp``: read back when an earlier run finished all its steps
    with this very experiment (training would change nothing), else from
    :meth:`Experiment.train`, which resumes, or refuses a checkpoint of other settings with an
    error that names them (a changed recipe never reuses a model trained with the old one)."""
    if exp.is_trained():
        return json.loads(exp.paths.history.read_text())
    return exp.train()


def train_level(runs: StudyRuns, problem: str, level: float) -> dict[str, dict[str, Any]]:
    """Simulate the data of one training level and train every net on it (both resume)."""
    data = runs.get(problem, level)
    data.simulate()
    out = {}
    for net in runs.preset.runs_of():
        exp = runs.get(problem, level, net)
        link_data(data.paths.data, exp.paths.data)
        summary = train_net(exp)
        out[net] = {"problem": problem, "net": net, "noise_train": level,
                    "objective": exp.cfg.training.objective,
                    "steps": summary["steps"], "seconds": summary["seconds"],
                    "parameters": summary["parameters"], "n_levels": summary["n_levels"],
                    "val_loss_ema": summary["val_loss_ema"]}
    return out


def cell_key(preset: Preset, sampler: str, h: HeldOut, exp: Experiment, ema: bool) -> str:
    """The fingerprint of everything a cell's numbers depend on (a changed input reruns the
    cell). The model enters through its experiment config: training is deterministic for a
    config and its step count (``Trainer.fit`` resumes bit-identically)."""
    spec = {"sampler": sampler, "params": preset.samplers[sampler],
            "n": preset.samples_for(h.problem), "seed": preset.seed,
            "test": h.level, "experiment": exp.experiment_json, "ema": ema,
            "levels": preset.calibration_levels, "bins": preset.rank_bins,
            "device": preset.device, "rule": CELL_RULE}
    if h.missing != "none":  # complete cells keep the keys they always had
        spec["missing"] = h.missing
    if preset.calibration_pairs:  # so do uncalibrated ones
        from invdiff.evaluation.recalibration import CALIBRATION_RULE

        spec["calibration"] = [preset.calibration_pairs, CALIBRATION_RULE]
    return fingerprint(spec, length=12)


def cell_calibration(preset: Preset, exp: Experiment, model: Any, sampler: str,
                     problem: str) -> Any:
    """The spread calibration of a study model for ``sampler``: the one stored beside its
    checkpoint for these settings, or fitted now on the first ``preset.calibration_pairs``
    validation pairs (the rule of ``invdiff sample``, which thus shares it). None when the
    preset asks for none."""
    from invdiff.evaluation.recalibration import calibration_path, fitted_for, load_or_fit

    val = exp.training_data[1]
    if not preset.calibration_pairs or val is None or len(val) < 2:
        return None
    k, n = min(preset.calibration_pairs, len(val)), preset.samples_for(problem)
    params = dict(preset.samplers[sampler])
    record = fitted_for(file_sha256(exp.paths.final), sampler, params, n, preset.seed, k)
    return load_or_fit(calibration_path(exp.paths.checkpoints, sampler), record, model,
                       (val.x[:k], val.y[:k]), sampler=sampler, progress=False, **params)


def cell_metrics(scored: Scored) -> tuple[dict[str, Any], dict[str, Any]]:
    """A cell's row numbers from :func:`sample_and_score`: ``seconds`` per measurement and
    ``n_test``, as the study reports them; and its calibration."""
    m = dict(scored.metrics)
    m.update({f"raw_{k}": v for k, v in m.pop("raw", {}).items()})
    cal = m.pop("calibration", None)
    if cal is not None:
        m.update(calibration_scale=cal["scale"], calibration_pairs=cal["n_pairs"])
    m["n_test"] = m.pop("n_measurements")
    m["seconds"] = m["seconds"] / m["n_test"]
    return m, scored.calibration


def write_cell(path: Path, metrics: dict[str, Any], calib: dict[str, Any]) -> None:
    """Write a finished cell atomically as JSON ``{"cell": [metrics, calibration],
    "checksum": ...}``, the checksum (:func:`invdiff.integrity.content_digest`) over the cell
    as it reads back from JSON."""
    cell = json.loads(json.dumps([metrics, calib]))
    atomic_write_text(path, json.dumps({"cell": cell, "checksum": content_digest(cell)}))


def read_cell(path: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(metrics, calibration)`` of a cell written by :func:`write_cell`, or None when
    there is none or it is unreadable or damaged (then it is computed again, with a warning).
    A cell without checksum (older invdiff) is used, with a warning."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if isinstance(data, list):  # written before cells carried a checksum
            metrics, calib = data
            warnings.warn(f"study cell {path} carries no checksum (written by an older "
                          f"invdiff), so damage to it cannot be detected; delete it to "
                          f"compute the cell again", stacklevel=2)
            return metrics, calib
        cell = data["cell"]
        if content_digest(cell) != data["checksum"]:
            raise ValueError("its numbers do not match the sha256 checksum written with them")
        metrics, calib = cell
        return metrics, calib
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"study cell {path} is damaged ({exc}); computing the cell again",
                      stacklevel=2)
        return None


def run_cell(preset: Preset, model: Any, sampler: str, h: HeldOut, ref: Reference | None,
             train_x: torch.Tensor | None = None, calibration: Any = None) -> Scored:
    """Sample the held-out posteriors with one sampler, scored (the path of
    ``invdiff sample``: chains of measurement m seeded by ``(preset.seed, m)``); with the
    training fields ``train_x``, the memorisation check too; with a ``calibration``
    (:func:`cell_calibration`), the calibrated posterior beside the raw one."""
    params = {"progress": False, **preset.samplers[sampler]}
    return sample_and_score(model, h.y, seed=preset.seed, sampler=sampler,
                            n=preset.samples_for(h.problem), truth=h.x, reference=ref,
                            components=h.components,
                            calibration_levels=preset.calibration_levels,
                            rank_bins=preset.rank_bins, train_x=train_x,
                            calibration=calibration, **params)


def as_runs(study: Preset | StudyRuns) -> StudyRuns:
    """A preset's runs (built afresh), or the runs given."""
    return study if isinstance(study, StudyRuns) else StudyRuns(study, progress=False)


def held_out_set(study: Preset | StudyRuns, problem: str, level: float,
                 missing: str = "none") -> HeldOut:
    """The held-out set of ``problem`` at test noise ``level``, with the gaps of scenario
    ``missing`` (module docstring)."""
    runs = as_runs(study)
    first = runs.preset.problems[problem].noise_levels[0]
    data, at_level = runs.get(problem, first), runs.get(problem, level)
    test = data.dataset("test")
    if test.y_clean is None:
        raise DataError(f"{problem}: the held-out set has no clean measurements; simulate it "
                        f"again with this version of invdiff")
    if float(level) == float(first):
        y = test.y
    else:
        g = torch.Generator().manual_seed(HELD_OUT_SEED + round(1e6 * level))
        y = at_level.components[2](test.y_clean, generator=g)
    return HeldOut(problem, level, test.x, apply_scenario(y, missing), test.y_clean,
                   at_level.components, missing)


def problem_reference(study: Preset | StudyRuns, h: HeldOut) -> Reference | None:
    """The problem's reference posterior on the held-out set ``h`` (chains cached per level
    under ``<runs>/<problem>/references``)."""
    runs = as_runs(study)
    spec = runs.get(h.problem, h.level).reference_spec
    cache = Path(runs.preset.runs) / h.problem / "references" / f"noise-{h.level:g}"
    return reference_on(spec, h.components, h.y, h.y_clean, cache)


def run_problem(preset: Preset, problem: str, result: StudyResult,
                log: Callable[[str], None], progress: bool) -> None:
    """Train the problem's models, then fill its cells into ``result``."""
    runs = StudyRuns(preset, progress)
    spec = preset.problems[problem]
    trained = {level: train_level(runs, problem, level) for level in spec.noise_levels}
    result.trainings += [t for per_net in trained.values() for t in per_net.values()]
    sets: dict[tuple[float, str], tuple[HeldOut, Reference | None]] = {}
    cells = [(train, test, "none") for train, test in preset.cells(problem)]
    cells += [(level, level, gap) for level in spec.noise_levels for gap in spec.missing]
    for noise_train, noise_test, missing in cells:
        if (noise_test, missing) not in sets:
            h = held_out_set(runs, problem, noise_test, missing)
            sets[noise_test, missing] = (h, problem_reference(runs, h))
        h, ref = sets[noise_test, missing]
        for net in preset.runs_of():
            exp = runs.get(problem, noise_train, net)
            ema = use_ema(preset.weights, exp.paths.history)
            model = None
            for sampler in preset.samplers:
                key = cell_key(preset, sampler, h, exp, ema)
                gap = "" if missing == "none" else f"-{missing}"
                cache = exp.paths.out / "study" / f"{sampler}-test{noise_test:g}{gap}-{key}.json"
                cached = read_cell(cache)
                if cached is not None:
                    metrics, calib = cached
                else:
                    if model is None:
                        model = load_model(exp.paths.final, device=preset.device, ema=ema)
                    cal = cell_calibration(preset, exp, model, sampler, problem)
                    metrics, calib = cell_metrics(run_cell(preset, model, sampler, h, ref,
                                                           exp.training_data[0].x, cal))
                    write_cell(cache, metrics, calib)
                cell = {"problem": problem, "net": net, "sampler": sampler,
                        "objective": exp.cfg.training.objective,
                        "noise_param": spec.noise_param, "noise_train": noise_train,
                        "noise_test": noise_test, "missing": missing,
                        "weights": "ema" if ema else "raw",
                        "train_seconds": trained[noise_train][net]["seconds"],
                        "train_steps": trained[noise_train][net]["steps"]}
                row = result.add(cell, ref, metrics, calib)
                log(f"{problem} {net} {sampler} train {noise_train:g} test {noise_test:g}"
                    f"{'' if missing == 'none' else ' missing ' + missing}: "
                    f"rmse {row['rmse_truth']:.4g}, cov90 {row['coverage_90']:.2f}, "
                    f"{row['seconds']:.3g} s/measurement")
