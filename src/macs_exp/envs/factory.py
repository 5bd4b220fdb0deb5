"""Builds the batched env the trainer runs, from the ``env`` config group."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from macs_exp.data.dataset import RatingData
from macs_exp.envs.base import BatchedEnv
from macs_exp.envs.config import EnvConfig, RatingEnvConfig
from macs_exp.envs.gym_batched import GymBatchedEnv


def make_batched_env(
    cfg: EnvConfig, num_envs: int | None, device: str, *, data: RatingData | None = None, split: str = "train"
) -> BatchedEnv:
    """Native batched envs are used where the id has a vector entry point.

    Rating envs also take the preprocessed ``data`` and the ``split`` they serve; on the test
    split ``num_envs=None`` gives one slot per evaluation user.
    """
    try:
        spec = gym.spec(cfg.id)
    except gym.error.Error as err:
        raise ValueError(f"env.id={cfg.id!r} is not a registered gymnasium id ({err})") from None
    if num_envs is not None and num_envs < 1:
        raise ValueError(f"env.num_envs must be at least 1, got {num_envs}")
    # num_envs=None (one slot per test user) passes through to the rating env as it is.
    vector: dict[str, Any] = {
        "num_envs": num_envs,
        "vectorization_mode": "vector_entry_point",
        "device": device,
    }
    made: object
    if isinstance(cfg, RatingEnvConfig):
        if data is None:
            raise ValueError(f"env {cfg.name!r} serves a rating dataset: load it and pass data=")
        made = gym.make_vec(
            cfg.id,
            **vector,
            data=data,
            split=split,
            episode_length=cfg.episode_length,
            state_size=cfg.state_size,
            reward=cfg.reward,
            candidates=cfg.candidates,
            state=cfg.state,
            train_reward=cfg.train_reward,
            **cfg.kwargs,
        )
    elif spec.vector_entry_point is not None:
        made = gym.make_vec(cfg.id, **vector, **cfg.kwargs)
    else:
        assert num_envs is not None
        made = GymBatchedEnv(cfg.id, num_envs, **cfg.kwargs)
    if not isinstance(made, BatchedEnv):
        raise TypeError(
            f"env.id={cfg.id!r} made a {type(made).__name__}, which cannot snapshot and restore its state"
        )
    env = made
    if cfg.metadata:
        env.metadata = {**env.metadata, **cfg.metadata}
    return env
