"""The augmenter protocol: everything a training mode adds to plain training.

The trainer owns the loop and calls an augmenter at the points the loop has; the modes (MACS
expert and joint, the random mask) implement it in ``macs_exp.macs``. Each mode registers a
factory with ``macs_exp.plugins`` (``@plugins.mode``), which the composition root calls with an
``AugmenterContext``; the trainer never learns which mode it runs.

Call order (user-steps are transitions collected from the env, N per vector step):

- ``start(agent)``: once, before the first step. Returns metrics to log at step 0 (expert mode
  trains pi_c here and reports it).
- ``before_step(env, obs, actions)``: at every vector step, before the env is stepped, with the
  env in the state the real step starts from. An augmenter that queries the env ("what if")
  must leave it exactly as it found it (snapshot and restore).
- ``after_step(real)``: after the real transitions are handed to the agent. Returns extra
  transitions (``Transitions``, any number of rows) for the agent's ``add_extra``.
- ``episodes_ended(agent, returns, lengths, steps)``: when some episodes finish at a step: their
  returns and lengths (numpy, one entry per finished episode) and the user-steps so far. Returns
  metrics to log now (joint mode retrains pi_c here). Its wall time is kept out of
  ``perf/steps_per_s``, like ``start``'s.
- ``metrics()``: at the end of each logging window, the mode's own metrics for that window.
- ``queries_per_step()``: before every vector step, an upper bound on the env steps per user
  that ``before_step`` will take, so that an env-step budget (``trainer.budget=env_steps``) is
  never overrun.
- ``finish()``: once, after the last step. Returns tags to set on the run (joint mode marks a
  run whose stage 2 never ran).

An augmenter that also implements ``training_state()`` / ``load_training_state(state)``
(``macs_exp.agents.Resumable``) can be checkpointed: a resumed run restores it instead of
calling ``start`` again. Both are called between vector steps, never inside one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from omegaconf import MISSING, DictConfig

from macs_exp import plugins
from macs_exp.agents import Agent, AgentConfig, Transitions
from macs_exp.envs.base import BatchedEnv
from macs_exp.schema import Schema
from macs_exp.tracking import Tracker
from macs_exp.trainer.budget import Budget
from macs_exp.trainer.result import TrainResult

if TYPE_CHECKING:
    from macs_exp.config import Config


@dataclass
class ModeConfig(Schema):
    """What every ``mode`` option has: its name. Subclasses hold the mode's own settings."""

    name: str = MISSING
    # Whether the mode gives the agent something to learn from, which a reference policy
    # (an agent that learns nothing) cannot use.
    needs_learner: ClassVar[bool] = True


class Augmenter(Protocol):
    def start(self, agent: Agent) -> dict[str, float]: ...

    def before_step(self, env: BatchedEnv, obs: torch.Tensor, actions: torch.Tensor) -> None: ...

    def after_step(self, real: Transitions) -> list[Transitions]: ...

    def episodes_ended(
        self, agent: Agent, returns: np.ndarray, lengths: np.ndarray, steps: int
    ) -> dict[str, float]: ...

    def metrics(self) -> dict[str, float]: ...

    def queries_per_step(self) -> int: ...

    def finish(self) -> dict[str, str]: ...


class TrainRun(Protocol):
    """Trains another run of this framework (an expert) from its config, in ``output_dir``, with
    ``tags`` added to its MLflow run."""

    def __call__(self, cfg: DictConfig, output_dir: Path, *, tags: Mapping[str, str]) -> TrainResult: ...


@dataclass(kw_only=True)
class AugmenterContext:
    """What a mode's factory may use to build its augmenter."""

    # The whole composed config (``cfg.mode``, ``cfg.macs``, ...), and its typed counterpart.
    raw: DictConfig
    cfg: Config
    # The training env (its spaces and metadata); ``make_env`` builds another env like it (for
    # stage 2), closed with the run's envs.
    env: BatchedEnv
    make_env: Callable[[], BatchedEnv]
    # Another env like the run's whose steps are not charged to it: only for measurements that
    # leave training unchanged (CTRL's gate asks it what an alternative action would have given).
    make_probe_env: Callable[[], BatchedEnv]
    # ``make_agent(algo_cfg, seed)``: an agent for the env's spaces, on the run's device.
    make_agent: Callable[[AgentConfig, int], Agent]
    # The recommender the run trains (CTRL draws alternative actions from its behaviour policy
    # where it has one; ``macs_exp.agents.SamplesActions``).
    agent: Agent
    seed: int
    tracker: Tracker
    # The run's folder (checkpoints such as pi_c.pt go there) and its budget.
    output_dir: Path
    budget: Budget
    # ``run_experiment``, passed in so that no mode imports the composition root.
    train_run: TrainRun


class NoAugmentation:
    """Plain training: adds nothing, logs nothing. Augmenters derive from it to inherit the
    hooks they leave alone."""

    def start(self, agent: Agent) -> dict[str, float]:
        return {}

    def before_step(self, env: BatchedEnv, obs: torch.Tensor, actions: torch.Tensor) -> None:
        return None

    def after_step(self, real: Transitions) -> list[Transitions]:
        return []

    def episodes_ended(
        self, agent: Agent, returns: np.ndarray, lengths: np.ndarray, steps: int
    ) -> dict[str, float]:
        return {}

    def metrics(self) -> dict[str, float]:
        return {}

    def queries_per_step(self) -> int:
        return 0

    def finish(self) -> dict[str, str]:
        return {}

    def training_state(self) -> dict[str, Any]:
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        return None


@dataclass
class BaselineConfig(ModeConfig):
    needs_learner: ClassVar[bool] = False


@plugins.mode("baseline", BaselineConfig, suffix="", order=0)
def baseline(context: AugmenterContext) -> Augmenter:
    """``mode=baseline``: no augmentation."""
    return NoAugmentation()
