"""Builds the batched env the trainer runs, from the ``env`` config group."""

from __future__ import annotations

import gymnasium as gym

import macs_exp.envs  # noqa: F401  (registers the MACS/* ids)
from macs_exp.config import EnvConfig
from macs_exp.envs.base import BatchedEnv
from macs_exp.envs.gym_batched import GymBatchedEnv


def make_batched_env(cfg: EnvConfig, num_envs: int, device: str) -> BatchedEnv:
    """Native batched envs are used where the id has a vector entry point."""
    try:
        spec = gym.spec(cfg.id)
    except gym.error.Error as err:
        raise ValueError(f"env.id={cfg.id!r} is not a registered gymnasium id ({err})") from None
    if num_envs < 1:
        raise ValueError(f"env.num_envs must be at least 1, got {num_envs}")
    env: BatchedEnv
    if spec.vector_entry_point is not None:
        env = gym.make_vec(
            cfg.id,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            device=device,
            **cfg.kwargs,
        )
    else:
        env = GymBatchedEnv(cfg.id, num_envs, **cfg.kwargs)
    if cfg.metadata:
        env.metadata = {**env.metadata, **cfg.metadata}
    return env
