"""Recommender agents: one file per algorithm over shared networks and one replay buffer."""

from __future__ import annotations

import gymnasium as gym
import torch

from macs_exp.agents.base import Agent, DivergenceError, OffPolicyAgent
from macs_exp.agents.ddpg import DDPG
from macs_exp.agents.reference import PopularPolicy, RandomPolicy, ReferencePolicy
from macs_exp.agents.sac import SAC
from macs_exp.agents.td3 import TD3
from macs_exp.config import AlgoConfig, ReferenceConfig

AGENTS: dict[str, type[OffPolicyAgent] | type[ReferencePolicy]] = {
    "ddpg": DDPG,
    "td3": TD3,
    "sac": SAC,
    "random": RandomPolicy,
    "popular": PopularPolicy,
}

__all__ = ["AGENTS", "DDPG", "SAC", "TD3", "Agent", "DivergenceError", "make_agent"]


def make_agent(
    cfg: AlgoConfig | ReferenceConfig,
    observation_space: gym.spaces.Box,
    action_space: gym.spaces.Box,
    device: torch.device | str,
    seed: int,
) -> Agent:
    try:
        cls = AGENTS[cfg.name]
    except KeyError:
        raise ValueError(f"algo.name={cfg.name!r} is unknown; choose one of {sorted(AGENTS)}") from None
    return cls(cfg, observation_space, action_space, device, seed)  # type: ignore[arg-type]
