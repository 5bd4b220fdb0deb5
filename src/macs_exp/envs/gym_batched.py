"""Any gymnasium env as a ``BatchedEnv``.

Envs without a native batched implementation (Pendulum-v1, for instance) are stepped by
gymnasium's ``SyncVectorEnv`` in same-step autoreset mode; this adapter only turns its
per-env ``final_obs`` object array into the dense array the trainer expects, and gives it
snapshot/restore by deep copy (random generators included).
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv


class GymBatchedEnv:
    def __init__(self, env_id: str, num_envs: int, **kwargs: Any) -> None:
        self.env_id = env_id
        self.vec = SyncVectorEnv(
            [lambda: gym.make(env_id, **kwargs) for _ in range(num_envs)],
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
        self.num_envs = num_envs
        self.single_observation_space = self.vec.single_observation_space
        self.single_action_space = self.vec.single_action_space
        self.metadata = {**self.vec.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.vec.reset(seed=seed, options=options)
        return obs.astype(np.float32, copy=False), info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.vec.step(actions)
        obs = obs.astype(np.float32, copy=False)
        done = terminated | truncated
        final = obs.copy()
        if done.any():
            for i in np.flatnonzero(done):
                final[i] = info["final_obs"][i]
        info["final_obs"] = final
        info["_final_obs"] = done
        return obs, rewards.astype(np.float32, copy=False), terminated, truncated, info

    def snapshot(self) -> list[gym.Env]:
        return copy.deepcopy(self.vec.envs)

    def restore(self, state: list[gym.Env]) -> None:
        self.vec.envs = copy.deepcopy(state)

    def close(self) -> None:
        self.vec.close()
