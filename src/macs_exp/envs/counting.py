"""Counting simulator cost: every env step a run takes, whoever takes it.

A run's cost is not its user-steps alone: MACS asks the env "what if" twice per counterfactual
and trains pi_c in an env of its own. Every env a run trains with is wrapped in a
``CountingEnv`` that adds its users to one shared ``StepCounter`` at each ``step``, so the
trainer can log the total (``perf/env_steps``) and bound it (``trainer.budget=env_steps``)
without knowing who stepped. Evaluation envs are not wrapped: evaluating is not training cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from macs_exp.envs.base import BatchedEnv


@dataclass
class StepCounter:
    """Env steps taken so far, one per user per ``step`` call (N for an N-user batch)."""

    steps: int = 0


class CountingEnv:
    """A batched env that counts its steps into ``counter`` and is otherwise the env itself:
    attributes it does not define are the wrapped env's."""

    def __init__(self, env: BatchedEnv, counter: StepCounter) -> None:
        self.env = env
        self.counter = counter
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space

    @property
    def metadata(self) -> dict[str, Any]:
        return self.env.metadata

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        self.env.metadata = value

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        return self.env.reset(seed=seed, options=options)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self.counter.steps += self.num_envs
        return self.env.step(actions)

    def snapshot(self) -> Any:
        return self.env.snapshot()

    def restore(self, state: Any) -> None:
        self.env.restore(state)

    def close(self) -> None:
        self.env.close()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not defined above: the wrapped env's own attributes.
        return getattr(self.env, name)
