"""The item catalogue an agent may be given: what a Wolpertinger agent needs of an env, and no more.

Agents know nothing of envs. An env with a finite catalogue (the rating env) lends its item
features; the composition root wraps them in an ``ItemSpace`` and hands it to ``make_agent``.
Which items the env would show at a given moment reaches the agent with each call, as the
``allowed`` mask its caller reads from the env (``macs_exp.agents.protocol``). Simulators
without a catalogue give none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from macs_exp.data.kg import KnowledgeGraph
    from macs_exp.data.transe import GraphEmbedding


@dataclass(frozen=True)
class ItemSpace:
    """``features``: (n_items, act_dim) float32, the item vectors in the action space's units;
    passing row i to the env as an action shows item i whenever i is allowed. ``graph``: the
    dataset's knowledge graph and its TransE embedding, lent only to agents that walk one
    (``algo=pgpr``); its items are these items."""

    features: torch.Tensor
    graph: tuple[KnowledgeGraph, GraphEmbedding] | None = None

    @property
    def n_items(self) -> int:
        return int(self.features.shape[0])
