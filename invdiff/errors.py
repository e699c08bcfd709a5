"""Exceptions of invdiff. Each message names the problem and the fix."""

from __future__ import annotations


class InvdiffError(Exception):
    """Base class of every error invdiff raises on purpose."""


class PluginError(InvdiffError):
    """A plugin failed to load, or two plugins clash."""


class UnknownComponentError(InvdiffError, KeyError):
    """No component of that kind and name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(InvdiffError, ValueError):
    """Invalid parameters or configuration."""


class DataError(InvdiffError, ValueError):
    """Wrong shapes, dtypes or non-finite values in user data."""


class CheckpointError(InvdiffError):
    """A checkpoint is missing, corrupt, truncated or does not match the model."""


class SamplingError(InvdiffError, FloatingPointError):
    """A sampling chain diverged (NaN or Inf)."""


class FolderInUseError(InvdiffError):
    """Another run holds the lock of an output folder."""
