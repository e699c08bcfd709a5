"""Training a conditional score network by denoising score matching (DSM).

Loss (Dasgupta et al. 2025, Eq. 15; NCSNv2's sigma^2-weighted objective). For a pair (x, y)
draw a level sigma uniformly from the ladder sigma_1 > ... > sigma_L (or, with
``sigma_sampling = "log-normal"``, ln sigma ~ N(m, s^2) clamped to [sigma_L, sigma_1], which
weights the scales of the posterior over the large levels) and z ~ N(0, I); with
x~ = x + sigma z the DSM target is grad_x~ log N(x~; x, sigma^2 I) = -z / sigma, so

    l(x, y, sigma, z) = 1/2 || sigma s(x~, y, sigma) + z ||^2       (sum over all pixels)
    L(theta)          = E_{x, y, sigma, z} l                        (mean over the batch).

With ``loss_weighting = "edm"`` each term is multiplied by 1 + sigma^2 (:func:`loss_weight`),
which keeps the large levels in the gradient; the default ``"auto"`` picks it for nets with the
EDM output parameterisation (``net.output == "edm"``, the U-Net's default) and the sigma^2
weighting otherwise (:func:`resolve_loss_weighting`). Either way, its minimiser is the noised
posterior score grad log p_sigma(x~ | y), and for that score the expected loss is not zero:
for a Gaussian posterior N(m, S) with eigenvalues lambda_i it is
w(sigma)/2 sum_i lambda_i / (lambda_i + sigma^2) (the tests check this).

:class:`Trainer` runs Adam with linear warm-up, gradient clipping and an EMA of the weights in
the dataset's normalised units, validates at fixed sigmas with fixed noise, writes atomic
checkpoints and resumes them bit-identically (CPU). See ``docs/training.md``.

Under ``torchrun`` (several ranks, :mod:`invdiff.distributed`) the net is wrapped in
DistributedDataParallel and ``batch_size`` stays the *global* batch: every rank rebuilds the
same global batch and the same levels and noise for it (same generators), then forwards only
its contiguous slice of ``batch_size / world_size`` examples. DDP averages the ranks'
gradients, and the mean of equal-sized shard means is the global mean, so the weights follow
the single-process trajectory up to float rounding. Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import copy
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator
from tqdm.auto import tqdm

from invdiff import distributed
from invdiff.checkpoint import load_checkpoint, load_state, save_checkpoint
from invdiff.checks import check_finite, check_training_pairs, randn, seeded_generator
from invdiff.data import Dataset, Normalization
from invdiff.errors import CheckpointError, ConfigError, DataError
from invdiff.interfaces import NoiseModel, ScoreFn
from invdiff.logging_tb import open_writer
from invdiff.model import ScoreModel
from invdiff.runtime import torch_threads
from invdiff.sigmas import check_ladder

__all__ = ["TrainingConfig", "Trainer", "EMA", "dsm_loss", "dsm_terms", "loss_weight",
           "resolve_loss_weighting", "training_normalization", "warmup_lr"]

#: Streams of the seed: each epoch's shuffle and noise redraw get their own generator seeded
#: from (seed, stream, epoch), so they need no saved state; validation noise is fixed.
_SHUFFLE, _REDRAW, _VALIDATION = 1, 2, 3
#: Config fields that may change when resuming: they do not alter the weight trajectory.
RESUMABLE_CHANGES = frozenset({"steps", "val_every", "checkpoint_every", "device", "threads",
                               "snapshot_steps", "tensorboard"})
#: How each level's DSM term is weighted (:func:`loss_weight`); "auto" is resolved per net
#: (:func:`resolve_loss_weighting`).
LossWeighting = Literal["sigma2", "edm"]
LossWeightingOption = Literal["auto", "sigma2", "edm"]


class TrainingConfig(BaseModel):
    """Options of :class:`Trainer` (nested as the ``training`` section of an experiment)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(10_000, ge=1, description="optimisation steps in total")
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "adamw"] = Field("adam", description="adamw: decoupled decay")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear LR warm-up over this many steps")
    # cosine: measured tighter posteriors than a constant LR at the same budget on every
    # benchmark problem (docs/results/learning-curves/); "constant" lets a finished run be
    # extended by raising `steps` on resume
    lr_decay: Literal["constant", "cosine"] = Field(
        "cosine", description="after warm-up: cosine down to lr * lr_min_ratio, or constant"
    )
    lr_min_ratio: float = Field(0.02, ge=0, le=1, description="final LR / lr for 'cosine'")
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; None = off")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA weights used for sampling")
    ema_warmup: bool = Field(True, description="ramp the EMA decay up as (1+t)/(10+t)")
    val_every: int = Field(500, ge=1, description="validate and log a history row every K steps")
    val_sigmas: int | list[float] = Field(
        4, description="validation levels: n levels spread across the ladder, or explicit sigmas"
    )
    checkpoint_every: int = Field(1000, ge=1, description="write checkpoint_dir/last.pt")
    snapshot_steps: list[PositiveInt] = Field(
        default_factory=list, description="also keep checkpoint_dir/step-K.pt after these "
        "steps K (learning curves: the model part-way through the same run)"
    )
    tensorboard: bool = Field(False, description="log scalars to <out>/tensorboard/ (needs the "
                              "tensorboard package: pip install 'invdiff[tensorboard]')")
    seed: int = 0
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:1', ...")
    threads: int | None = Field(
        1, ge=1, description="CPU threads (torch and BLAS) while training; None: torch's "
        "default, one per core. One is the default: on a shared or loaded machine more threads "
        "made a small net's step 2-13x slower (docs/training.md, thread policy)"
    )
    redraw_noise: bool = Field(False, description="fresh measurement noise on y every epoch")
    sigma_sampling: Literal["ladder", "log-normal"] = Field(
        "ladder", description="training levels: uniform over the ladder (NCSNv2), or "
        "ln sigma ~ N(sigma_log_mean, sigma_log_std^2) clamped to the ladder's range (EDM)"
    )
    sigma_log_mean: float = Field(-1.2, description="log-normal: mean of ln sigma")
    sigma_log_std: float = Field(1.2, gt=0, description="log-normal: std of ln sigma")
    y_normalization: Literal["channel", "pixel"] = Field(
        "channel", description="how the net's y is standardised: one mean/std per channel, or "
        "per pixel (removes a pattern all measurements share; Normalization.with_y_per_pixel)"
    )
    loss_weighting: LossWeightingOption = Field(
        "auto", description="weight of each level's DSM term: 'sigma2' (NCSN; the denoiser "
        "error counts 1/sigma^2), 'edm' (times 1 + sigma^2: Karras et al.'s lambda, which "
        "keeps the large levels, where y alone determines x, in the gradient) or 'auto' "
        "('edm' for nets with the EDM output parameterisation, such as the U-Net's default; "
        "'sigma2' otherwise)"
    )
    x_transform: Literal["identity", "log"] = Field(
        "identity", description="the space the net learns x in: x itself, or log x for a "
        "positive field with multiplicative structure (Normalization.with_x_log)"
    )
    channels_last: bool = False
    bf16: bool = Field(False, description="bfloat16 autocast for the network")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {v}")
        return v

    @field_validator("val_sigmas")
    @classmethod
    def _val_sigmas(cls, v: int | list[float]) -> int | list[float]:
        if isinstance(v, int) and v < 1:
            raise ValueError("val_sigmas must be >= 1 levels")
        if isinstance(v, list) and (not v or any(not (s > 0 and math.isfinite(s)) for s in v)):
            raise ValueError("val_sigmas must be a non-empty list of positive finite sigmas")
        return v


# -- the loss ----------------------------------------------------------------------------------
def loss_weight(sigma: torch.Tensor, weighting: LossWeighting = "sigma2") -> torch.Tensor:
    """The factor w(sigma) ``(B,)`` on each example's sigma^2-weighted DSM term.

    With the denoiser D = x~ + sigma^2 s the term is 1/2 ||D - x||^2 / sigma^2: the NCSN
    weighting ("sigma2", w = 1) counts an error in D at sigma = 60 3600 times less than at
    sigma = 1, so the large levels, whose minimiser D = E[x | y] is the measurement's whole
    contribution, barely enter the gradient. "edm" uses w = 1 + sigma^2 / sigma_data^2
    (sigma_data = 1, the data being normalised), i.e. Karras et al. (2022)'s
    lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on ||D - x||^2, which gives
    every level's term the same order of magnitude.
    """
    if weighting == "sigma2":
        return torch.ones_like(sigma)
    if weighting == "edm":
        return 1 + sigma.square()
    raise ConfigError(f"unknown loss weighting {weighting!r}; use 'sigma2' or 'edm' (resolve "
                      f"'auto' for a net with resolve_loss_weighting)")


def resolve_loss_weighting(weighting: str, net: Any) -> LossWeighting:
    """The weighting ``"auto"`` stands for with ``net``: ``"edm"`` when the net forms its score
    with the EDM preconditioning (``net.output == "edm"``: its regression target has unit
    variance at every level, and only the EDM weighting lets every level count alike), else
    ``"sigma2"`` (an ``"ncsn"`` net's F regression already has unit weight under it; "edm"
    would weight the top levels up to 1 + sigma_1^2 times). Other values are returned as they
    are. Measured on the learning curves (docs/results/learning-curves/)."""
    if weighting != "auto":
        return weighting  # type: ignore[return-value]
    return "edm" if getattr(net, "output", None) == "edm" else "sigma2"


def dsm_terms(
    score: ScoreFn, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor,
    weighting: LossWeighting = "sigma2",
) -> torch.Tensor:
    """Per-example DSM loss ``w(sigma)/2 || sigma s(x + sigma z, y, sigma) + z ||^2``: ``(B,)``
    (w from :func:`loss_weight`; 1 by default).

    x, z: ``(B, *x_shape)``; y: ``(B, *y_shape)``; sigma: ``(B,)``. Summed over pixels in
    x's dtype, at least float32 (also under bf16 autocast).
    """
    s = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    out = score(x + s * z, y, sigma)
    acc = torch.promote_types(x.dtype, torch.float32)  # bf16 outputs are summed in float32
    terms = 0.5 * (s.to(acc) * out.to(acc) + z.to(acc)).flatten(1).square().sum(1)
    return terms * loss_weight(sigma.to(acc), weighting)


def _draw_dsm(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None,
    log_normal: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One level per example and z ~ N(0, I) like x.

    Levels are uniform over the ladder, or with ``log_normal = (m, s)`` continuous,
    ``ln sigma ~ N(m, s^2)`` clamped to ``[sigma_L, sigma_1]`` (Karras et al. 2022): this spends
    the training on the scales where the posterior's structure lives instead of on the many
    large levels, whose score is close to the trivial ``-(x~ - mean) / sigma^2``.
    """
    dev = generator.device if generator is not None else x.device
    if log_normal is None:
        idx = torch.randint(sigmas.numel(), (x.shape[0],), generator=generator, device=dev)
        sigma = sigmas.to(dev)[idx]
    else:
        m, s = log_normal
        ln = m + s * torch.randn(x.shape[0], generator=generator, device=dev,
                                 dtype=sigmas.dtype)
        ends = sigmas.to(dev)  # decreasing (check_ladder): tensor bounds, no host sync
        sigma = ln.exp().clamp(ends[-1], ends[0])
    return sigma.to(device=x.device, dtype=x.dtype), randn(x.shape, generator, x)


def dsm_loss(
    score_net: ScoreFn,
    x: torch.Tensor,
    y: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    log_normal: tuple[float, float] | None = None,
    weighting: LossWeighting = "sigma2",
) -> torch.Tensor:
    """The DSM loss (scalar) of a batch, as in the module docstring (sigma^2-weighted, or
    ``weighting = "edm"``, :func:`loss_weight`).

    x: ``(B, *x_shape)``, y: ``(B, *y_shape)`` (normalised units), sigmas: decreasing ``(L,)``.
    Levels and noise are drawn from ``generator`` (its device; the global RNG if None):
    uniform over the ladder, or log-normal with ``log_normal = (mean, std)`` of ln sigma.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.dim() < 2:
        raise DataError("dsm_loss needs tensors x (B, *x_shape) and y (B, *y_shape)")
    if y.dim() < 2 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"x has batch {x.shape[0]} but y has shape {tuple(y.shape)}; give one y per x"
        )
    sigmas = check_ladder(torch.as_tensor(sigmas, dtype=x.dtype))
    sigma, z = _draw_dsm(x, sigmas, generator, log_normal)
    return dsm_terms(score_net, x, y, sigma, z, weighting).mean()


def warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """LR of 0-based ``step``: ``lr * min(1, (step + 1) / warmup_steps)`` (constant after)."""
    if warmup_steps <= 0:
        return lr
    return lr * min(1.0, (step + 1) / warmup_steps)


def scheduled_lr(step: int, cfg: TrainingConfig) -> float:
    """The LR of 0-based ``step``: linear warm-up, then constant or a cosine decay

    ``lr_t = lr (r + (1 - r) (1 + cos(pi p)) / 2)``, ``p = (t - w) / (steps - w)`` in [0, 1],
    ``r = lr_min_ratio``: full LR after warm-up, ``r lr`` at the last step.
    """
    lr = warmup_lr(step, cfg.lr, cfg.warmup_steps)
    if cfg.lr_decay == "constant" or step < cfg.warmup_steps:
        return lr
    span = max(cfg.steps - cfg.warmup_steps, 1)
    p = min(1.0, (step - cfg.warmup_steps) / span)
    r = cfg.lr_min_ratio
    return lr * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p)))


# -- EMA ---------------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a module's parameters: after optimiser step t (0-based)
    ``e <- d_t e + (1 - d_t) theta`` (``e_0 = theta_0``); buffers are copied as they are.

    With ``warmup`` the decay ramps up as ``d_t = min(decay, (1 + t) / (10 + t))`` (the
    TensorFlow ``num_updates`` rule): a plain 0.999 average still gives the random initial
    weights 37% weight after 1000 steps, which ruined short CPU runs (measured: validation loss
    45 with the EMA against 14.5 with the raw weights after 1000 steps). Without warm-up,
    ``d_t = decay``.

    :attr:`module` is a frozen copy of the network holding the averages (what sampling uses).
    """

    def __init__(self, net: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """d_t for 0-based optimiser step ``step``."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, net: torch.nn.Module, step: int) -> None:
        d = self.decay_at(step)
        ema_p = list(self.module.parameters())
        torch._foreach_mul_(ema_p, d)
        torch._foreach_add_(ema_p, [p.detach() for p in net.parameters()], alpha=1 - d)
        for eb, b in zip(self.module.buffers(), net.buffers(), strict=True):
            eb.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()


# -- the trainer -------------------------------------------------------------------------------
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
    ) -> None:
        self.config = cfg = config if config is not None else TrainingConfig()
        self.device = _resolve_device(cfg.device)
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
        self._log_normal = ((cfg.sigma_log_mean, cfg.sigma_log_std)
                            if cfg.sigma_sampling == "log-normal" else None)
        _check_data(net, train, "train")
        if val is not None:
            _check_data(net, val, "val")
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
        self.normalization = training_normalization(train, cfg)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.net_spec, self.experiment = net_spec, experiment
        self.progress = progress and self.dist.is_main
        fmt = torch.channels_last if cfg.channels_last else torch.preserve_format
        self.net = net.to(device=self.device, memory_format=fmt)
        #: the loss weighting this run uses (``config.loss_weighting`` with "auto" resolved)
        self.loss_weighting = resolve_loss_weighting(cfg.loss_weighting, net)
        # what the training step calls: DDP (averages gradients over the ranks) or the net
        self._forward_net: torch.nn.Module = self.net
        if self.dist.active:
            self._forward_net = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.dtype = next(self.net.parameters()).dtype
        self._x = self._normalized(train.x, "x")
        self.optimizer = _make_optimizer(self.net, cfg)
        self.ema = EMA(self.net, cfg.ema_decay, cfg.ema_warmup)
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.step = 0
        self.history: list[dict[str, float | None]] = []
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
        """The training batch ``(x_n, y_n)`` of 0-based ``step``."""
        epoch, k = divmod(step, self.batches_per_epoch)
        perm, x, y = self.epoch_data(epoch)
        idx = perm[k * self.config.batch_size:(k + 1) * self.config.batch_size]
        return x[idx], y[idx]

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
        sigma, z = _draw_dsm(x, self.sigmas, self.generator, self._log_normal)
        if self.dist.active:
            part = self._shard()
            x, y, sigma, z = x[part], y[part], sigma[part], z[part]
        with self._autocast():
            terms = dsm_terms(self._forward_net, x, y, sigma, z, self.loss_weighting)
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
        """Mean DSM loss of ``net`` (default: the trained net; any score callable works; with the
        run's ``loss_weighting``) on the validation set at the fixed levels
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
            mine = i % self.dist.world_size == self.dist.rank  # ranks share out the chunks
            for level in self._val_levels.tolist():
                z = randn(x.shape, g, x)  # drawn on every rank: the noise stays the same
                if not mine:
                    continue
                sigma = torch.full((x.shape[0],), level, device=self.device, dtype=x.dtype)
                with self._autocast():
                    total += float(dsm_terms(net, x, y, sigma, z, self.loss_weighting).sum())
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
        start = time.perf_counter() - self._seconds
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress,
                   desc="training", unit="step", dynamic_ncols=True)
        try:
            while self.step < cfg.steps:
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
        return ScoreModel(net, self.normalization, self.sigmas)

    # -- checkpoints -------------------------------------------------------------------------
    def _ckpt_path(self, name: str) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / name

    def save(self, path: str | Path) -> Path:
        """Write the full training state to ``path`` atomically."""
        training = {
            "config": self.config.model_dump_json(),
            "generator": self.generator.get_state(),
            "n_train": len(self.train_data),
            "seconds": self._seconds,
            "acc": list(self._acc),
            "history": json.dumps(self.history),
            "world_size": self.dist.world_size,  # informative: a resume may use another
            "rank_batch": self.rank_batch,
        }
        return save_checkpoint(
            path, model=self.net.state_dict(), ema=self.ema.state_dict(),
            optimizer=self.optimizer.state_dict(), step=self.step,
            normalization=self.normalization, sigmas=self.sigmas, experiment=self.experiment,
            net_spec=self.net_spec, training=training,
        )

    def load_state(self, ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> None:
        """Restore a checkpoint from :func:`load_checkpoint` into this trainer, after checking
        that it continues the same run (config, data size, ladder, normalisation)."""
        tr = ckpt["training"]
        try:
            self._check_same_run(ckpt, tr, path)
            load_state(self.net, ckpt["model"], path, "weights")
            load_state(self.ema.module, ckpt["ema"], path, "EMA weights")
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.generator.set_state(tr["generator"].cpu())
            self.step = int(ckpt["step"])
            self._seconds = float(tr["seconds"])
            self._acc = [float(tr["acc"][0]), float(tr["acc"][1]), int(tr["acc"][2])]
            self.history = json.loads(tr["history"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path}: cannot resume training from it ({type(exc).__name__}: {exc}); "
                f"start a fresh run in a new checkpoint_dir"
            ) from None

    def _check_same_run(self, ckpt: dict[str, Any], tr: dict[str, Any], path: Any) -> None:
        old = TrainingConfig.model_validate_json(tr["config"]).model_dump()
        new = self.config.model_dump()
        # "auto" and the weighting it stands for with this net are the same run
        for cfg in (old, new):
            cfg["loss_weighting"] = resolve_loss_weighting(cfg["loss_weighting"], self.net)
        # a cosine schedule is laid out over `steps`: changing it would change the trajectory
        free = RESUMABLE_CHANGES - ({"steps"} if new["lr_decay"] == "cosine" else set())
        diff = sorted(k for k in new if k not in free and old.get(k) != new[k])
        problems = [f"training.{k}: {old.get(k)!r} in the checkpoint, {new[k]!r} now"
                    for k in diff]
        if "steps" in diff and new["lr_decay"] == "cosine":
            problems[diff.index("steps")] += (" (a cosine LR schedule is laid out over `steps`; "
                                              "to extend finished runs, train them with "
                                              "lr_decay = \"constant\")")
        if int(tr["n_train"]) != len(self.train_data):
            problems.append(f"{tr['n_train']} training pairs then, {len(self.train_data)} now")
        sig = ckpt["sigmas"].to(self.sigmas)
        if sig.shape != self.sigmas.shape or not torch.equal(sig, self.sigmas):
            problems.append("a different sigma ladder")
        saved, now = ckpt["normalization"], self.normalization.state_dict()
        if set(saved) != set(now) or any(not torch.equal(saved[k].cpu(), v.cpu())
                                         for k, v in now.items()):
            problems.append("a different data normalisation")
        if problems:
            raise CheckpointError(
                f"{path} belongs to another training run: " + "; ".join(problems)
                + ". Resume with the original settings and data, or train afresh in a new "
                "checkpoint_dir"
            )


# -- helpers -----------------------------------------------------------------------------------
def training_normalization(train: Dataset, cfg: TrainingConfig) -> Normalization:
    """The normalisation the net trains in: the dataset's per-channel one, with y refitted
    per pixel under ``y_normalization = "pixel"`` and x's statistics refitted on ``log x``
    under ``x_transform = "log"``."""
    norm = train.normalization
    if cfg.y_normalization == "pixel":
        norm = norm.with_y_per_pixel(train.y)
    if cfg.x_transform == "log":
        norm = norm.with_x_log(train.x)
    return norm


def _seeded(seed: int, stream: int, epoch: int) -> torch.Generator:
    """A CPU generator for (seed, stream, epoch), well mixed by NumPy's SeedSequence."""
    return seeded_generator(seed, stream, epoch)


def _chunks(data: Dataset, size: int):
    for i in range(0, len(data), size):
        yield data.x[i:i + size], data.y[i:i + size]


def _resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"training.device {name!r} is not a device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"training.device is {name!r} but CUDA is not available here; set "
            f"training.device = 'cpu' or run on a GPU machine"
        )
    return device


def _make_optimizer(net: torch.nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(net.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def _check_data(net: torch.nn.Module, data: Dataset, name: str) -> None:
    if len(data) == 0:
        raise DataError(f"the {name} dataset is empty; simulate some pairs first")
    for which in ("x", "y"):
        want = getattr(net, f"{which}_shape", None)
        have = getattr(data, f"{which}_shape")
        if want is not None and tuple(want) != tuple(have):
            raise DataError(
                f"the network expects {which} of shape {tuple(want)} but the {name} dataset "
                f"has {which} of shape {have}; build the net with {which}_shape={have}"
            )
        check_finite(getattr(data, which), f"{name} dataset {which}")
    check_training_pairs(data.x, data.y, data.y_clean, f"{name} dataset")
