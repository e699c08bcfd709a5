"""The training loop: :class:`Trainer` fits a conditional score network to simulated pairs.

The objective is denoising score matching (:mod:`invdiff.training.objective`, where the maths
is). :class:`Trainer` runs Adam with linear warm-up and an optional cosine decay
(:mod:`~invdiff.training.schedule`), gradient clipping and an EMA of the weights
(:mod:`~invdiff.training.ema`) in the dataset's normalised units
(:func:`~invdiff.training.setup.training_normalization`), validates at fixed sigmas with fixed
noise, writes atomic checkpoints and resumes them bit-identically on the CPU
(:mod:`~invdiff.training.resume`). See ``docs/training.md``.

Under ``torchrun`` (several ranks, :mod:`invdiff.training.distributed`) the net is wrapped in
DistributedDataParallel and ``batch_size`` stays the *global* batch: every rank rebuilds the
same global batch and the same levels and noise for it (same generators), then forwards only
its contiguous slice of ``batch_size / world_size`` examples. DDP averages the ranks'
gradients, and the mean of equal-sized shard means is the global mean, so the weights follow
the single-process trajectory up to float rounding. Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from invdiff.checks import randn, seeded_generator
from invdiff.data import Dataset, Normalization
from invdiff.data.masking import training_input
from invdiff.errors import ConfigError
from invdiff.interfaces import NoiseModel, ScoreFn
from invdiff.runtime import torch_threads
from invdiff.sampling.sigmas import check_ladder
from invdiff.training import distributed
from invdiff.training.checkpoint import load_checkpoint
from invdiff.training.config import TrainingConfig
from invdiff.training.early_stopping import EarlyStopping
from invdiff.training.ema import EMA
from invdiff.training.model import ScoreModel
from invdiff.training.resume import restore_state, save_state
from invdiff.training.schedule import scheduled_lr
from invdiff.training.setup import (
    check_data,
    make_objective,
    make_optimizer,
    resolve_device,
    training_normalization,
)
from invdiff.training.tensorboard import open_writer

__all__ = ["Trainer"]

#: Streams of the seed: each epoch's shuffle and noise redraw (each step's and validation
#: chunk's masks) get a generator seeded from (seed, stream, epoch or step), so they need no
#: saved state; validation noise is fixed.
_SHUFFLE, _REDRAW, _VALIDATION, _MASKS, _VAL_MASKS = 1, 2, 3, 4, 5


def _with_config_threads(method):
    """Run a Trainer method under ``self.config.threads`` CPU threads (restored after)."""
    import functools

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        with torch_threads(self.config.threads):
            return method(self, *args, **kwargs)

    return run


class Trainer:
    """Trains ``net`` on ``train`` by DSM over the ladder ``sigmas`` (normalised units).

    net: a ScoreNet ``(x (B, *x_shape), y (B, *y_shape), sigma (B,)) -> (B, *x_shape)``.
    train, val: datasets in physical units; both are normalised with
        :func:`training_normalization` (``train.normalization``, refitted as the config says).
    noise_model: needed for ``config.redraw_noise`` (applied to ``train.y_clean`` each epoch).
    checkpoint_dir: where ``last.pt`` (every ``checkpoint_every`` steps) and ``final.pt`` go.
    net_spec: ``{"name", "params"}`` of the registered score_net, so checkpoints rebuild it.
    experiment: the validated experiment config (JSON-able dict), stored in checkpoints.
    normalization: the units the net trains in, if already fitted on ``train`` with
        :func:`training_normalization` (else fitted here).

    An epoch is one pass over a fresh permutation of the training set in batches of
    ``batch_size`` (the incomplete last batch is dropped), so step k always sees the same batch.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        train: Dataset,
        sigmas: torch.Tensor,
        config: TrainingConfig | None = None,
        val: Dataset | None = None,
        noise_model: NoiseModel | None = None,
        checkpoint_dir: str | Path | None = None,
        net_spec: dict[str, Any] | None = None,
        experiment: dict[str, Any] | None = None,
        progress: bool = True,
        normalization: Normalization | None = None,
    ) -> None:
        self.config = cfg = config if config is not None else TrainingConfig()
        self.device = resolve_device(cfg.device)
        self.dist = distributed.setup(self.device)
        self.device = distributed.device_for(self.device, self.dist)
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(
                f"training.batch_size {cfg.batch_size} (the global batch) does not split over "
                f"{self.dist.world_size} ranks; use a multiple of {self.dist.world_size} or "
                f"start another number of processes"
            )
        distributed.check_same({"training": cfg.model_dump(mode="json", exclude={"device"}),
                                "experiment": experiment, "n_train": len(train)})
        self.sigmas = check_ladder(torch.as_tensor(sigmas, dtype=torch.float32)).to(self.device)
        check_data(net, train, "train", cfg.masking)
        if val is not None:
            check_data(net, val, "val", cfg.masking)
        if len(train) < cfg.batch_size:
            raise ConfigError(
                f"batch_size {cfg.batch_size} exceeds the {len(train)} training pairs; lower "
                f"training.batch_size or simulate more data"
            )
        if cfg.redraw_noise and (noise_model is None or train.y_clean is None):
            raise ConfigError(
                "redraw_noise needs the noise model and the dataset's clean measurements "
                "(y_clean, kept by invdiff.simulate); pass noise_model=... or set "
                "redraw_noise = false"
            )
        self.train_data, self.val_data, self.noise_model = train, val, noise_model
        self.normalization = (normalization if normalization is not None
                              else training_normalization(train, cfg))
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.net_spec, self.experiment = net_spec, experiment
        self.progress = progress and self.dist.is_main
        fmt = torch.channels_last if cfg.channels_last else torch.preserve_format
        self.net = net.to(device=self.device, memory_format=fmt)
        #: the training objective (kind "objective"), e.g. denoising score matching
        self.objective = make_objective(cfg, net)
        #: the loss weighting this run uses (DSM: ``config.loss_weighting``, "auto" resolved)
        self.loss_weighting = self.objective.weighting
        # what the training step calls: DDP (averages gradients over the ranks) or the net
        self._forward_net: torch.nn.Module = self.net
        if self.dist.active:
            self._forward_net = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.dtype = next(self.net.parameters()).dtype
        self._x = self._normalized(train.x, "x")
        self.optimizer = make_optimizer(self.net, cfg)
        self.ema = EMA(self.net, cfg.ema_decay, cfg.ema_warmup)
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.step = 0
        self.history: list[dict[str, float | None]] = []
        #: where early stopping stopped the run (None: it did not)
        self.early_stopped: dict[str, Any] | None = None
        self._seconds = 0.0
        self._acc = [0.0, 0.0, 0]  # loss sum, grad-norm sum, steps since the last history row
        self._epoch_cache: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self._val_levels = self._validation_levels()
        # one writer per run: rank 0's (its shard's loss bands stand for the global batch)
        self._tb = (open_writer(self.checkpoint_dir, self.sigmas)
                    if cfg.tensorboard and self.dist.is_main else None)

    # -- data --------------------------------------------------------------------------------
    def _normalized(self, t: torch.Tensor, which: str) -> torch.Tensor:
        norm = getattr(self.normalization, f"normalize_{which}")
        out = norm(t.to(torch.float32)).to(device=self.device, dtype=self.dtype)
        if self.config.channels_last and out.dim() == 4:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_data) // self.config.batch_size

    @property
    def rank_batch(self) -> int:
        """Examples each rank forwards per step: ``batch_size / world_size``."""
        return self.config.batch_size // self.dist.world_size

    def _shard(self) -> slice:
        """This rank's contiguous slice of a global batch."""
        b = self.rank_batch
        return slice(self.dist.rank * b, (self.dist.rank + 1) * b)

    def epoch_data(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(perm (N,), x_n (N, *x_shape), y_n (N, *y_shape))`` of ``epoch``, normalised.

        Epoch 0 uses the stored y; with ``redraw_noise`` later epochs draw fresh measurement
        noise on ``y_clean`` in physical units before normalising. Both the permutation and the
        noise come from generators seeded by (seed, epoch), so any epoch can be rebuilt.
        """
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            _, perm, y = self._epoch_cache
            return perm, self._x, y
        perm = torch.randperm(len(self.train_data), generator=_seeded(self.config.seed,
                                                                      _SHUFFLE, epoch))
        y = self.train_data.y
        if self.config.redraw_noise and epoch > 0:
            g = _seeded(self.config.seed, _REDRAW, epoch)
            y = self.noise_model(self.train_data.y_clean, generator=g)
        y = self._normalized(y, "y")
        self._epoch_cache = (epoch, perm.to(self.device), y)
        return self._epoch_cache[1], self._x, y

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch ``(x_n, y_n)`` of 0-based ``step`` (under ``masking``, y_n is
        the net's input: the batch under this step's masks, with its mask channel)."""
        epoch, k = divmod(step, self.batches_per_epoch)
        perm, x, y = self.epoch_data(epoch)
        idx = perm[k * self.config.batch_size:(k + 1) * self.config.batch_size]
        return x[idx], training_input(y[idx], self.config.masking, self.config.seed, _MASKS, step)

    # -- one step ----------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        return scheduled_lr(step, self.config)

    def _autocast(self):
        if not self.config.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One Adam step on the global batch ``(x_n, y_n)``, then the EMA update.

        Levels and noise are drawn for the whole global batch (the same on every rank); each
        rank forwards its shard (all of it for a single process). Returns ``loss`` (the global
        batch mean), ``grad_norm`` (the global norm before clipping) and ``lr``.
        """
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        sigma, z = self.objective.draw(x, self.sigmas, self.generator)
        if self.dist.active:
            part = self._shard()
            x, y, sigma, z = x[part], y[part], sigma[part], z[part]
        with self._autocast():
            terms = self.objective.terms(self._forward_net, x, y, sigma, z)
            loss = terms.mean()
        loss.backward()  # under DDP the gradients are now the mean over the ranks
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
        loss = loss.detach()
        if self.dist.active:  # every rank logs, and stops on, the same global value
            torch.distributed.all_reduce(loss)
            loss = loss / self.dist.world_size
        value = float(loss)
        if not math.isfinite(value):
            raise ConfigError(
                f"the training loss became {value} at step {self.step}; lower training.lr, "
                f"set training.grad_clip, or check the data and the sigma ladder"
            )
        self.optimizer.step()
        self.ema.update(self.net, self.step)
        self.step += 1
        if self._tb is not None:
            self._tb.add_terms(sigma, terms.detach())
        return {"loss": value, "grad_norm": float(grad_norm), "lr": lr}

    # -- validation --------------------------------------------------------------------------
    def _validation_levels(self) -> torch.Tensor | None:
        if self.val_data is None:
            return None
        spec = self.config.val_sigmas
        if isinstance(spec, list):
            return torch.tensor(sorted(spec, reverse=True), dtype=torch.float32)
        idx = torch.linspace(0, self.sigmas.numel() - 1, spec).round().long().unique()
        return self.sigmas.cpu()[idx]

    @torch.no_grad()
    def validate(self, net: ScoreFn | None = None) -> float:
        """Mean loss (the run's objective) of ``net`` (default: the trained net; any score
        callable works) on the validation set at the fixed levels
        ``val_sigmas``, with the same noise at every call
        (so values are comparable across steps); nan when there is no validation set."""
        if self._val_levels is None:
            return math.nan
        net = self.net if net is None else net
        was_training = getattr(net, "training", False)
        if isinstance(net, torch.nn.Module):
            net.eval()
        g = _seeded(self.config.seed, _VALIDATION, 0)  # the same draws at every call
        total, count = 0.0, 0
        bs = self.config.batch_size
        for i, (x_all, y_all) in enumerate(_chunks(self.val_data, bs)):
            x, y = self._normalized(x_all, "x"), self._normalized(y_all, "y")
            y = training_input(y, self.config.masking, self.config.seed, _VAL_MASKS, i)
            mine = i % self.dist.world_size == self.dist.rank  # ranks share out the chunks
            for level in self._val_levels.tolist():
                z = randn(x.shape, g, x)  # drawn on every rank: the noise stays the same
                if not mine:
                    continue
                sigma = torch.full((x.shape[0],), level, device=self.device, dtype=x.dtype)
                with self._autocast():
                    total += float(self.objective.terms(net, x, y, sigma, z).sum())
                count += x.shape[0]
        if isinstance(net, torch.nn.Module):
            net.train(was_training)
        if self.dist.active:
            sums = torch.tensor([total, count], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(sums)
            total, count = float(sums[0]), float(sums[1])
        return total / count

    # -- the loop ----------------------------------------------------------------------------
    @_with_config_threads
    def fit(self, resume: bool | str | Path = False) -> ScoreModel:
        """Train up to ``config.steps`` steps and return the EMA :class:`ScoreModel`.

        ``resume=True`` continues from ``checkpoint_dir/last.pt`` when it exists (else starts
        fresh); a path resumes from that file. The resumed run is bit-identical on CPU to one
        that was never interrupted.
        """
        if resume is not False:
            self._resume(resume)
        cfg = self.config
        stopper = EarlyStopping.of(self)
        start = time.perf_counter() - self._seconds
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress,
                   desc="training", unit="step", dynamic_ncols=True)
        try:
            while self.step < cfg.steps and self.early_stopped is None:
                info = self.train_step(*self.batch(self.step))
                self._accumulate(info)
                bar.update(1)
                bar.set_postfix(loss=f"{info['loss']:.4g}", refresh=False)
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    self._seconds = time.perf_counter() - start
                    row = self._log_row(info["lr"])
                    val = row["val_loss_ema"]
                    bar.set_postfix(loss=f"{row['loss']:.4g}",
                                    val_ema="-" if val is None else f"{val:.4g}")
                    if stopper is not None and stopper.update(self):
                        break
                if self.checkpoint_dir is not None and self.step % cfg.checkpoint_every == 0:
                    self._seconds = time.perf_counter() - start
                    if self.dist.is_main:
                        self.save(self._ckpt_path("last.pt"))
                if (self.checkpoint_dir is not None and self.step in cfg.snapshot_steps
                        and self.dist.is_main):
                    self._seconds = time.perf_counter() - start
                    self.save(self._ckpt_path(f"step-{self.step}.pt"))
        finally:
            bar.close()
            if self._tb is not None:
                self._tb.flush()
        self._seconds = time.perf_counter() - start
        if stopper is not None:
            stopper.restore_best(self)
        if self.checkpoint_dir is not None and self.dist.is_main:
            self.save(self._ckpt_path("last.pt"))
            self.save(self._ckpt_path("final.pt"))
        distributed.barrier()  # every rank returns once final.pt exists
        return self.model()

    def _resume(self, resume: bool | str | Path) -> None:
        if resume is True:
            path = self._ckpt_path("last.pt")
            if path is None:
                raise ConfigError("resume=True needs checkpoint_dir (where last.pt is written)")
            if not path.is_file():
                return  # nothing written yet: a fresh start is the same trajectory
        else:
            path = Path(resume)
        self.load_state(load_checkpoint(path, map_location=self.device), path)

    def _accumulate(self, info: dict[str, float]) -> None:
        self._acc[0] += info["loss"]
        self._acc[1] += info["grad_norm"]
        self._acc[2] += 1

    def _log_row(self, lr: float) -> dict[str, float | None]:
        n = max(self._acc[2], 1)
        has_val = self.val_data is not None  # None, not nan, keeps the history valid JSON
        row = {
            "step": self.step,
            "loss": self._acc[0] / n,
            "grad_norm": self._acc[1] / n,
            "val_loss": self.validate() if has_val else None,
            "val_loss_ema": self.validate(self.ema.module) if has_val else None,
            "lr": lr,
            "seconds": self._seconds,
        }
        self.history.append(row)
        self._acc = [0.0, 0.0, 0]
        if self._tb is not None:
            self._tb.log_row(row, self.config.batch_size)
        return row

    def model(self, ema: bool = True) -> ScoreModel:
        """The current :class:`ScoreModel` (EMA weights by default), sharing the weights."""
        net = self.ema.module if ema else self.net
        return ScoreModel(net, self.normalization, self.sigmas, self.experiment,
                          masking=self.config.masking)

    # -- checkpoints -------------------------------------------------------------------------
    def _ckpt_path(self, name: str) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / name

    def save(self, path: str | Path) -> Path:
        """Write the full training state to ``path`` atomically."""
        return save_state(self, path)

    def load_state(self, ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> None:
        """Restore a checkpoint from :func:`load_checkpoint` into this trainer, after checking
        that it continues the same run (config, data size, ladder, normalisation)."""
        restore_state(self, ckpt, path)


def _seeded(seed: int, stream: int, epoch: int) -> torch.Generator:
    """A CPU generator for (seed, stream, epoch), well mixed by NumPy's SeedSequence."""
    return seeded_generator(seed, stream, epoch)


def _chunks(data: Dataset, size: int):
    for i in range(0, len(data), size):
        yield data.x[i:i + size], data.y[i:i + size]
