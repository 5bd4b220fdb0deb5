"""Reference policies for the offline tables: uniform random actions and "most popular".

They run through the same trainer, env and metrics as the learning agents, so their rows in a
table differ from the agents' in the policy only. Neither learns: they explore with their
policy itself, keep nothing they observe, and have no update ever due.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import torch

from macs_exp import plugins
from macs_exp.agents.items import ItemSpace
from macs_exp.agents.protocol import AgentConfig, Policy, Transitions
from macs_exp.agents.saved import load_agent, save_agent


@dataclass
class ReferenceConfig(AgentConfig):
    """A reference policy (random, popular): nothing to tune, nothing learned."""

    learns: ClassVar[bool] = False


class ReferencePolicy:
    """What both policies share: spaces, a seeded generator, trivial learning and checkpoints.
        They act through the env's own argmax, so an item catalogue (``items``) and the ``allowed``
    items are accepted and unused."""

    name: str

    def __init__(
        self,
        cfg: ReferenceConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        device: torch.device | str,
        seed: int,
        items: ItemSpace | None = None,
    ) -> None:
        if not isinstance(action_space, gym.spaces.Box) or not isinstance(observation_space, gym.spaces.Box):
            raise TypeError("reference policies need Box observation and action spaces")
        if not action_space.is_bounded("both"):
            raise ValueError("the action space must be bounded on both sides")
        self.cfg = cfg
        self.device = torch.device(device)
        self.obs_dim = int(observation_space.shape[0])
        self.act_dim = int(action_space.shape[0])
        self._low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
        self._high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        allowed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def random_actions(self, n: int) -> torch.Tensor:
        u = torch.rand((n, self.act_dim), generator=self.generator, device=self.device)
        return self._low + (self._high - self._low) * u

    def explore(
        self, obs: torch.Tensor, allowed: torch.Tensor | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.act(obs)

    def frozen_policy(self) -> Policy:
        """The deterministic policy with a copy of the generator, so that MACS's calls to it
        leave this policy's own random stream where it was."""
        frozen = copy.copy(self)
        frozen.generator = torch.Generator(device=self.device)
        frozen.generator.set_state(self.generator.get_state())
        return functools.partial(frozen.act, deterministic=True)

    def observe(self, real: Transitions) -> None:
        """Nothing to learn from."""

    def add_extra(self, extra: Transitions) -> None:
        """Nothing to learn from."""

    def learn(self) -> list[dict[str, float]]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def training_state(self) -> dict[str, Any]:
        """The random stream is all a reference policy carries from step to step."""
        return self.state_dict()

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state)

    def save(self, path: str | Path) -> None:
        save_agent(path, self.name, {"act_dim": self.act_dim}, self.state_dict())

    def load(self, path: str | Path) -> None:
        self.load_state_dict(load_agent(path, self.name, {"act_dim": self.act_dim}, "cpu"))


@plugins.agent("random", ReferenceConfig, order=90)
class RandomPolicy(ReferencePolicy):
    """Uniform actions in the action space, even when asked to be deterministic: the baseline
    is the random policy itself, reproducible through the seed.

    On the rating env a random direction is not a uniform random item: how often an item wins
    the argmax depends on where its features lie among the others'.
    """

    name = "random"

    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        allowed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.random_actions(obs.shape[0])


@plugins.agent("popular", ReferenceConfig, order=91)
class PopularPolicy(ReferencePolicy):
    """The action that points along the last feature, the rating env's training popularity,
    so that each step recommends the most popular item the env allows (not yet seen or shown;
    under ``env.candidates=rated`` also among the user's rated items only)."""

    name = "popular"

    def __init__(
        self,
        cfg: ReferenceConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        device: torch.device | str,
        seed: int,
        items: ItemSpace | None = None,
    ) -> None:
        super().__init__(cfg, observation_space, action_space, device, seed, items)
        self._action = torch.zeros(self.act_dim, device=self.device)
        self._action[-1] = 1.0
        if not ((self._low <= self._action) & (self._action <= self._high)).all():
            raise ValueError(
                "the popular policy needs the unit vector on the last axis inside the action space"
            )

    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        allowed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self._action.expand(obs.shape[0], self.act_dim).clone()
