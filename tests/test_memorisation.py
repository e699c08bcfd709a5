"""The memorisation check: exact posterior samples sit as far from the training set as fresh
prior draws do; samples copied from training examples are caught."""

from __future__ import annotations

import torch

from invdiff.evaluation.memorisation import memorisation_metrics, nearest_training_distance
from invdiff.reference import make_problem


def test_nearest_training_distance_is_the_rms_to_the_closest_field():
    g = torch.Generator().manual_seed(0)
    train, u = torch.randn(50, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)
    brute = torch.stack([((f - train) ** 2).flatten(1).mean(1).sqrt().min() for f in u])
    got = nearest_training_distance(u, train, chunk=7)  # chunks must not change the minimum
    torch.testing.assert_close(got, brute.double())


def test_exact_posterior_samples_are_not_flagged_and_copies_of_training_fields_are():
    prob = make_problem(n=8, noise_level=0.05)
    g = torch.Generator().manual_seed(1)
    train = prob.prior.sample(400, generator=g)
    truth = prob.prior.sample(6, generator=g)
    y = prob.noise_model(prob.forward_model(truth), generator=g)
    exact = prob.posterior.sample(y, 16, generator=g)
    healthy = memorisation_metrics(exact, train, truth)
    assert healthy["memorisation_ratio"] > 0.9  # samples scatter around an unseen field
    # a memorising "posterior": the training fields nearest to each exact sample, jittered
    flat = train.flatten(1)
    idx = torch.cdist(exact.flatten(2).flatten(0, 1), flat).argmin(1)
    copies = train[idx].reshape(exact.shape) + 0.01 * torch.randn(exact.shape, generator=g)
    memorised = memorisation_metrics(copies, train, truth)
    assert memorised["memorisation_ratio"] < 0.2
