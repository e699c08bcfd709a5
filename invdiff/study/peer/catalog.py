"""The shipped peers, registered in :data:`~.base.PEERS`: ``sbi-npse`` (:mod:`.npse`) and
``bayesflow-fm`` (:mod:`.flow`). Their libraries are imported only when a peer runs."""

from __future__ import annotations

from . import flow, npse
from .base import PEERS, Peer, register_peer

__all__ = ["PEERS"]

register_peer(Peer("sbi-npse", "sbi NPSE", npse.NPSEParams, npse.available, npse.run,
                   npse.version))
register_peer(Peer("bayesflow-fm", "BayesFlow flow matching", flow.FlowParams, flow.available,
                   flow.run, flow.version))
