"""What the ground-truth envs (Synthetic-v0, Session-v0) share: a page of 10 items scored
against the user's taste, the metadata MACS reads about such pages, and users whose whole
state is one tensor drawn uniformly on [-1, 1] from the env's own generator.

Both envs reward the same thing so that their ground-truth checks differ only in how the
state moves, not in what a click means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

ITEMS_PER_PAGE = 10


def page_clicks(items: torch.Tensor, taste: torch.Tensor, sharpness: float) -> torch.Tensor:
    """Clicks on a page of ``items`` (N, d) shown to users of ``taste`` (N, d):
    ``round(10 * exp(-sharpness * mean((items - taste)^2)))``, 10 for a perfect match.

    Deterministic, so that a counterfactual's reward differs from the real one only through
    the state, never through noise."""
    match = torch.exp(-sharpness * (items - taste).square().mean(1))
    return (ITEMS_PER_PAGE * match).round()


def page_metadata(trivial_mask: np.ndarray) -> dict[str, Any]:
    """The MACS contract (envs/base.py) for 0..10 clicks per page: one histogram bin per click
    count, the score is clicks per page, and ``trivial_mask`` marks the observation elements
    that by design never affect the reward."""
    return {
        "items_per_page": ITEMS_PER_PAGE,
        "reward_range": (0.0, float(ITEMS_PER_PAGE)),
        "reward_bins": ITEMS_PER_PAGE + 1,
        "score": "mean_reward",
        "score_range": (0.0, float(ITEMS_PER_PAGE)),
        "trivial_mask": trivial_mask,
    }


@dataclass
class UserState:
    """Everything a ground-truth env's ``snapshot`` holds: the users' states, their step counts
    and the generator, so that a restored env replays the same future."""

    state: torch.Tensor
    steps: torch.Tensor
    generator: torch.Tensor


class UniformUsersVecEnv(gym.vector.VectorEnv):
    """Users whose state ``(N, *shape)`` starts uniform on [-1, 1], drawn from the env's own
    generator; subclasses define the spaces, ``step`` and how the state is observed."""

    device: torch.device

    def _init_users(self, num_envs: int, shape: tuple[int, ...]) -> None:
        """Zero states of ``shape`` per user (drawn at reset) on ``self.device``."""
        self.generator = torch.Generator(device=self.device)
        # A fresh Generator has a fixed default seed; unseeded envs would all replay one stream.
        # Seeding this generator alone leaves torch's global one (which the trainer seeds) alone.
        self.generator.seed()
        self.state = torch.zeros((num_envs, *shape), device=self.device)
        self.steps = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def _observations(self) -> np.ndarray:
        return self.state.reshape(self.num_envs, -1).cpu().numpy().copy()

    def _new_users(self, rows: torch.Tensor) -> None:
        fresh = torch.rand(
            (int(rows.sum()), *self.state.shape[1:]), generator=self.generator, device=self.device
        )
        self.state[rows] = 2 * fresh - 1
        self.steps[rows] = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        # Sets gymnasium's np_random bookkeeping only; the users are drawn from ``self.generator``,
        # reseeded when a seed is given and otherwise continuing its stream, as the other envs do.
        super().reset(seed=seed)
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._new_users(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._observations(), {}

    def snapshot(self) -> UserState:
        return UserState(self.state.clone(), self.steps.clone(), self.generator.get_state())

    def restore(self, state: UserState) -> None:
        self.state.copy_(state.state)
        self.steps.copy_(state.steps)
        self.generator.set_state(state.generator)
