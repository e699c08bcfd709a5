"""Datasets of simulated pairs (x, y) and their per-channel normalisation.

On disk a dataset is one ``.npz`` file (NumPy's open zip-of-arrays format, readable without
invdiff) holding ``x (N, *x_shape)``, ``y (N, *y_shape)``, the normalisation statistics and a JSON
metadata string. See ``docs/data-format.md``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invdiff.errors import DataError
from invdiff.integrity import content_digest
from invdiff.io import atomic_write


@dataclass
class Normalization:
    """Maps ``x_n = (t(x) - x_mean) / x_std`` and ``y_n = (y - y_mean) / y_std``.

    ``t`` is the identity, or ``log`` when ``x_log`` is set (:meth:`with_x_log`; then the
    x statistics are those of ``log x``). Each statistic has shape ``(C,)`` (per channel: one
    mean and std over batch and pixels), or, for y only, the item shape ``(C, H, W)`` (per
    pixel, :meth:`with_y_per_pixel`). Networks train and sample in normalised units; results
    are mapped back with :meth:`denormalize_x`.
    """

    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor
    x_log: bool = False

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> Normalization:
        """Per-channel mean and std over batch and pixels of ``x (N, C, ...)`` and ``y``; NaN
        entries (of y: not measured, :mod:`invdiff.data.masking`) are left out."""
        def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            flat = t.transpose(0, 1).reshape(t.shape[1], -1).double()
            mean, std = _nan_mean_std(flat, 1)
            return mean.float(), std.clamp_min(eps).float()

        xm, xs = stats(x)
        ym, ys = stats(y)
        return cls(xm, xs, ym, ys)

    def with_y_per_pixel(self, y: torch.Tensor, floor: float = 1e-3) -> Normalization:
        """This normalisation with y standardised per pixel: ``y_mean, y_std (C, H, W)`` are
        the mean and std of ``y (N, C, H, W)`` over the batch at each pixel.

        Why: a pattern shared by every measurement (the compression ramp of a displacement
        field) dominates per-channel statistics, so the part of y that carries information
        about x reaches the net as a small ripple (elasticity at 16 x 16: 15% of the channel's
        std). Per-pixel statistics remove the shared pattern and give the varying part unit
        scale. An affine bijection of y, so the posterior is unchanged. Each pixel's std is
        floored at ``floor`` x its channel's std, so a pixel that never varies (a clamped
        boundary) is centred, not blown up.
        """
        flat = y.double()
        std_c = _nan_mean_std(flat.transpose(0, 1).reshape(y.shape[1], -1), 1)[1]
        mean, std = _nan_mean_std(flat, 0)  # NaN (not measured) entries left out
        floor_c = (floor * std_c).clamp_min(1e-12).reshape(-1, *([1] * (y.dim() - 2)))
        std = torch.where(torch.isnan(std), floor_c.expand_as(std), std)
        return Normalization(self.x_mean, self.x_std, torch.nan_to_num(mean).float(),
                             torch.maximum(std, floor_c).float(), self.x_log)

    def with_x_log(self, x: torch.Tensor) -> Normalization:
        """This normalisation with the net working on ``log x``: x statistics refitted per
        channel on ``log x (N, C, ...)``; :meth:`denormalize_x` returns ``exp`` of the affine
        map, so samples are positive.

        Why: a positive field whose structure is multiplicative (a modulus image: inclusion
        / background ratios on a background that varies between samples) has a scale that
        varies with its level, so in linear units one noise level is coarse for the stiff
        samples and fine for the soft ones; in log units the ratios are differences of one
        scale. The posterior is that of the same x (a bijection; the sampler's Gaussian
        noise is added to log x, which the prior's score accounts for).
        """
        x = x.double()
        bad = int((~torch.isfinite(x)).sum())
        if bad or float(x.min()) <= 0:
            raise DataError(
                f"x_transform = 'log' needs a positive, finite x; the training x has minimum "
                f"{float(x.min()):.4g} and {bad} non-finite values. Use x_transform = "
                f"'identity' for fields that can be zero or negative"
            )
        flat = x.log().transpose(0, 1).reshape(x.shape[1], -1)
        return Normalization(flat.mean(1).float(), flat.std(1).clamp_min(1e-8).float(),
                             self.y_mean, self.y_std, x_log=True)

    @classmethod
    def identity(cls, x_channels: int, y_channels: int) -> Normalization:
        return cls(torch.zeros(x_channels), torch.ones(x_channels),
                   torch.zeros(y_channels), torch.ones(y_channels))

    @staticmethod
    def _view(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # (C,) -> (1, C, 1, ..., 1), (C, H, W) -> (1, C, H, W), on t's device and dtype
        return s.to(device=t.device, dtype=t.dtype).reshape(
            1, *s.shape, *([1] * (t.dim() - 1 - s.dim())))

    def normalize_x(self, x: torch.Tensor) -> torch.Tensor:
        t = x.log() if self.x_log else x
        return (t - self._view(self.x_mean, x)) / self._view(self.x_std, x)

    def denormalize_x(self, x: torch.Tensor) -> torch.Tensor:
        t = x * self._view(self.x_std, x) + self._view(self.x_mean, x)
        return t.exp() if self.x_log else t

    def normalize_y(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self._view(self.y_mean, y)) / self._view(self.y_std, y)

    def denormalize_y(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._view(self.y_std, y) + self._view(self.y_mean, y)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {k: getattr(self, k).clone() for k in ("x_mean", "x_std", "y_mean", "y_std")}
        if self.x_log:  # only when set, so identity-transform states stay as they were
            state["x_log"] = torch.tensor(True)
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Normalization:
        try:
            stats = (torch.as_tensor(state[k]).float()
                     for k in ("x_mean", "x_std", "y_mean", "y_std"))
            return cls(*stats, x_log=bool(state.get("x_log", False)))
        except KeyError as exc:
            raise DataError(f"normalisation statistics lack {exc.args[0]!r}") from None


def _nan_mean_std(t: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std of ``t`` along ``dim`` over its entries that are not NaN (as
    ``mean``/``std`` when there are none: a measurement with gaps does not bias the
    statistics). A slice with fewer than two such entries has std NaN."""
    if not bool(torch.isnan(t).any()):
        return t.mean(dim), t.std(dim)
    ok = ~torch.isnan(t)
    n = ok.sum(dim)
    mean = torch.where(ok, t, 0.0).sum(dim) / n
    dev = torch.where(ok, t - mean.unsqueeze(dim), 0.0)
    return mean, (dev.square().sum(dim) / (n - 1)).sqrt()


@dataclass
class Dataset:
    """Simulated pairs: ``x (N, *x_shape)``, ``y (N, *y_shape)`` with their normalisation.

    ``y_clean`` (noise-free forward outputs, same shape as y) is kept when simulated, so that
    training can redraw the measurement noise every epoch. All in physical units.
    """

    x: torch.Tensor
    y: torch.Tensor
    normalization: Normalization
    meta: dict[str, Any] = field(default_factory=dict)
    y_clean: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def y_shape(self) -> tuple[int, ...]:
        return tuple(self.y.shape[1:])

    def split(self, n_val: int) -> tuple[Dataset, Dataset]:
        """The first ``len - n_val`` pairs for training, the last ``n_val`` for validation;
        both keep the normalisation fitted on the whole set's training part."""
        if not 0 <= n_val < len(self):
            raise DataError(f"n_val={n_val} must be in [0, {len(self)})")
        cut = len(self) - n_val
        yc = self.y_clean
        return (
            Dataset(self.x[:cut], self.y[:cut], self.normalization, self.meta,
                    None if yc is None else yc[:cut]),
            Dataset(self.x[cut:], self.y[cut:], self.normalization, self.meta,
                    None if yc is None else yc[cut:]),
        )

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (``.npz``)."""
        arrays = {"x": self.x.numpy(), "y": self.y.numpy()}
        if self.y_clean is not None:
            arrays["y_clean"] = self.y_clean.numpy()
        arrays.update({k: v.numpy() for k, v in self.normalization.state_dict().items()})
        arrays["meta"] = np.array(json.dumps(self.meta))
        return save_arrays(path, arrays)


CHECKSUM = "sha256"  # the array holding content_digest of the others


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an ``.npz`` atomically, with their checksum (array ``sha256``)."""
    arrays = {**arrays, CHECKSUM: np.array(content_digest(arrays))}
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_arrays(path: str | Path, fix: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` written by :func:`save_arrays`, checksum verified (and
    removed). An unreadable or damaged file raises :class:`DataError` naming it and ``fix``;
    a file without checksum (older invdiff, or written by hand) loads with a warning naming
    it (damage to it cannot be detected)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, OSError ...
        first = (str(exc).splitlines() or [""])[0]
        raise DataError(f"{path} is not a readable .npz file (corrupt or truncated: "
                        f"{type(exc).__name__}: {first}); {fix}") from None
    stored = arrays.pop(CHECKSUM, None)
    if stored is None:
        warnings.warn(f"{path} carries no checksum (written by an older invdiff or by hand), "
                      f"so damage to its arrays cannot be detected; it is used as it is",
                      stacklevel=3)
    elif content_digest(arrays) != str(stored):
        raise DataError(f"{path} is damaged: its arrays do not match the sha256 checksum "
                        f"written with them; {fix}")
    return arrays


def load_dataset(path: str | Path) -> Dataset:
    """Read a dataset written by :meth:`Dataset.save` or :func:`invdiff.simulate` (its
    checksum verified)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no dataset at {path}; run `invdiff simulate CONFIG` first")
    arrays = load_arrays(path, "delete it and simulate again (`invdiff simulate CONFIG`)")
    missing = {"x", "y"} - set(arrays)
    if missing:
        raise DataError(f"{path} lacks arrays {sorted(missing)}; it is not an invdiff dataset")
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    if "x_mean" in arrays:
        norm = Normalization.from_state_dict(arrays)
    else:
        norm = Normalization.fit(x, y)
    meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    y_clean = torch.from_numpy(arrays["y_clean"]) if "y_clean" in arrays else None
    return Dataset(x, y, norm, meta, y_clean)
