"""Parameter models: validated by invdiff.create before the factory runs. No torch here."""

from pydantic import Field

from invdiff.params import LadderParams, Params


class DiscParams(Params):
    n: int = Field(16, ge=4, description="grid size")
    background: float = Field(1.0, gt=0)
    contrast: tuple[float, float] = (2.0, 4.0)
    radius: tuple[float, float] = (0.1, 0.3)


class LaplaceParams(Params):
    scale: float = Field(0.01, gt=0, description="Laplace scale b (std = sqrt(2) b)")


class BoxBlurParams(Params):
    factor: int = Field(2, ge=1, description="block size k: y is x averaged over k x k blocks")


class EulerParams(LadderParams):
    """The shared ladder parameters (x_shape, init, chunk_size, final_denoise, progress)."""
