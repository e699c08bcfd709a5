"""The peer: sbi's neural posterior score estimation (NPSE; Geffner et al. 2023, Sharrock et al.
2024) on the same simulated pairs the cSDM trained on, sampled on the same held-out
measurements and scored with the same metrics.

NPSE here is sbi's default: an MLP score of the flattened x (theta) given the flattened y,
variance-exploding SDE, Euler-Maruyama reverse sampling with ``peer.steps`` steps. It is an
optional dependency: without ``sbi`` the study records why the row is missing.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from invdiff.evaluation.score import score

from .preset import Preset
from .runner import StudyResult, StudyRuns, held_out_set, problem_reference


class _NoTracker:
    """sbi's tracker protocol, doing nothing (its default writes TensorBoard logs to cwd)."""

    log_dir = None

    def log_metric(self, *args: Any, **kwargs: Any) -> None: ...
    def log_metrics(self, *args: Any, **kwargs: Any) -> None: ...
    def log_params(self, *args: Any, **kwargs: Any) -> None: ...
    def add_figure(self, *args: Any, **kwargs: Any) -> None: ...
    def flush(self) -> None: ...


def sbi_available() -> str | None:
    """None if sbi's NPSE can be imported, else why not."""
    try:
        from sbi.inference import NPSE  # noqa: F401
    except ImportError as exc:
        return (f"sbi NPSE skipped: sbi is not importable ({exc}). It is optional: "
                f"`pip install sbi` (check first with `pip install --dry-run sbi` that it keeps "
                f"your torch).")
    return None


def run_peer(preset: Preset, result: StudyResult, log: Callable[[str], None]) -> str:
    """Train NPSE on the peer problem's simulations, add its row; returns a note for the report."""
    why = sbi_available()
    if why is not None:
        return why
    import sbi
    from sbi.inference import NPSE

    spec = preset.peer
    level = preset.problems[spec.problem].noise_levels[0]
    runs = StudyRuns(preset, progress=False)
    train = runs.get(spec.problem, level).dataset("train")
    h = held_out_set(runs, spec.problem, level)
    ref = problem_reference(runs, h)
    torch.manual_seed(preset.seed)
    t0 = time.perf_counter()
    inf = NPSE(prior=None, sde_type="ve", device=preset.device, show_progress_bars=False,
               tracker=_NoTracker())
    inf.append_simulations(train.x.flatten(1).float(), train.y.flatten(1).float())
    inf.train(max_num_epochs=spec.max_epochs, training_batch_size=spec.batch_size)
    with warnings.catch_warnings():  # prior=None is deliberate: sbi's improper prior warns
        warnings.filterwarnings("ignore", message="The passed prior has no support")
        post = inf.build_posterior()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = preset.samples_for(spec.problem)
    samples = torch.stack([
        post.sample((n,), x=y.flatten().float().to(preset.device),
                    steps=spec.steps, show_progress_bars=False, reject_outside_prior=False)
        for y in h.y]).cpu().reshape(len(h.y), n, *h.x.shape[1:])
    seconds = time.perf_counter() - t0
    metrics, calib = score(samples, h.x, ref, h.components, preset.calibration_levels,
                           preset.rank_bins)
    metrics.update(nfe=spec.steps, seconds=seconds / len(h.x),
                   n_test=metrics.pop("n_measurements"))
    cell = {"problem": spec.problem, "net": "sbi-npse-mlp", "sampler": "sbi-euler-maruyama",
            "noise_param": preset.problems[spec.problem].noise_param, "noise_train": level,
            "noise_test": level, "weights": "", "train_seconds": train_s, "train_steps": None}
    row = result.add(cell, ref, metrics, calib)
    log(f"peer sbi {sbi.__version__} NPSE: rmse {row['rmse_truth']:.4g}, "
        f"cov90 {row['coverage_90']:.2f}, {row['seconds']:.3g} s/measurement")
    return (f"sbi {sbi.__version__} NPSE (MLP, VE SDE) trained on the same {len(train)} "
            f"simulated pairs (at most {spec.max_epochs} epochs), {spec.steps} sampling steps.")
