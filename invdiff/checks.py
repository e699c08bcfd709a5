"""Input checks shared by every component: shapes and finiteness, with errors that say the fix."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from invdiff.errors import DataError


def to_tensor(a: Any, name: str) -> torch.Tensor:
    """``a`` (a torch tensor, or a NumPy array or nested list of real numbers) as a tensor.

    Raises :class:`DataError` naming ``name`` for complex, boolean or non-numeric data, which
    no measurement or field of invdiff can be."""
    if not isinstance(a, torch.Tensor):
        arr = np.asarray(a)
        if arr.dtype.kind not in "fiu":
            raise DataError(f"{name} must hold real numbers; got an array of dtype {arr.dtype} "
                            f"(convert it to float, e.g. .astype('float32'))")
        a = torch.from_numpy(np.ascontiguousarray(arr))
    if a.is_complex() or a.dtype == torch.bool:
        raise DataError(f"{name} must hold real numbers; got dtype {a.dtype} (for a complex "
                        f"measurement give its real parts as channels)")
    return a


def as_batch(
    t: torch.Tensor, item_shape: tuple[int, ...], name: str, allow_single: bool = True
) -> torch.Tensor:
    """Return ``t`` as a batch ``(B, *item_shape)``; a single item gains a batch dimension.

    Raises :class:`DataError` naming ``name`` when the shape does not fit.
    """
    if not isinstance(t, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if allow_single and tuple(t.shape) == tuple(item_shape):
        return t.unsqueeze(0)
    if t.dim() != len(item_shape) + 1 or tuple(t.shape[1:]) != tuple(item_shape):
        raise DataError(
            f"{name} has shape {tuple(t.shape)}; expected (B, {', '.join(map(str, item_shape))})"
            f"{' or ' + str(tuple(item_shape)) if allow_single else ''}"
        )
    return t


def check_finite(t: torch.Tensor, name: str, fix: str = "clean or drop those entries first"
                 ) -> torch.Tensor:
    """Raise :class:`DataError` if ``t`` holds NaN or Inf (and say where, and ``fix``)."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        idx = bad.nonzero()[0].tolist()
        raise DataError(
            f"{name} contains {int(bad.sum())} non-finite values (NaN or Inf), the first at "
            f"index {tuple(idx)}; {fix}"
        )
    return t


#: why a NaN in the x of training pairs is refused, and what NaN means in y
X_COMPLETE = ("x must be complete: the prior's fields have no gaps (NaN marks an entry of y "
              "that was not measured, with training.masking, never an entry of x); drop those "
              "pairs")
Y_GAPS = ("NaN marks an entry that was not measured: set training.masking = true to train on "
          "measurements with gaps, or drop those pairs")


def check_training_pairs(x: torch.Tensor, y: torch.Tensor, y_clean: torch.Tensor | None = None,
                         name: str = "training", masking: bool = False) -> None:
    """Refuse data a score net cannot learn from, naming the problem and the fix: x, y (and
    y_clean, used to redraw the noise) must be floating point and finite, and x must vary
    (a constant x leaves nothing to learn and no scale for the noise ladder). With
    ``masking`` (``training.masking``) y may hold NaN (not measured), but no infinity, and
    every example must keep a measured entry.

    Integer or NaN fields otherwise surface far from their cause (a ladder "of distance 0",
    a loss that "became nan" at some step, a dtype clash inside a convolution)."""
    for which, t in (("x", x), ("y", y), ("y_clean", y_clean)):
        if t is None:
            continue
        if not t.is_floating_point():
            raise DataError(
                f"the {name} {which} has dtype {t.dtype}, but x and y must be floating-point "
                f"fields (a prior, forward or noise model returned integers?); convert them "
                f"with .float(), or return float32 from the component"
            )
        if which == "y" and masking:
            _check_gappy_y(t, name)
            continue
        check_finite(t, f"the {name} {which}",
                     X_COMPLETE if which == "x" else Y_GAPS if which == "y" else
                     "clean or drop those entries first")
    if x.shape[0] > 1 and bool((x == x[:1]).all()):
        raise DataError(
            f"the {name} x is the same field in every sample ({x.shape[0]} samples): there is "
            f"nothing to learn; check the prior (its parameters, or that it uses the generator)"
        )


def _check_gappy_y(y: torch.Tensor, name: str) -> None:
    """Training y with gaps: NaN (not measured) is welcome, infinity is not, and each example
    must keep a measured entry."""
    check_finite(torch.nan_to_num(y, nan=0.0, posinf=math.inf, neginf=-math.inf),
                 f"the {name} y", "only NaN marks an entry that was not measured; drop "
                 "those pairs")
    empty = torch.isnan(y).flatten(1).all(1)
    if bool(empty.any()):
        raise DataError(f"the {name} y: example {int(empty.nonzero()[0])} is all NaN (nothing "
                        f"measured), so there is nothing to condition on; drop those pairs")


def generator_device(
    generator: torch.Generator | None, device: torch.device | str | None = None
) -> torch.device:
    """The device to draw on: ``device`` if given, else the generator's, else CPU."""
    if device is not None:
        return torch.device(device)
    if generator is not None:
        return generator.device
    return torch.device("cpu")


def randn(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    like: torch.Tensor,
) -> torch.Tensor:
    """Standard normal noise shaped ``shape`` with ``like``'s dtype and device.

    Drawn on the generator's device (so a CPU generator gives the same numbers whatever the
    target device), then moved.
    """
    dev = generator.device if generator is not None else like.device
    z = torch.randn(tuple(shape), generator=generator, dtype=like.dtype, device=dev)
    return z.to(like.device)


def seeded_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded by the integers ``keys`` (e.g. seed, stream, index),
    mixed by NumPy's SeedSequence so that neighbouring keys give unrelated streams."""
    state = np.random.SeedSequence(list(keys)).generate_state(2, np.uint32)
    return torch.Generator(device).manual_seed(int(state[0]) << 32 | int(state[1]))
