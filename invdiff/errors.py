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


def os_error_message(exc: OSError) -> str:
    """One line for a failed file operation: the path, the reason and the fix (disk full,
    read-only or forbidden folders name the ``--out`` option)."""
    import errno

    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or type(exc).__name__
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        fix = "free disk space there, or write elsewhere with --out DIR"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "choose a folder you can write to with --out DIR"
    elif code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        fix = "a file stands where a folder is needed (or the reverse): choose another --out DIR"
    else:
        fix = "check the path, its permissions and the disk"
    return f"{where or 'a file operation'}: {reason}; {fix}"
