"""MACS/Session-v0: a recommendation-shaped simulator with a known causal structure, where
whether an intervention reaches the reward-relevant state depends on the user's taste.

Synthetic-v0 separates essential and trivial components by construction of the dynamics
(every action moves every component). Here the split comes from how a recommender's state
is usually built, static user features plus a log of engaged items, and a synthesis policy
must learn *which recommendations* change only the trivial part of it.

With ``d = item_dim`` (4), ``w = history`` (10) and ``m = recent`` (3, ``1 <= m < w``):

**Action space**: ``Box(-1, 1, (d,))``, the features of the recommended item; actions outside
are clipped.

**Observation space**: ``Box(-1, 1, (d * (1 + w),))`` (44 at the defaults),
``[u ; h_1 ; ... ; h_m ; g_1 ; ... ; g_{w-m}]``: the user's static features ``u``, the ``m``
most recently engaged items ``h_1`` (most recent) ... ``h_m`` (the essential window), then the
older history ``g_1`` (newest) ... ``g_{w-m}``. Every block is a ``d``-vector in [-1, 1].

**Reward**: clicks on a page of 10, computed from the state before the move:
``round(10 * exp(-sharpness * mean_j (a_j - tau_j)^2))`` (``sharpness`` 8), with the taste
``tau = tanh(u + mean(h_1 .. h_m))``. Deterministic; ``oracle_actions`` returns ``tau``, which
earns 10.

**Transition**: the user engages with the item iff it earns at least ``engage_clicks`` (1).
An engaged item becomes ``h_1``; the window's oldest item ``h_m`` moves to the front of the
older history (``g_1``), everything ages by one and ``g_{w-m}`` is forgotten. A skipped
recommendation is logged only in the long-term history: it becomes ``g_1``, the rest of ``g``
ages and ``g_{w-m}`` is forgotten, while ``u`` and ``h`` stay as they are.

**Starting state**: ``u`` and every ``h_i`` and ``g_i`` uniform on [-1, 1]^d, drawn from the
env's own generator; nothing else is random.

**Episode end**: truncation after ``episode_length`` (10) steps; never terminated. Finished
users are replaced in the same step (``info["final_obs"]``, as envs/base.py describes).

**Causal structure**: the reward reads ``u`` and ``h`` only, so the older history ``g`` is
trivial: it is in the observation, as a real recommender's log would be, yet never affects a
reward. An intervention that the user skips changes only ``g``; one the user engages with
shifts the window and with it the taste. Which of the two happens depends on how close the
item is to the user's taste, which is what a synthesis policy has to learn.

**Metadata**: ``items_per_page`` 10, ``reward_range`` (0, 10), ``reward_bins`` 11,
``score`` ``mean_reward`` in ``score_range`` (0, 10), and ``trivial_mask``, True exactly on
the ``g`` components.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from macs_exp.envs.taste import ITEMS_PER_PAGE, UniformUsersVecEnv, page_clicks, page_metadata


def _check_kwargs(rules: dict[str, tuple[bool, str, object]]) -> None:
    """Raise for the first rule that fails, naming the YAML key to fix."""
    for name, (ok, requirement, value) in rules.items():
        if not ok:
            raise ValueError(f"env.kwargs.{name} must be {requirement}, got {value!r}")


class SessionVecEnv(UniformUsersVecEnv):
    # An instance attribute in gymnasium: each env extends its own copy.
    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        *,
        item_dim: int = 4,
        history: int = 10,
        recent: int = 3,
        sharpness: float = 8.0,
        engage_clicks: int = 1,
        episode_length: int = 10,
    ) -> None:
        _check_kwargs(
            {
                "item_dim": (item_dim >= 1, "at least 1", item_dim),
                "history": (history >= 2, "at least 2 (a window and an older history)", history),
                "recent": (1 <= recent < history, f"in [1, history={history})", recent),
                "sharpness": (sharpness > 0, "positive", sharpness),
                # Outside 1..10 every item would be engaged, or none: one mechanism would vanish.
                "engage_clicks": (
                    1 <= engage_clicks <= ITEMS_PER_PAGE,
                    f"in [1, {ITEMS_PER_PAGE}]",
                    engage_clicks,
                ),
                "episode_length": (episode_length >= 1, "at least 1", episode_length),
            }
        )
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.item_dim = item_dim
        self.history = history
        self.recent = recent
        self.sharpness = sharpness
        self.engage_clicks = engage_clicks
        self.episode_length = episode_length
        # Every block is u or a clipped action, so the bounds hold without tracking steps.
        dim = item_dim * (1 + history)
        self.single_observation_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (item_dim,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.metadata = {**self.metadata, **page_metadata(np.arange(dim) >= item_dim * (1 + recent))}
        # Blocks of the observation: row 0 is u, rows 1..m the window h, the rest the older g.
        self._init_users(num_envs, (1 + history, item_dim))

    def _taste(self, blocks: torch.Tensor) -> torch.Tensor:
        """tau = tanh(u + mean(h_1..h_m)) of states laid out as (..., 1 + w, d)."""
        return torch.tanh(blocks[..., 0, :] + blocks[..., 1 : 1 + self.recent, :].mean(-2))

    def _moved(self, items: torch.Tensor, engaged: torch.Tensor) -> torch.Tensor:
        """The states after showing ``items``: pushed onto the front of the whole history (the
        window's oldest spills into ``g``) if engaged, onto the front of ``g`` alone if not."""
        user, window = self.state[:, :1], self.state[:, 1 : 1 + self.recent]
        kept = self.state[:, 1 + self.recent : -1]  # g_1 .. g_{w-m-1}; g_{w-m} is forgotten
        item = items[:, None]
        as_engaged = torch.cat([user, item, window, kept], 1)
        as_skipped = torch.cat([user, window, item, kept], 1)
        return torch.where(engaged[:, None, None], as_engaged, as_skipped)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        items = torch.as_tensor(actions, dtype=torch.float32, device=self.device).clamp(-1.0, 1.0)
        clicks = page_clicks(items, self._taste(self.state), self.sharpness)
        self.state = self._moved(items, clicks >= self.engage_clicks)
        self.steps += 1
        truncated = self.steps >= self.episode_length
        final = self._observations()
        if truncated.any():
            self._new_users(truncated)
        truncated_np = truncated.cpu().numpy()
        info = {"final_obs": final, "_final_obs": truncated_np}
        terminated = np.zeros(self.num_envs, dtype=bool)
        return self._observations(), clicks.cpu().numpy(), terminated, truncated_np, info

    def oracle_actions(self, obs: np.ndarray) -> np.ndarray:
        """The taste ``tau`` of observations ``obs`` (..., d * (1 + w)): the item that earns 10
        clicks, the reference a ground-truth study compares learned policies with."""
        blocks = torch.as_tensor(obs, dtype=torch.float32).reshape(*obs.shape[:-1], -1, self.item_dim)
        return self._taste(blocks).numpy()
