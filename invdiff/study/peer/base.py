"""What a peer is: :class:`Peer` (a name, its settings model, ``available``, ``run``), what it
gets (:class:`PeerTask`) and returns (:class:`PeerOutput`), and the registry :data:`PEERS`
(filled with the shipped peers by :mod:`.catalog`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel

__all__ = ["PEERS", "Peer", "PeerOutput", "PeerTask", "register_peer"]


@dataclass
class PeerTask:
    """What a peer gets: training pairs and held-out measurements ``(N, C, H, W)`` in physical
    units (float32, on the CPU), and how to sample."""

    problem: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    y: torch.Tensor
    n_samples: int
    seed: int
    device: str
    params: Any  # the peer's validated settings (its ``params`` model)


@dataclass
class PeerOutput:
    """What a peer returns: ``samples (M, n_samples, C, H, W)`` of the held-out measurements,
    network evaluations per sample (None where unknown), training and sampling seconds (all
    measurements), the net and sampler names of its row, a description of the method and its
    settings (the same on every problem) and what differs per problem (``detail``: pairs,
    epochs)."""

    samples: torch.Tensor
    nfe: int | None
    train_seconds: float
    seconds: float
    net: str
    sampler: str
    description: str
    detail: str = ""
    train_steps: int | None = None


@dataclass(frozen=True)
class Peer:
    """A peer method: ``run`` trains and samples; ``available`` says why it cannot (None when
    it can); ``version`` names its library's version (part of the cache key)."""

    name: str
    label: str
    params: type[BaseModel]
    available: Callable[[], str | None]
    run: Callable[[PeerTask], PeerOutput]
    version: Callable[[], str] = field(default=lambda: "")


PEERS: dict[str, Peer] = {}


def register_peer(peer: Peer) -> Peer:
    """Add ``peer`` to :data:`PEERS` (a preset names it in ``[peer] peers``)."""
    PEERS[peer.name] = peer
    return peer
