"""Sampling calls the score in chunks of at most 256 chains by default (bounded activation
memory), with the same samples as one call for all chains."""

from __future__ import annotations

import pytest
import torch

import invdiff
from invdiff.data import Normalization
from invdiff.params import DEFAULT_CHUNK_SIZE
from invdiff.sampling.posterior import sample_posterior
from invdiff.sampling.sigmas import geometric
from invdiff.training.model import ScoreModel
from tests.nets import TinyScoreNet


class Recording(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.batches = model, []
        self.normalization, self.sigmas = model.normalization, model.sigmas
        self.x_shape, self.y_shape = model.x_shape, model.y_shape

    def forward(self, x, y, sigma):
        self.batches.append(x.shape[0])
        return self.model(x, y, sigma)


@pytest.mark.parametrize("sampler", ["annealed-langevin", "predictor-corrector"])
def test_default_chunks_bound_the_batch_and_keep_the_samples(sampler):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 2, 2, generator=g), torch.randn(64, 1, 2, 2, generator=g)
    model = ScoreModel(TinyScoreNet(hidden=16), Normalization.fit(x, y), geometric(3, 0.1, 3))
    assert invdiff.create("sampler", sampler).chunk_size == DEFAULT_CHUNK_SIZE == 256
    steps = "corrector_steps" if sampler == "predictor-corrector" else "steps_per_level"
    kw = {"n": 200, steps: 1, "progress": False}
    rec = Recording(model.eval())
    chunked = sample_posterior(rec, y[:3], sampler, generator=torch.Generator().manual_seed(1),
                               **kw)
    whole = sample_posterior(model, y[:3], sampler, chunk_size=None,
                             generator=torch.Generator().manual_seed(1), **kw)
    assert max(rec.batches) == 256 and set(rec.batches) == {256, 600 - 2 * 256}
    assert torch.equal(chunked.samples, whole.samples)
