"""DDPG (Lillicrap et al., 2016).

As in stable-baselines3, DDPG is TD3 with its three additions switched off: one critic, an
actor update at every step and no target-policy smoothing. Only the schema differs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import torch

from macs_exp import plugins
from macs_exp.agents.items import ItemSpace
from macs_exp.agents.td3 import TD3, DDPGConfig, TD3Config


@plugins.agent("ddpg", DDPGConfig, order=10)
class DDPG(TD3):
    name = "ddpg"

    def __init__(
        self,
        cfg: DDPGConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        device: torch.device | str,
        seed: int,
        items: ItemSpace | None = None,
    ) -> None:
        as_td3 = TD3Config(
            **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(DDPGConfig)},
            n_critics=1,
            policy_delay=1,
            target_policy_noise=0.0,
            target_noise_clip=0.0,
        )
        super().__init__(as_td3, observation_space, action_space, device, seed, items)
