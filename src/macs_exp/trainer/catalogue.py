"""The item catalogue of a run's rating envs, lent to its agents as an ``ItemSpace``.

An agent acts on several envs of one run (training, evaluation, MACS's stage 2 and its "what
if" steps) and sees only observations. The catalogue asks each rating env of the run whether
the observations are its current ones, and if so returns that env's allowed items for them;
for observations of no env's current state (a replayed or left state) it returns None, which
the agent reads as "every item". Simulators have no catalogue, hence no ``ItemSpace``.
"""

from __future__ import annotations

import torch

from macs_exp.agents import ItemSpace
from macs_exp.envs.base import BatchedEnv
from macs_exp.envs.rating import RatingVecEnv


class Catalogue:
    def __init__(self) -> None:
        self._envs: list[RatingVecEnv] = []

    def add(self, env: BatchedEnv) -> None:
        """Registers ``env`` if it serves a rating dataset (every rating env of a run serves the
        same items); other envs are ignored."""
        if isinstance(env, RatingVecEnv):
            self._envs.append(env)

    def item_space(self) -> ItemSpace | None:
        """The catalogue as agents see it, or None when the run has no rating env. Envs added
        later are asked too."""
        if not self._envs:
            return None
        return ItemSpace(self._envs[0].item_features(), self.allowed)

    def allowed(self, obs: torch.Tensor) -> torch.Tensor | None:
        for env in self._envs:
            mask = env.allowed_items(obs)
            if mask is not None:
                return mask
        return None
