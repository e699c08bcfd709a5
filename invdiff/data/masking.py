r"""Measurements with gaps: NaN marks an entry of y that was not measured.

Real displacement and phase maps have holes (low-correlation regions of speckle tracking,
unwrappable phase, dead pixels, a smaller region of interest). A model trained with
``training.masking = true`` serves any pattern of missing entries with one network:

* **What the net sees.** :func:`masked_input` turns a normalised measurement ``y_n (B, C, H, W)``
  and its mask into ``[where(mask, y_n, 0), mask]`` of shape ``(B, C + 1, H, W)``: the
  measured values (0, the training mean, where nothing was measured) and one channel that says
  which pixels were measured. A masked model's net is therefore built with
  ``y_shape = (C + 1, H, W)``. A pixel counts as measured when all its channels are finite; a
  NaN in any channel hides the whole pixel.
* **Training masks** (:func:`draw_training_masks`): each example hides a random set of pixels,
  scattered ones with a fraction drawn uniformly from :data:`SCATTERED_FRACTION` = [0, 0.5],
  and, with probability :data:`BLOCK_PROBABILITY` = 1/2, also a rectangular block whose area is
  uniform in :data:`BLOCK_AREA` = [0, 1/4] of the field (aspect ratio between 1:2 and 2:1,
  uniform in log, placed uniformly). The hidden fraction of an example thus lies in
  [0, 0.625] (mean about 0.30). An example with nothing left is shown complete.
* **Scenarios** (:func:`apply_scenario`): the study's held-out measurements with gaps,
  ``"random-F"`` (round(F H W) pixels chosen at random) or ``"block-F"`` (one block of
  round(sqrt(F) H) x round(sqrt(F) W) pixels at a random position), each measurement's gap
  drawn from a generator seeded by ``(seed, m)``.

References with gaps use only the measured entries (the linear-Gaussian posterior drops the
rows of A where y is NaN; the MCMC likelihoods sum over the measured entries), so every
evaluation works with a mask; metrics against the truth stay on x, which is complete.
"""

from __future__ import annotations

import math

import torch

from invdiff.checks import seeded_generator
from invdiff.errors import ConfigError, DataError

__all__ = ["SCATTERED_FRACTION", "BLOCK_PROBABILITY", "BLOCK_AREA", "SCENARIO_SEED",
           "observed_pixels", "masked_input", "check_gaps", "draw_training_masks",
           "training_input", "parse_scenario", "scenario_mask", "apply_scenario", "hide"]

#: scattered missing fraction of a training example: uniform on this range
SCATTERED_FRACTION = (0.0, 0.5)
#: probability that a training example also loses a rectangular block
BLOCK_PROBABILITY = 0.5
#: area of that block, as a fraction of the field: uniform on this range
BLOCK_AREA = (0.0, 0.25)
#: largest aspect ratio of a training block (height / width between 1/A and A)
BLOCK_ASPECT = 2.0
#: the study's gap rule: measurement m of scenario s gets seeded_generator(SCENARIO_SEED, m)
SCENARIO_SEED = 60_013
_KINDS = ("random", "block")


def observed_pixels(y: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` bool: True where every channel of ``y (B, C, H, W)`` is not NaN."""
    return ~torch.isnan(y).any(dim=1, keepdim=True)


def masked_input(y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """What a masked model's net sees: ``[where(m, y, 0), m]`` ``(B, C + 1, H, W)`` in y's dtype,
    with ``m`` = ``mask`` (``(B, 1, H, W)`` bool, True = measured; None: all) and the pixels
    of ``y`` that are not NaN. ``y``: normalised measurements ``(B, C, H, W)``, NaN where not
    measured. A measurement with no measured pixel left is a :class:`DataError`."""
    m = observed_pixels(y)
    if mask is not None:
        m = m & mask.to(device=y.device, dtype=torch.bool)
    if not bool(m.flatten(1).any(1).all()):
        first = int((~m.flatten(1).any(1)).nonzero()[0])
        raise DataError(f"measurement {first} has no measured entry (all NaN, or a mask that "
                        f"hides every entry); give at least one measured entry")
    values = torch.where(m, y, torch.zeros((), dtype=y.dtype, device=y.device))
    return torch.cat([values, m.to(y.dtype)], dim=1)


def check_gaps(y: torch.Tensor, masking: bool, name: str = "y") -> torch.Tensor:
    """Refuse measurements ``y (B, ...)`` a model cannot take, naming the cause: an infinite
    entry (never a gap: only NaN means "not measured"); any NaN for a model trained without
    masking (``masking=False``); a measurement with no measured entry for a masked one."""
    inf = torch.isinf(y)
    if bool(inf.any()):
        raise DataError(f"{name} has {int(inf.sum())} infinite entries; only NaN marks an entry "
                        f"that was not measured, so replace them (by NaN where nothing was "
                        f"measured)")
    nan = torch.isnan(y)
    if not bool(nan.any()):
        return y
    if not masking:
        where = int(nan.flatten(1).any(1).nonzero()[0])
        raise DataError(f"{name} has {int(nan.sum())} NaN entries (first in measurement "
                        f"{where}), but this model was trained on complete measurements "
                        f"(training.masking is off): train with training.masking = true to "
                        f"sample measurements with gaps, or fill them")
    empty = nan.flatten(1).all(1)
    if bool(empty.any()):
        raise DataError(f"{name}: measurement {int(empty.nonzero()[0])} is all NaN (nothing "
                        f"measured); give at least one measured entry")
    return y


def hide(y: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """``y (B, C, H, W)`` with NaN wherever ``observed (B, 1, H, W)`` is False."""
    nan = torch.full((), float("nan"), dtype=y.dtype, device=y.device)
    return torch.where(observed.to(device=y.device, dtype=torch.bool), y, nan)


def draw_training_masks(n: int, size: tuple[int, int], generator: torch.Generator | None = None
                        ) -> torch.Tensor:
    """``n`` training masks ``(n, 1, H, W)`` bool (True = measured) by the rule of the module
    docstring, drawn on the generator's device (CPU if None)."""
    h, w = int(size[0]), int(size[1])
    dev = generator.device if generator is not None else torch.device("cpu")

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=dev, dtype=torch.float64)

    lo, hi = SCATTERED_FRACTION
    frac = lo + (hi - lo) * u(n, 1, 1, 1)
    hidden = u(n, 1, h, w) < frac
    has_block = u(n) < BLOCK_PROBABILITY
    a_lo, a_hi = BLOCK_AREA
    area = a_lo + (a_hi - a_lo) * u(n)
    aspect = torch.exp(math.log(BLOCK_ASPECT) * (2 * u(n) - 1))
    bh = (h * (area * aspect).sqrt()).round().clamp(0, h)
    bw = (w * (area / aspect).sqrt()).round().clamp(0, w)
    top = ((h - bh + 1) * u(n)).floor().clamp(max=h - bh)
    left = ((w - bw + 1) * u(n)).floor().clamp(max=w - bw)
    rows = torch.arange(h, device=dev, dtype=torch.float64).view(1, h, 1)
    cols = torch.arange(w, device=dev, dtype=torch.float64).view(1, 1, w)
    block = ((rows >= top.view(-1, 1, 1)) & (rows < (top + bh).view(-1, 1, 1))
             & (cols >= left.view(-1, 1, 1)) & (cols < (left + bw).view(-1, 1, 1)))
    hidden = hidden | (block & has_block.view(-1, 1, 1)).unsqueeze(1)
    empty = hidden.flatten(1).all(1)
    hidden[empty] = False  # nothing left to condition on: show that example complete
    return ~hidden


def training_input(y: torch.Tensor, enabled: bool, seed: int, stream: int, index: int
                   ) -> torch.Tensor:
    """What a masked model's net trains on: the normalised batch ``y (B, C, H, W)`` under
    training masks (:func:`draw_training_masks`) drawn from a generator seeded by ``(seed,
    stream, index)``, so a step's masks need no saved state (a resumed run draws the same
    ones) and every rank draws the same; then :func:`masked_input`. Pixels that are NaN in
    ``y`` stay hidden; an example the drawn mask would leave empty keeps its own measured
    pixels. ``enabled=False`` (``training.masking`` off) returns ``y``."""
    if not enabled:
        return y
    drawn = draw_training_masks(len(y), tuple(y.shape[-2:]), seeded_generator(seed, stream, index))
    own = observed_pixels(y)
    mask = own & drawn.to(y.device)
    empty = ~mask.flatten(1).any(1)
    mask = torch.where(empty.view(-1, 1, 1, 1), own, mask)
    return masked_input(y, mask)


def parse_scenario(name: str) -> tuple[str, float]:
    """``"none"`` -> ("none", 0); ``"random-F"`` / ``"block-F"`` -> (kind, F) with 0 < F < 1."""
    if name == "none":
        return "none", 0.0
    kind, _, value = str(name).partition("-")
    try:
        frac = float(value)
    except ValueError:
        frac = math.nan
    if kind not in _KINDS or not 0 < frac < 1:
        raise ConfigError(f"missing-entry scenario {name!r}: use 'none', 'random-F' (a fraction "
                          f"F of the pixels missing at random) or 'block-F' (one block covering "
                          f"F of the field), with 0 < F < 1, e.g. 'random-0.3', 'block-0.25'")
    return kind, frac


def scenario_mask(name: str, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """One measurement's mask ``(1, H, W)`` bool (True = measured) of scenario ``name``."""
    kind, frac = parse_scenario(name)
    h, w = int(size[0]), int(size[1])
    keep = torch.ones(h * w, dtype=torch.bool)
    if kind == "random":
        k = min(h * w - 1, round(frac * h * w))
        keep[torch.randperm(h * w, generator=generator)[:k]] = False
    elif kind == "block":
        bh = min(h, max(1, round(math.sqrt(frac) * h)))
        bw = min(w, max(1, round(math.sqrt(frac) * w)))
        top = int(torch.randint(h - bh + 1, (1,), generator=generator))
        left = int(torch.randint(w - bw + 1, (1,), generator=generator))
        grid = keep.view(h, w)
        grid[top:top + bh, left:left + bw] = False
        if not bool(grid.any()):
            grid[0, 0] = True
    return keep.view(1, h, w)


def apply_scenario(y: torch.Tensor, name: str, seed: int = SCENARIO_SEED) -> torch.Tensor:
    """``y (M, C, H, W)`` with NaN at the pixels scenario ``name`` hides; measurement m's gap
    comes from a generator seeded by ``(seed, m)`` (the same for every net, sampler and noise
    level). ``"none"`` returns y unchanged."""
    if parse_scenario(name)[0] == "none":
        return y
    masks = torch.stack([scenario_mask(name, tuple(y.shape[-2:]), seeded_generator(seed, m))
                         for m in range(len(y))])
    return hide(y, masks)
