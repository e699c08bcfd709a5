"""A seed gives the same prior draws under 1 and 2 threads, for every installed prior."""

from __future__ import annotations

import pytest

import invdiff
from invdiff.testing import check_prior_threads

# small grids keep the check fast; defaults for everything else
SMALL = {"gaussian-field": {"n": 24}, "lognormal-field": {"n": 48}}


@pytest.mark.parametrize("name", invdiff.available("prior"))
def test_prior_draws_do_not_depend_on_threads(name):
    check_prior_threads(lambda: invdiff.create("prior", name, **SMALL.get(name, {})), n=4)


def test_check_catches_a_thread_dependent_prior():
    import torch

    class ThreadDependent:
        shape = (1, 2, 2)

        def sample(self, n, generator=None):
            return torch.full((n, 1, 2, 2), float(torch.get_num_threads()))

    with pytest.raises(AssertionError, match="differ between 1 and 2 threads"):
        check_prior_threads(ThreadDependent)
