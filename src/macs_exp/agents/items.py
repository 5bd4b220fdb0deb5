"""The item catalogue an agent may be given: what a Wolpertinger agent needs of an env, and no more.

Agents know nothing of envs. An env with a finite catalogue (the rating env) lends its item
features and a way to ask which items it would accept now; the composition root wraps them in
an ``ItemSpace`` and hands it to ``make_agent``. Simulators without a catalogue give none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Observations (N, obs_dim) to the (N, n_items) bool mask of the items the env would show from
# the state they were read from, or None when that state is unknown (then every item is allowed).
AllowedItems = Callable[[torch.Tensor], torch.Tensor | None]


@dataclass(frozen=True)
class ItemSpace:
    """``features``: (n_items, act_dim) float32, the item vectors in the action space's units;
    passing row i to the env as an action shows item i whenever i is allowed."""

    features: torch.Tensor
    allowed: AllowedItems

    @property
    def n_items(self) -> int:
        return int(self.features.shape[0])
