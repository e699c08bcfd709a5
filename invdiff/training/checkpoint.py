"""Training checkpoints: one ``.pt`` file per state, written atomically, loaded without pickle.

A checkpoint is a ``torch.save`` of a dict of tensors and plain values only, so it loads with
``torch.load(..., weights_only=True)`` (no code from a file is ever run)::

    format_version  int      FORMAT_VERSION; any other value is refused
    model           dict     state_dict of the network being trained
    ema             dict     state_dict of its exponential moving average (used for sampling)
    optimizer       dict     optimizer state_dict (Adam moments, step counts)
    step            int      optimisation steps done
    normalization   dict     Normalization.state_dict(): x_mean, x_std, y_mean, y_std (C,);
                             y's (C, H, W) under training.y_normalization = "pixel";
                             x_log (True) under training.x_transform = "log", else absent
    sigmas          Tensor   the noise ladder (L,), decreasing
    experiment      str      the validated experiment config as JSON ("null" when unknown)
    net_spec        str      {"name": ..., "params": ...} of the registered score_net, as JSON
    training        dict     trainer state needed to resume (config, RNG state, history, ...)
    checksum        str      "sha256:..." over every other field (invdiff.integrity); verified
                             on load, so damaged weights are refused (absent in older files)

Dict-valued configs are stored as JSON strings so that ``weights_only`` loading needs no
allow-listed classes; :func:`load_checkpoint` decodes them back into dicts.

``weights_only`` loading is safe on torch 2.6 and later only: earlier releases have a published
bypass (CVE-2025-32434) through which a crafted file runs code, so on them every load is
refused (:data:`MIN_SAFE_TORCH`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from invdiff.data import Normalization
from invdiff.errors import CheckpointError, ConfigError
from invdiff.integrity import content_digest
from invdiff.io import atomic_write
from invdiff.training.model import ScoreModel

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "ema", "optimizer", "step", "normalization",
                 "sigmas", "experiment", "net_spec", "training")
_JSON_KEYS = ("experiment", "net_spec")
CHECKSUM_KEY = "checksum"  # content_digest of every other field, verified on load
#: the first torch whose ``weights_only`` loading has no known way to run code from a file
MIN_SAFE_TORCH = (2, 6)

__all__ = ["FORMAT_VERSION", "MIN_SAFE_TORCH", "save_checkpoint", "load_checkpoint", "load_model",
           "check_safe_torch"]


def save_checkpoint(
    path: str | Path,
    *,
    model: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    step: int,
    normalization: Normalization,
    sigmas: torch.Tensor,
    experiment: dict[str, Any] | None = None,
    net_spec: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint to ``path`` atomically (a crash mid-write leaves the old file).

    ``model``, ``ema`` and ``optimizer`` are state dicts; ``experiment`` and ``net_spec`` must
    be JSON-able (they are stored as JSON strings); ``training`` holds only tensors and plain
    Python values (the trainer's resume state).
    """
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "ema": ema,
        "optimizer": optimizer,
        "step": int(step),
        "normalization": normalization.state_dict(),
        "sigmas": torch.as_tensor(sigmas).detach().cpu().clone(),
        "training": dict(training or {}),
    }
    for key, value in (("experiment", experiment), ("net_spec", net_spec)):
        try:
            payload[key] = json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"checkpoint field {key!r} must be JSON-able (dicts, lists, str, numbers): {exc}; "
                f"pass e.g. the pydantic model's model_dump(mode='json')"
            ) from None
    payload[CHECKSUM_KEY] = content_digest(payload)
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def check_safe_torch(path: str | Path | None = None) -> None:
    """Refuse to load checkpoints on a torch older than :data:`MIN_SAFE_TORCH`, whose
    ``weights_only`` loading a crafted file can bypass to run code (CVE-2025-32434)."""
    found = _torch_version(torch.__version__)
    if found is None or found >= MIN_SAFE_TORCH:
        return
    what = f"{path}: " if path is not None else ""
    raise CheckpointError(
        f"{what}refusing to load a checkpoint with torch {torch.__version__}: before "
        f"{'.'.join(map(str, MIN_SAFE_TORCH))}, torch's safe (weights_only) loading can be "
        f"bypassed by a crafted file to run code (CVE-2025-32434); upgrade torch "
        f"(pip install 'torch>={'.'.join(map(str, MIN_SAFE_TORCH))}')"
    )


def _torch_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a torch version string (``"2.5.1+cpu"`` -> (2, 5)); None if it
    cannot be read (a source build with an odd tag: not refused)."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(text))
    return (int(m.group(1)), int(m.group(2))) if m else None


def load_checkpoint(path: str | Path, map_location: Any = "cpu",
                    sha256: str | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint; ``experiment`` and ``net_spec`` come back as dicts.

    ``sha256``: the hex SHA-256 the file's bytes must have (e.g. hashed before, for a record
    of what was loaded): the file is then read once into memory, hashed and loaded from those
    same bytes, so a file that changes in between is refused instead of loading other bytes
    than the ones recorded.

    Raises :class:`CheckpointError` (naming the file and the fix) when torch is too old to
    load files safely (:func:`check_safe_torch`), or the file is missing, corrupt or
    truncated, holds anything but tensors and plain containers, has another format version,
    lacks required keys, or does not have the bytes ``sha256`` names.
    """
    path = Path(path)
    check_safe_torch(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}; train first (`invdiff train CONFIG`) or give the path of "
            f"an existing .pt file"
        )
    source: Any = path
    if sha256 is not None:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CheckpointError(
                f"{path} changed while it was being used (its bytes no longer have the "
                f"sha256 recorded for it); wait until whatever writes it has finished, then "
                f"run again"
            )
        source = io.BytesIO(data)
    try:
        ckpt = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read means an unusable file
        raise CheckpointError(
            f"{path} is not a readable invdiff checkpoint ({_load_failure(exc)}); use another "
            f"checkpoint (e.g. final.pt / last.pt of the run) or retrain"
        ) from None
    _validate(ckpt, path)
    _verify_checksum(ckpt, path)
    for key in _JSON_KEYS:
        try:
            ckpt[key] = json.loads(ckpt[key])
        except (TypeError, ValueError):
            raise CheckpointError(
                f"{path}: field {key!r} is not valid JSON; the file was not written by "
                f"invdiff.training.checkpoint.save_checkpoint"
            ) from None
    return ckpt


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load`` failed, in one line, without torch's advice to turn off
    ``weights_only`` (which would let a file run code): never suggest that."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        lines = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines() or ["?"]
        detail = lines[0].split(" Please use")[0].split(" was not an allowed")[0].strip()
        return (f"damaged bytes, or Python objects that safe loading refuses, since an invdiff "
                f"checkpoint holds only tensors and plain values: {detail}")
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"corrupt or truncated: {type(exc).__name__}: {first}"


def _verify_checksum(ckpt: dict[str, Any], path: Path) -> None:
    """Check the stored content digest (and drop it from ``ckpt``); a checkpoint written before
    checksums existed loads with a warning."""
    stored = ckpt.pop(CHECKSUM_KEY, None)
    if stored is None:
        warnings.warn(f"{path} carries no checksum (written by an older invdiff), so damage to "
                      f"its data cannot be detected; save it again to add one", stacklevel=3)
    elif content_digest(ckpt) != stored:
        raise CheckpointError(
            f"{path} is damaged: its contents do not match the sha256 checksum written with it "
            f"(the file changed after it was saved: disk, copy or edit); use another checkpoint "
            f"(e.g. final.pt / last.pt of the run, or a backup) or retrain"
        )


def _validate(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise CheckpointError(
            f"{path} holds no invdiff checkpoint (no 'format_version'); it may be a bare "
            f"state_dict: load that with net.load_state_dict(torch.load(...)) instead"
        )
    version = ckpt["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}, but this invdiff reads version "
            f"{FORMAT_VERSION}; use the invdiff release that wrote it, or retrain"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} lacks checkpoint fields {missing}; the file is incomplete or was not "
            f"written by invdiff.training.checkpoint.save_checkpoint: retrain or use "
            f"another checkpoint"
        )


def load_model(
    path: str | Path,
    device: torch.device | str | None = None,
    ema: bool = True,
    net: torch.nn.Module | None = None,
    sha256: str | None = None,
) -> ScoreModel:
    """The trained :class:`ScoreModel` of a checkpoint, in eval mode on ``device`` (CPU if None).

    ``ema=True`` loads the EMA weights (what sampling should use), ``False`` the raw ones. The
    network is rebuilt with ``invdiff.create("score_net", name, **params)`` from the stored
    ``net_spec``; pass ``net`` to load into a network built by hand instead. ``sha256``: the
    bytes the file must have (:func:`load_checkpoint`).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    ckpt = load_checkpoint(path, map_location="cpu", sha256=sha256)
    if net is None:
        net = _build_net(ckpt["net_spec"], path)
    weights = ckpt["ema" if ema else "model"]
    load_state(net, weights, path, "EMA weights" if ema else "weights")
    norm = Normalization.from_state_dict(ckpt["normalization"])
    return ScoreModel(net, norm, ckpt["sigmas"], ckpt.get("experiment"),
                      masking=_trained_with_masking(ckpt)).to(device).eval()


def _trained_with_masking(ckpt: dict[str, Any]) -> bool:
    """``training.masking`` of the run that wrote ``ckpt`` (its resume state records the
    training config even without an experiment); False for checkpoints from before it."""
    try:
        return bool(json.loads(ckpt["training"]["config"]).get("masking", False))
    except (KeyError, TypeError, ValueError):
        return bool(((ckpt.get("experiment") or {}).get("training") or {}).get("masking"))


def _build_net(spec: Any, path: Path) -> torch.nn.Module:
    from invdiff.plugins import create  # the registry is only needed here

    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(
            f"{path} records no net_spec (the network was not built from the registry); "
            f"rebuild it yourself and call load_model(path, net=your_net)"
        )
    return create("score_net", spec["name"], **(spec.get("params") or {}))


def load_state(module: torch.nn.Module, state: dict[str, Any], path: Path | str, what: str) -> None:
    """``module.load_state_dict(state)`` (strict), turning a mismatch into CheckpointError."""
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:600]
        raise CheckpointError(
            f"{path}: the stored {what} do not fit the network {type(module).__name__} "
            f"(different architecture or parameters): {detail}. Build the network with the "
            f"net_spec the checkpoint was trained with"
        ) from None
