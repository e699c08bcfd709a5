r"""Memorisation and variance collapse: do posterior samples cluster on training examples?

A net trained too long on too few pairs can learn the training fields themselves: its
posterior samples then snap to training examples with similar measurements ("selective
memorisation") and its spread collapses. The check compares how close posterior samples come
to the training set with how close a field the net never saw comes to it.

For fields :math:`u` and the training fields :math:`x_1 \dots x_N` (physical units), the
nearest-training distance is the RMS difference per pixel to the closest one,

.. math::  d(u) = \min_j \sqrt{\tfrac1D \lVert u - x_j \rVert^2}.

Reported (means over the checked fields):

* ``nn_train_dist``: :math:`d` of posterior samples (the first ``max_samples`` of each
  measurement);
* ``nn_train_dist_truth``: :math:`d` of the held-out truths, fresh draws of the prior;
* ``memorisation_ratio`` = ``nn_train_dist / nn_train_dist_truth``: about 1 or above for a
  healthy posterior (its samples scatter around a field the net never saw), well below 1 when
  samples cluster on training examples;
* ``nn_train_dist_ref`` and ``memorisation_ratio_ref``: the same against a reference
  posterior's own samples, where the reference has them (exact or MCMC), the sharper yardstick.

Cost: one pass over the training set per checked field (chunked; ``max_samples`` bounds it).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["nearest_training_distance", "memorisation_metrics"]


def nearest_training_distance(fields: torch.Tensor, train: torch.Tensor,
                              chunk: int = 4096) -> torch.Tensor:
    """:math:`d(u)` of each field ``(K, *x_shape)`` against training fields ``(N, *x_shape)``:
    ``(K,)``, RMS per pixel, float64."""
    u = fields.detach().flatten(1).double().cpu()
    best = torch.full((len(u),), float("inf"), dtype=torch.float64)
    for i in range(0, len(train), chunk):
        t = train[i:i + chunk].detach().flatten(1).double().cpu()
        best = torch.minimum(best, torch.cdist(u, t).min(1).values)
    return best / u.shape[1] ** 0.5


def memorisation_metrics(samples: torch.Tensor, train_x: torch.Tensor,
                         truth: torch.Tensor | None = None, reference: Any = None,
                         max_samples: int = 16) -> dict[str, float]:
    """The module docstring's numbers for posterior ``samples (M, n, *x_shape)``."""
    k = min(max_samples, samples.shape[1])
    d_post = float(nearest_training_distance(samples[:, :k].flatten(0, 1), train_x).mean())
    out = {"nn_train_dist": d_post}
    if truth is not None:
        d_truth = float(nearest_training_distance(truth, train_x).mean())
        out.update(nn_train_dist_truth=d_truth, memorisation_ratio=d_post / d_truth)
    ref_samples = getattr(reference, "samples", None)
    if ref_samples is not None and len(ref_samples):
        ref_k = ref_samples[:, :k].flatten(0, 1)
        d_ref = float(nearest_training_distance(ref_k, train_x).mean())
        out.update(nn_train_dist_ref=d_ref, memorisation_ratio_ref=d_post / d_ref)
    return out
