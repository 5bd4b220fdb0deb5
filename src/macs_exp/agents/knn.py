"""Wolpertinger's action mapping (Dulac-Arnold et al., 2015) over an item catalogue.

The actor proposes a proto-action; the k allowed items with the highest inner product with it
are the candidates (the env's own rule: with k=1 this is the item the env's argmax would show),
and the critic picks the best of them. Inner product rather than L2 because the env ranks items
by ``features @ action``, so only the proto-action's direction matters, as it does to the env;
L2 would also weigh its length and the items' norms, which the env ignores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from macs_exp.agents.items import ItemSpace

# A critic's value of (observations, actions in network units): (B,).
Values = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Choice:
    """The best candidate of each row: its item index (B,) and its value (B,)."""

    items: torch.Tensor
    values: torch.Tensor


class KnnMapping:
    """Proto-actions to items. ``center`` and ``scale`` convert the env's units to the networks'
    [-1, 1] (the critic scores item features as the replay buffer stores them)."""

    def __init__(self, items: ItemSpace, k: int, center: torch.Tensor, scale: torch.Tensor) -> None:
        if items.features.shape[1] != center.shape[0]:
            raise ValueError(
                f"item features have {items.features.shape[1]} dims, the action space {center.shape[0]}"
            )
        self.items = items
        self.features = items.features.to(center.device, torch.float32)
        self.scaled = (self.features - center) / scale
        self.k = min(k, items.n_items)

    def candidates(
        self, proto: torch.Tensor, allowed: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k nearest items of each proto-action (B, act_dim, env units) among the allowed
        ones: (B, k) indices and whether each is allowed (a row with fewer than k allowed items
        is padded with excluded ones)."""
        scores = proto @ self.features.T
        if allowed is not None:
            scores = scores.masked_fill(~allowed.to(scores.device), -torch.inf)
        top = scores.topk(self.k, dim=1)
        return top.indices, top.values > -torch.inf

    def uniform(self, n: int, allowed: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """(n,) items drawn uniformly among each row's allowed ones (among all without a mask)."""
        weights = torch.ones(n, self.features.shape[0], device=self.features.device)
        if allowed is not None:
            weights = weights * allowed.to(weights.device)
        return torch.multinomial(weights, 1, generator=generator).squeeze(1)

    def best(
        self, values: Values, obs: torch.Tensor, proto: torch.Tensor, allowed: torch.Tensor | None
    ) -> Choice:
        """The candidate with the highest value under ``values`` for each row."""
        cand, valid = self.candidates(proto, allowed)
        b, k = cand.shape
        q = values(obs.repeat_interleave(k, dim=0), self.scaled[cand.view(-1)]).view(b, k)
        q = q.masked_fill(~valid, -torch.inf)
        pick = q.argmax(dim=1, keepdim=True)
        return Choice(cand.gather(1, pick).squeeze(1), q.gather(1, pick).squeeze(1))
