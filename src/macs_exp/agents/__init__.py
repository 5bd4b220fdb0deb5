"""Recommender agents: one file per algorithm over shared networks and one replay buffer.

Each algorithm registers itself with ``macs_exp.plugins`` (``@plugins.agent``), so adding one
is its module here plus its YAML in ``conf/algo/``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from macs_exp import plugins
from macs_exp.agents.base import DivergenceError
from macs_exp.agents.items import ItemSpace
from macs_exp.agents.protocol import (
    Agent,
    AgentConfig,
    Explains,
    Policy,
    ReportsMetrics,
    Resumable,
    SamplesActions,
    Transitions,
    Updates,
)

__all__ = [
    "Agent",
    "AgentConfig",
    "DivergenceError",
    "Explains",
    "ItemSpace",
    "Policy",
    "ReportsMetrics",
    "Resumable",
    "SamplesActions",
    "Transitions",
    "Updates",
    "make_agent",
]


def make_agent(
    cfg: AgentConfig,
    observation_space: gym.Space[Any],
    action_space: gym.Space[Any],
    device: torch.device | str,
    seed: int,
    items: ItemSpace | None = None,
) -> Agent:
    """The agent of the ``algo`` option ``cfg.name``, built from its typed config. ``items`` is
    the env's item catalogue, if it has one (``algo.action_mapping=knn`` needs it)."""
    factory = plugins.agent_plugin(cfg.name).factory
    agent: Agent = factory(cfg, observation_space, action_space, device, seed, items)
    return agent
