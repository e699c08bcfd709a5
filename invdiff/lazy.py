"""Lazy package attributes: import a name's module only when the name is first used.

Plugin packages (and the core) export their classes this way so that importing the package,
which ``invdiff plugins`` and ``invdiff --help`` do, never imports torch::

    __getattr__, __all__ = lazy_exports(__name__, {"ElasticityFEM": "invdiff_elasticity.fem"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], list[str]]:
    """A module ``__getattr__`` resolving ``name -> getattr(import(exports[name]), name)``, and
    the matching ``__all__``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
