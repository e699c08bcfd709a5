"""Parameter models: validated by invdiff.create before the factory runs. No torch here."""

from pydantic import Field

from invdiff.params import Params


class DiscParams(Params):
    n: int = Field(16, ge=4, description="grid size")
    background: float = Field(1.0, gt=0)
    contrast: tuple[float, float] = (2.0, 4.0)
    radius: tuple[float, float] = (0.1, 0.3)


class LaplaceParams(Params):
    scale: float = Field(0.01, gt=0, description="Laplace scale b (std = sqrt(2) b)")
