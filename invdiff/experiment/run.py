"""The run layer: one :class:`Experiment` per config runs its stages on parts built once.

``simulate`` -> ``train`` -> ``sample`` (``run`` does all three, reusing what is done). Each
stage holds the run folder's lock while it works and uses the parts of
:class:`~invdiff.experiment.parts.ExperimentParts` (components, datasets, ladder, sampler,
reference, model), each built once per Experiment; the run folder's layout is documented
there. ``run_simulate(cfg)`` ... ``run_run(cfg)`` are the same stages for a config.

Under ``torchrun`` (:mod:`invdiff.training.distributed`) every rank runs the same stage: rank 0
alone simulates missing data (the others wait for its files) and writes every file; training
is data-parallel and sampling shares the held-out measurements out over the ranks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invdiff.experiment.config import ExperimentConfig
from invdiff.experiment.lock import stage_lock
from invdiff.experiment.parts import ExperimentParts, RunPaths
from invdiff.integrity import file_sha256
from invdiff.io import atomic_write_text
from invdiff.resources import check_stage_memory  # safety: limits checked before work

__all__ = ["Experiment", "RunPaths", "run_simulate", "run_train", "run_sample", "run_run"]


class Experiment(ExperimentParts):
    """An experiment config, its run folder and its stages.

    cfg: a validated :class:`~invdiff.experiment.config.ExperimentConfig`.
    progress: progress bars for the heavy work. say: one line per reused stage (or None).
    """

    def simulate(self) -> dict[str, Any]:
        """Simulate ``n_train + n_val`` training pairs and ``n_test`` held-out pairs (under
        torchrun: on rank 0, while the other ranks wait for its files); existing data of
        this config are kept."""
        from invdiff.training import distributed

        p = self.paths
        with stage_lock(self.cfg.out_dir):
            check_stage_memory(self, "simulate")  # safety: refuse sizes that cannot fit
            if not distributed.context().is_main:
                distributed.wait_for_files(p.train, p.test)
                return {"train": str(p.train), "test": str(p.test)}
            train = self._simulate_one("train")
            test = self._simulate_one("test")
        return {"train": str(p.train), "n_train_val": len(train),
                "dropped": train.meta.get("dropped", 0), "test": str(p.test),
                "n_test": len(test)}

    def train(self) -> dict[str, Any]:
        """Fit the net (resuming ``last.pt`` if an earlier run was interrupted), write
        ``training.json`` and the loss figure; returns the training summary (without the
        history)."""
        from invdiff.training.trainer import Trainer

        with stage_lock(self.cfg.out_dir):
            check_stage_memory(self, "train")  # safety: refuse sizes that cannot fit
            train, val = self.training_data
            sigmas, reasoning = self.ladder
            net, net_spec = self.build_net()
            trainer = Trainer(net, train, sigmas, self.cfg.training, val=val,
                              noise_model=self.components[2],
                              checkpoint_dir=self.paths.checkpoints, net_spec=net_spec,
                              experiment=self.experiment_json, progress=self.progress,
                              normalization=self.normalization)
            self._model = trainer.fit(resume=True)
            last = trainer.history[-1] if trainer.history else {}
            summary = {"steps": trainer.step, "world_size": trainer.dist.world_size,
                       "rank_batch": trainer.rank_batch,
                       "loss_weighting": trainer.loss_weighting,
                       "seconds": last.get("seconds"), "val_loss_ema": last.get("val_loss_ema"),
                       "n_levels": len(sigmas), "sigma_1": float(sigmas[0]),
                       "sigma_L": float(sigmas[-1]), "ladder_reasoning": reasoning,
                       "parameters": sum(p.numel() for p in net.parameters()),
                       "objective": self.cfg.training.objective,
                       "early_stopped": trainer.early_stopped}
            if trainer.dist.is_main:  # rank 0 writes the files
                atomic_write_text(self.paths.history,
                                  json.dumps({**summary, "history": trainer.history}, indent=2))
                if self.cfg.output.figures and trainer.history:
                    from invdiff.evaluation.figures import loss_figure

                    loss_figure(self.paths.figures / "loss.png", trainer.history,
                                title=self.cfg.name)
        return summary

    def sample(self, checkpoint: str | Path | None = None, source: str = "CONFIG"
               ) -> dict[str, Any]:
        """The posterior of each held-out measurement through
        :func:`~invdiff.evaluation.score.sample_and_score`: ``posterior.npz``,
        ``metrics.json`` and figures. ``source`` names the config in hints (the CLI passes
        the user's path)."""
        from invdiff.evaluation.score import sample_and_score
        from invdiff.evaluation.verdicts import describe_metrics, field_labels
        from invdiff.training import distributed

        cfg, p, s = self.cfg, self.paths, self.cfg.sampling
        with stage_lock(cfg.out_dir):
            check_stage_memory(self, "sample")  # safety: refuse sizes that cannot fit
            ckpt = Path(checkpoint) if checkpoint else p.final
            # safety: the checkpoint is hashed once, before loading, and loaded from those bytes
            ckpt_sha256 = file_sha256(ckpt) if ckpt.is_file() else None
            model = self.model(checkpoint, source, sha256=ckpt_sha256)
            self.dataset("train")  # data of other settings are refused here too (loaded once)
            test = self.dataset("test")
            ctx = distributed.context()
            ref, note = self.reference(test.y, test.y_clean) if ctx.is_main else (None, "")
            cal = self.calibration(model, ckpt, ckpt_sha256)
            scored = sample_and_score(model, test.y, seed=s.seed, sampler=self.sampler,
                                      n=s.n_samples, truth=test.x, reference=ref,
                                      components=self.components, calibration=cal,
                                      threads=s.threads)
            if scored is None:  # another rank than 0: its measurements went to rank 0
                return {"rank": ctx.rank, "world_size": ctx.world_size}
            scored.posterior.save(p.posterior)
            labels = field_labels(*self.components[:2])  # what x and y are, for the report
            metrics = {**scored.metrics, "sampler": s.sampler.name,
                       "world_size": ctx.world_size, "reference": ref.kind if ref else None,
                       "checkpoint": str(ckpt), "checkpoint_sha256": ckpt_sha256,
                       "samples_key": self.samples_key(ckpt, ckpt_sha256),
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
                self._posterior_figures(scored, ref, labels)
        return metrics

    def _posterior_figures(self, scored: Any, ref: Any, labels: Any) -> None:
        """Panels of the first four held-out measurements (with the reference where it has
        them)."""
        from invdiff.evaluation.figures import posterior_figure

        test, s = self.dataset("test"), self.cfg.sampling
        samples = scored.posterior.samples.cpu()
        at = {m: k for k, m in enumerate(ref.index)} if ref is not None else {}
        for m in range(min(len(test), 4)):
            k = at.get(m)
            posterior_figure(
                self.paths.figures / f"posterior_{m}.png", test.x[m], test.y[m], samples[m],
                None if k is None else ref.mean[k],
                None if k is None or ref.std is None else ref.std[k],
                title=f"{self.cfg.name}: held-out measurement {m} ({s.sampler.name}, "
                      f"{scored.posterior.nfe} score evaluations)", labels=labels)

    def sampled(self) -> dict[str, Any] | None:
        """The metrics of an earlier :meth:`sample` of ``final.pt`` with these sampling
        settings (figures included, when asked for), or None."""
        p = self.paths
        if not (p.metrics.is_file() and p.posterior.is_file() and p.final.is_file()):
            return None
        if self.cfg.output.figures and not (p.figures / "posterior_0.png").is_file():
            return None
        try:
            metrics = json.loads(p.metrics.read_text())
        except (OSError, ValueError):
            return None
        same = (metrics.get("checkpoint") == str(p.final)
                and metrics.get("samples_key") == self.samples_key(p.final))
        return metrics if same else None

    def run(self) -> dict[str, Any]:
        """All stages: simulate, train, sample. A stage whose outputs are complete and match
        the config is reused, not redone (``say`` reports which, one line each)."""
        p = self.paths
        with stage_lock(self.cfg.out_dir):
            had_data = p.train.is_file() and p.test.is_file()
            self.simulate()  # existing data are checked against the config and kept
            if had_data:
                self.say(f"reused the simulated data in {p.data} (same settings)")
            if self.is_trained():
                self.say(f"reused the trained model {p.final} "
                         f"({self.cfg.training.steps} steps done)")
            else:
                self.train()
            metrics = self.sampled()
            if metrics is not None:
                self.say(f"reused the posterior samples and {p.metrics} (same model and "
                         f"sampler settings); delete {p.metrics} to sample again")
                return metrics
            return self.sample()


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
    """Deprecated: ``Experiment(cfg).paths`` (a :class:`RunPaths`)."""
    _deprecated("output_paths(cfg)", "Experiment(cfg).paths or RunPaths(cfg.out_dir)")
    p = RunPaths(cfg.out_dir)
    return {"train": p.train, "test": p.test, "ckpt_dir": p.checkpoints, "final": p.final,
            "history": p.history, "posterior": p.posterior, "metrics": p.metrics,
            "figures": p.figures}


def _deprecated(old: str, new: str) -> None:
    import warnings

    warnings.warn(f"{old} is deprecated; use {new} (invdiff.experiment.run)",
                  DeprecationWarning, stacklevel=3)
