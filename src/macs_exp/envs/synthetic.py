"""MACS/Synthetic-v0: a small simulator whose state has a known causal structure, so that
what the synthesis policy learns can be checked against ground truth.

Each user's state is ``[essential (e), trivial (t)]``, and every action moves it:
``s' = s + step_size * a``. The user's taste is ``tanh(e)``; a page of 10 items earns
``round(10 * exp(-sharpness * mean((a_e - tanh(e))^2)))`` clicks, where ``a_e`` is the action's
essential part. Rewards are deterministic and depend on the essential components only, never
on the trivial ones, so a perfect synthesis policy moves only trivial components (or nothing);
``metadata["trivial_mask"]`` tells MACS which those are, for ``macs/trivial_change_fraction``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from macs_exp.envs.taste import UniformUsersVecEnv, page_clicks, page_metadata


class SyntheticVecEnv(UniformUsersVecEnv):
    # An instance attribute in gymnasium: each env extends its own copy.
    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        *,
        essential_dim: int = 4,
        trivial_dim: int = 4,
        step_size: float = 0.5,
        sharpness: float = 8.0,
        episode_length: int = 10,
    ) -> None:
        if min(essential_dim, trivial_dim, episode_length) < 1 or step_size <= 0:
            raise ValueError(
                "env.kwargs: essential_dim, trivial_dim and episode_length must be at least 1 "
                f"and step_size positive, got {essential_dim}, {trivial_dim}, {episode_length}, {step_size}"
            )
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.essential_dim = essential_dim
        self.sharpness = sharpness
        self.step_size = step_size
        self.episode_length = episode_length
        dim = essential_dim + trivial_dim
        # States start in [-1, 1] and move at most step_size per step.
        bound = 1.0 + step_size * episode_length
        self.single_observation_space = gym.spaces.Box(-bound, bound, (dim,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.metadata = {**self.metadata, **page_metadata(np.arange(dim) >= essential_dim)}
        self._init_users(num_envs, (dim,))

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device).clamp(-1.0, 1.0)
        taste = torch.tanh(self.state[:, : self.essential_dim])
        clicks = page_clicks(a[:, : self.essential_dim], taste, self.sharpness)
        self.state += self.step_size * a
        self.steps += 1
        truncated = self.steps >= self.episode_length
        final = self.state.cpu().numpy().copy()
        if truncated.any():
            self._new_users(truncated)
        truncated_np = truncated.cpu().numpy()
        info = {"final_obs": final, "_final_obs": truncated_np}
        terminated = np.zeros(self.num_envs, dtype=bool)
        return self.state.cpu().numpy().copy(), clicks.cpu().numpy(), terminated, truncated_np, info

    def oracle_actions(self, obs: np.ndarray) -> np.ndarray:
        """The taste-matching expert ``[tanh(e), 0]`` for observations ``obs`` (..., dim): it
        earns 10 clicks and leaves the trivial components where they are, the reference a
        ground-truth study compares learned policies with."""
        state = torch.as_tensor(obs, dtype=torch.float32)
        actions = torch.zeros_like(state)
        actions[..., : self.essential_dim] = torch.tanh(state[..., : self.essential_dim])
        return actions.numpy()
