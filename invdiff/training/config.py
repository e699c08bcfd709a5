"""Options of the trainer (the ``training`` section of an experiment config).

Pydantic only: importing this module (which :mod:`invdiff.experiment.config` does) never
imports torch.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from invdiff.params import DEFAULT_THREADS

__all__ = ["TrainingConfig", "RESUMABLE_CHANGES", "LossWeighting", "LossWeightingOption",
           "SEED_MAX", "seed_field"]

#: seeds are integers in [0, SEED_MAX] (32 bits: what every generator invdiff seeds takes,
#: with room for the per-chunk and per-measurement seeds derived from them)
SEED_MAX = 2**32 - 1


def seed_field(default: int, description: str | None = None) -> Any:
    """A config field for a seed: an integer in [0, SEED_MAX], checked when the config loads
    (a negative seed would otherwise fail only after data were simulated)."""
    return Field(default, ge=0, le=SEED_MAX, description=description)

#: Config fields that may change when resuming: they do not alter the weight trajectory.
RESUMABLE_CHANGES = frozenset({"steps", "val_every", "checkpoint_every", "device", "threads",
                               "snapshot_steps", "tensorboard", "early_stopping"})
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
    early_stopping: int | None = Field(
        None, ge=1, description="stop once the EMA validation loss has not improved for this "
        "many validations; the final model keeps the best validation's EMA weights (guards "
        "against variance collapse and memorisation in long runs)"
    )
    tensorboard: bool = Field(False, description="log scalars to <out>/tensorboard/ (needs the "
                              "tensorboard package: pip install 'invdiff[tensorboard]')")
    seed: int = seed_field(0, "seed of the initial weights, batches and noise")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:1', ...")
    threads: int | None = Field(
        DEFAULT_THREADS, ge=1, description="CPU threads (torch and BLAS) while training; None: "
        "torch's default, one per core. One is the default: on a shared or loaded machine more "
        "threads made a small net's step 2-13x slower (docs/training.md, thread policy)"
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
    objective: str = Field(
        "dsm", description="the training objective (kind 'objective'): 'dsm', denoising "
        "score matching (built in), or one a plugin registers, e.g. 'flow-matching'"
    )
    objective_params: dict[str, Any] = Field(
        default_factory=dict, description="parameters of the objective's factory"
    )
    masking: bool = Field(
        False, description="train for measurements with gaps: hide a random set of each "
        "example's y entries (scattered, 0-50%, and a block of up to a quarter of the field) "
        "and give the net the mask, so one model takes y with NaN where nothing was measured "
        "(invdiff.data.masking; the net's y gets one channel more)"
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
