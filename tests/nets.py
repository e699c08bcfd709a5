"""A tiny conditional score network for core tests (no plugin needed).

:class:`TinyScoreNet` is an MLP on the flattened ``(x, y, log sigma)`` whose output is divided by
sigma (the NCSNv2 output scaling): for Gaussian problems the exact noised score
``-(S + sigma^2 I)^-1 (x - m(y))`` is linear in x and y, so sigma * score is a smooth bounded
function of (x, y, log sigma) that a small MLP fits in a few hundred steps.

:data:`PLUGIN` registers it as score_net ``"tiny-mlp"``; tests add it with
``invdiff.plugins.get_registry().add_plugin(PLUGIN, name=...)`` and reset the registry after.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from pydantic import Field

from invdiff.hookspecs import hookimpl
from invdiff.interfaces import ScoreNet
from invdiff.params import Params


class TinyParams(Params):
    x_shape: tuple[int, ...] = (1, 2, 2)
    y_shape: tuple[int, ...] = (1, 2, 2)
    hidden: int = Field(64, ge=1)
    seed: int = 0
    output: str = "ncsn"


class TinyScoreNet(ScoreNet):
    """``s(x, y, sigma) = MLP([x, y, log sigma]) / sigma`` on flattened inputs, or with
    ``output = "edm"`` the EDM form ``s = (F(x / r, y, log sigma) / sigma - x / r) / r``,
    ``r = sqrt(1 + sigma^2)`` (the U-Net's default; ``invdiff.scorenet``).

    x: ``(B, *x_shape)``, y: ``(B, *y_shape)``, sigma: ``(B,)``; returns ``(B, *x_shape)``.
    ``seed`` fixes the initial weights (drawn from a private generator, not the global RNG).
    """

    def __init__(
        self,
        x_shape: tuple[int, ...] = (1, 2, 2),
        y_shape: tuple[int, ...] = (1, 2, 2),
        hidden: int = 64,
        seed: int = 0,
        output: str = "ncsn",
    ) -> None:
        super().__init__()
        self.x_shape, self.y_shape, self.output = tuple(x_shape), tuple(y_shape), output
        dx, dy = math.prod(self.x_shape), math.prod(self.y_shape)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(dx + dy + 1, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, dx),
        )
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():  # uniform(-1/sqrt(fan_in), ..), as torch's default
                bound = 1.0 / math.sqrt(p.shape[-1])
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        sigma = sigma.reshape(b, 1).to(x.dtype)
        flat = x.reshape(b, -1)
        if self.output == "edm":
            root = torch.sqrt(1 + sigma.square())
            flat = flat / root
        out = self.mlp(torch.cat([flat, y.reshape(b, -1).to(x.dtype), sigma.log()], dim=1)) / sigma
        if self.output == "edm":
            out = (out - flat) / root
        return out.reshape(x.shape)


@hookimpl
def register_score_nets(register):
    register("tiny-mlp", TinyScoreNet, TinyParams, "tiny MLP score net for core tests")


#: A plugin object holding only the hook above (registering this whole module would also work,
#: but a namespace keeps the registered plugin free of the test helpers' other names).
PLUGIN = SimpleNamespace(register_score_nets=register_score_nets)


def gaussian_datasets(problem, n_train: int, n_val: int, seed: int = 0):
    """Train and validation :class:`~invdiff.data.Dataset` s of a reference problem (physical
    units, train keeps ``y_clean``), normalised with statistics of the training part."""
    from invdiff.data import Dataset, Normalization

    g = torch.Generator().manual_seed(seed)
    x = problem.prior.sample(n_train + n_val, generator=g)
    y_clean = problem.forward_model(x)
    y = problem.noise_model(y_clean, generator=g)
    norm = Normalization.fit(x[:n_train], y[:n_train])
    train = Dataset(x[:n_train], y[:n_train], norm, y_clean=y_clean[:n_train])
    return train, Dataset(x[n_train:], y[n_train:], norm)
