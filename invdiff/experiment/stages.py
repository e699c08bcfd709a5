"""The stages of an experiment: simulate -> train -> sample (``run`` does all three).

Each stage works on an :class:`~invdiff.experiment.run.Experiment`, which owns the components
and the run folder (see :mod:`invdiff.experiment.run` for the layout), and holds the folder's
lock while it works. ``run_simulate(cfg)`` ... ``run_run(cfg)`` are the same stages for a
config, for scripts: each builds its own Experiment.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invdiff.experiment.config import ExperimentConfig
from invdiff.experiment.lock import stage_lock
from invdiff.experiment.run import Experiment
from invdiff.integrity import file_sha256
from invdiff.io import atomic_write_text

__all__ = ["simulate_stage", "train_stage", "sample_stage", "run_simulate", "run_train",
           "run_sample", "run_run"]


def simulate_stage(exp: Experiment) -> dict[str, Any]:
    """:meth:`Experiment.simulate`: data of this config, simulated where missing."""
    from invdiff.training import distributed

    p = exp.paths
    with stage_lock(exp.cfg.out_dir):
        if not distributed.context().is_main:
            distributed.wait_for_files(p.train, p.test)
            return {"train": str(p.train), "test": str(p.test)}
        train = exp._simulate_one("train")
        test = exp._simulate_one("test")
    return {"train": str(p.train), "n_train_val": len(train),
            "dropped": train.meta.get("dropped", 0), "test": str(p.test), "n_test": len(test)}


def train_stage(exp: Experiment) -> dict[str, Any]:
    """:meth:`Experiment.train`: fit the net (resuming ``last.pt``), write ``training.json``
    and the loss figure; returns the training summary (without the history)."""
    from invdiff.training.trainer import Trainer

    with stage_lock(exp.cfg.out_dir):
        train, val = exp.training_data
        sigmas, reasoning = exp.ladder
        net, net_spec = exp.build_net()
        trainer = Trainer(net, train, sigmas, exp.cfg.training, val=val,
                          noise_model=exp.components[2], checkpoint_dir=exp.paths.checkpoints,
                          net_spec=net_spec, experiment=exp.experiment_json,
                          progress=exp.progress, normalization=exp.normalization)
        exp._model = trainer.fit(resume=True)
        last = trainer.history[-1] if trainer.history else {}
        summary = {"steps": trainer.step, "world_size": trainer.dist.world_size,
                   "rank_batch": trainer.rank_batch, "loss_weighting": trainer.loss_weighting,
                   "seconds": last.get("seconds"), "val_loss_ema": last.get("val_loss_ema"),
                   "n_levels": len(sigmas), "sigma_1": float(sigmas[0]),
                   "sigma_L": float(sigmas[-1]), "ladder_reasoning": reasoning,
                   "parameters": sum(p.numel() for p in net.parameters())}
        if trainer.dist.is_main:  # rank 0 writes the files
            atomic_write_text(exp.paths.history,
                              json.dumps({**summary, "history": trainer.history}, indent=2))
            if exp.cfg.output.figures and trainer.history:
                from invdiff.evaluation.figures import loss_figure

                loss_figure(exp.paths.figures / "loss.png", trainer.history,
                            title=exp.cfg.name)
    return summary


def sample_stage(exp: Experiment, checkpoint: str | Path | None = None,
                 source: str = "CONFIG") -> dict[str, Any]:
    """:meth:`Experiment.sample`: the posterior of each held-out measurement through
    :func:`~invdiff.evaluation.score.sample_and_score`, ``posterior.npz``, ``metrics.json``
    and figures. ``source`` names the config in hints (the CLI passes the user's path)."""
    from invdiff.evaluation.score import sample_and_score
    from invdiff.evaluation.verdicts import describe_metrics, field_labels
    from invdiff.training import distributed

    cfg, p, s = exp.cfg, exp.paths, exp.cfg.sampling
    with stage_lock(cfg.out_dir):
        ckpt = Path(checkpoint) if checkpoint else p.final
        model = exp.model(checkpoint, source)
        exp.dataset("train")  # data of other settings are refused here too (loaded once a run)
        test = exp.dataset("test")
        ctx = distributed.context()
        ref, note = exp.reference(test.y, test.y_clean) if ctx.is_main else (None, "")
        scored = sample_and_score(model, test.y, seed=s.seed, sampler=exp.sampler,
                                  n=s.n_samples, truth=test.x, reference=ref,
                                  components=exp.components, threads=s.threads)
        if scored is None:  # another rank than 0: its measurements went to rank 0
            return {"rank": ctx.rank, "world_size": ctx.world_size}
        scored.posterior.save(p.posterior)
        labels = field_labels(*exp.components[:2])  # what x and y are, for the report
        metrics = {**scored.metrics, "sampler": s.sampler.name, "world_size": ctx.world_size,
                   "reference": ref.kind if ref else None, "checkpoint": str(ckpt),
                   "checkpoint_sha256": file_sha256(ckpt),
                   "samples_key": exp.samples_key(ckpt),
                   "sampling_config": s.model_dump(mode="json")}
        if ref is not None:
            metrics.update({"ref_measurements": ref.index, "ref_seconds": ref.seconds,
                            **{f"ref_{k}": v for k, v in ref.info.items()
                               if isinstance(v, int | float | str)}})
        if note:
            metrics["reference_note"] = note
        metrics.update(describe_metrics(metrics, labels))
        atomic_write_text(p.metrics, json.dumps(metrics, indent=2))
        if cfg.output.figures:
            _posterior_figures(exp, scored, ref, labels)
    return metrics


def _posterior_figures(exp: Experiment, scored: Any, ref: Any, labels: Any) -> None:
    """Panels of the first four held-out measurements (with the reference where it has
    them)."""
    from invdiff.evaluation.figures import posterior_figure

    test, s = exp.dataset("test"), exp.cfg.sampling
    samples = scored.posterior.samples.cpu()
    at = {m: k for k, m in enumerate(ref.index)} if ref is not None else {}
    for m in range(min(len(test), 4)):
        k = at.get(m)
        posterior_figure(
            exp.paths.figures / f"posterior_{m}.png", test.x[m], test.y[m], samples[m],
            None if k is None else ref.mean[k],
            None if k is None or ref.std is None else ref.std[k],
            title=f"{exp.cfg.name}: held-out measurement {m} ({s.sampler.name}, "
                  f"{scored.posterior.nfe} score evaluations)", labels=labels)


# -- the same stages for a config ----------------------------------------------------------
def run_simulate(cfg: ExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """Simulate the training and held-out pairs of ``cfg`` (:meth:`Experiment.simulate`)."""
    return Experiment(cfg, progress).simulate()


def run_train(cfg: ExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg``'s net (:meth:`Experiment.train`)."""
    return Experiment(cfg, progress).train()


def run_sample(cfg: ExperimentConfig, checkpoint: str | Path | None = None,
               progress: bool = True, source: str = "CONFIG") -> dict[str, Any]:
    """Sample ``cfg``'s held-out posteriors (:meth:`Experiment.sample`)."""
    return Experiment(cfg, progress).sample(checkpoint, source)


def run_run(cfg: ExperimentConfig, progress: bool = True,
            say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """All stages of ``cfg``, reusing what is done (:meth:`Experiment.run`)."""
    return Experiment(cfg, progress, say).run()


# -- names of the old ``invdiff.pipeline`` module, kept for one release ---------------------
def build_problem(cfg: ExperimentConfig) -> tuple[Any, Any, Any]:
    """Deprecated: ``Experiment(cfg).components``."""
    _deprecated("build_problem(cfg)", "Experiment(cfg).components")
    return Experiment(cfg).components


def output_paths(cfg: ExperimentConfig) -> dict[str, Path]:
    """Deprecated: ``Experiment(cfg).paths`` (a :class:`~invdiff.experiment.run.RunPaths`)."""
    _deprecated("output_paths(cfg)", "Experiment(cfg).paths or RunPaths(cfg.out_dir)")
    p = Experiment(cfg).paths
    return {"train": p.train, "test": p.test, "ckpt_dir": p.checkpoints, "final": p.final,
            "history": p.history, "posterior": p.posterior, "metrics": p.metrics,
            "figures": p.figures}


def _deprecated(old: str, new: str) -> None:
    import warnings

    warnings.warn(f"{old} is deprecated; use {new} (invdiff.experiment.run)",
                  DeprecationWarning, stacklevel=3)
