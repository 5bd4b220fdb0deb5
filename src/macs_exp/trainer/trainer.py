"""The training loop: one loop for every agent, every mode and every batched env.

It knows agents only through their protocol (``macs_exp.agents.protocol``) and modes only
through the augmenter protocol (``macs_exp.trainer.augmenter``): it never asks which algorithm
or which mode it runs.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from macs_exp.agents import Agent, Transitions
from macs_exp.envs.base import BatchedEnv, allowed_items
from macs_exp.envs.counting import CountingEnv, StepCounter
from macs_exp.metrics import NOT_SHOWN, EpisodeStats, key_metric
from macs_exp.schema import ConfigError
from macs_exp.tracking import Tracker
from macs_exp.trainer.augmenter import Augmenter, NoAugmentation
from macs_exp.trainer.budget import Budget
from macs_exp.trainer.config import TrainerConfig
from macs_exp.trainer.progress import Progress
from macs_exp.trainer.result import TrainResult

# Scores the (users, steps) items recommended in one evaluation: the Table I metrics.
Ranking = Callable[[np.ndarray], dict[str, float]]


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


@dataclass
class _Window:
    """The training metrics of one logging window, and the time it spent outside the loop
    (evaluation, stage 2), which ``perf/steps_per_s`` leaves out."""

    episodes: EpisodeStats
    start: float = field(default_factory=time.perf_counter)
    steps: int = 0
    paused: float = 0.0
    loss_sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    loss_count: int = 0

    def add_losses(self, updates: Iterable[dict[str, float]]) -> None:
        for losses in updates:
            for key, value in losses.items():
                self.loss_sums[key] += value
            self.loss_count += 1

    def metrics(self) -> dict[str, float]:
        metrics = (
            {f"train/{k}": v / self.loss_count for k, v in self.loss_sums.items()} if self.loss_count else {}
        )
        metrics.update(self.episodes.summary("train"))
        return metrics

    def steps_per_s(self) -> float:
        return self.steps / max(time.perf_counter() - self.start - self.paused, 1e-9)


@dataclass
class _Loop:
    """Where the loop stands: the current observations, each slot's running episode, counters."""

    obs: torch.Tensor
    returns: np.ndarray
    lengths: np.ndarray
    next_log: int
    next_eval: int
    steps: int = 0


class Trainer:
    def __init__(
        self,
        *,
        agent: Agent,
        env: BatchedEnv,
        eval_env: BatchedEnv,
        cfg: TrainerConfig,
        tracker: Tracker,
        seed: int,
        checkpoint_dir: Path,
        augmenter: Augmenter | None = None,
        progress: Progress | None = None,
        ranking: Ranking | None = None,
        budget: Budget | None = None,
    ) -> None:
        """``budget`` counts the env steps of every env the run trains with (the caller wraps
        them in ``CountingEnv``s on its counter); without one, only ``env`` is counted."""
        if budget is None:
            budget = Budget(cfg.budget, cfg.total_steps, StepCounter())
            env = CountingEnv(env, budget.counter)
        self.budget = budget
        self.agent = agent
        self.env = env
        self.eval_env = eval_env
        self.cfg = cfg
        self.tracker = tracker
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.augmenter: Augmenter = augmenter or NoAugmentation()
        self.progress = progress or Progress("none", cfg.total_steps, "")
        self.items_per_page = env.metadata.get("items_per_page")
        self.ranking = ranking

    def train(self) -> TrainResult:
        cfg, n = self.cfg, self.env.num_envs
        obs, _ = self.env.reset(seed=self.seed)
        loop = _Loop(_tensor(obs), np.zeros(n), np.zeros(n, dtype=np.int64), cfg.log_every, cfg.eval_every)
        result = TrainResult(steps=0, key_metric="", final_eval={}, best_eval={})
        window = _Window(EpisodeStats(self.items_per_page))
        window.paused += self._paused(lambda: self.augmenter.start(self.agent), 0, result)
        if not self._may_step(loop):
            raise ConfigError(
                f"trainer.total_steps={cfg.total_steps} leaves no env step for training "
                f"({self.budget.counter.steps} already spent before the first step); raise it"
            )
        # The untrained policy (after the mode's start: expert mode's stage 2), where every
        # evaluation curve starts.
        window.paused += self._paused(lambda: self._evaluate(0, result), 0, result)
        while self._may_step(loop):
            self._step(loop, window, result)
            window.add_losses(self.agent.learn())
            last = not self._may_step(loop)
            if loop.steps >= loop.next_log or last:
                self._log_window(window, loop.steps, result)
                window = _Window(EpisodeStats(self.items_per_page))
                loop.next_log = (loop.steps // cfg.log_every + 1) * cfg.log_every
            if loop.steps >= loop.next_eval or last:
                window.paused += self._paused(lambda: self._evaluate(loop.steps, result), loop.steps, result)
                loop.next_eval = (loop.steps // cfg.eval_every + 1) * cfg.eval_every
        result.steps = loop.steps
        result.env_steps = self.budget.counter.steps
        tags = self.augmenter.finish()
        if tags:
            self.tracker.set_tags(tags)
        self.tracker.flush()
        return result

    def _may_step(self, loop: _Loop) -> bool:
        n = self.env.num_envs
        return self.budget.allows(loop.steps, n * (1 + self.augmenter.queries_per_step()))

    def _step(self, loop: _Loop, window: _Window, result: TrainResult) -> None:
        """One vector step: act, let the augmenter look before and after, hand everything to
        the agent, and close the episodes that ended."""
        env, n = self.env, self.env.num_envs
        actions = self.agent.explore(loop.obs, allowed_items(env))
        self.augmenter.before_step(env, loop.obs, actions)
        next_np, rewards_np, terminated_np, truncated_np, info = env.step(actions.cpu().numpy())
        done_np = terminated_np | truncated_np
        next_obs = _tensor(next_np)
        # Bootstrapping needs the true last observation of a finished episode, not the first
        # observation of its replacement.
        real_next = (
            _tensor(np.where(done_np[:, None], info["final_obs"], next_np)) if done_np.any() else next_obs
        )
        real = Transitions(
            loop.obs,
            actions,
            torch.from_numpy(rewards_np),
            real_next,
            torch.from_numpy(terminated_np),
            torch.from_numpy(truncated_np),
        )
        self.agent.observe(real)
        for extra in self.augmenter.after_step(real):
            self.agent.add_extra(extra)
        loop.obs = next_obs
        loop.steps += n
        window.steps += n
        self.progress.advance(n)
        loop.returns += rewards_np
        loop.lengths += 1
        if done_np.any():
            returns, lengths = loop.returns[done_np], loop.lengths[done_np]
            window.episodes.add(returns, lengths)
            loop.returns[done_np] = 0.0
            loop.lengths[done_np] = 0
            hook = self.augmenter.episodes_ended
            window.paused += self._paused(
                lambda: hook(self.agent, returns, lengths, loop.steps), loop.steps, result
            )

    def _paused(self, work: Callable[[], dict[str, float] | None], steps: int, result: TrainResult) -> float:
        """Runs work done outside the loop, logs the metrics it returns, returns its wall time."""
        t0 = time.perf_counter()
        metrics = work()
        if metrics:
            self._log(metrics, steps, result)
        return time.perf_counter() - t0

    def _log_window(self, window: _Window, steps: int, result: TrainResult) -> None:
        metrics = window.metrics()
        metrics.update(self.augmenter.metrics())
        metrics["perf/steps_per_s"] = window.steps_per_s()
        metrics["perf/env_steps"] = float(self.budget.counter.steps)
        self._log(metrics, steps, result)

    def _evaluate(self, steps: int, result: TrainResult) -> None:
        metrics = evaluate(self.agent, self.eval_env, self.cfg.eval_seed, self.items_per_page, self.ranking)
        result.final_eval = metrics
        result.key_metric = key_metric(metrics)
        # With the evaluation, so that curves can be drawn against simulator cost.
        logged = {**metrics, "perf/env_steps": float(self.budget.counter.steps)}
        if not result.best_eval or metrics[result.key_metric] > result.best_eval[result.key_metric]:
            result.best_eval = {**metrics, "step": float(steps)}
            self.agent.save(self.checkpoint_dir / "best_agent.pt")
            # best/<metric> and best/step: the best evaluation so far by the key metric, each
            # one column of the runs table, logged whenever a new best replaces it.
            logged.update({f"best/{k}": v for k, v in result.best_eval.items()})
        self._log(logged, steps, result)

    def _log(self, metrics: dict[str, float], steps: int, result: TrainResult) -> None:
        self.tracker.log_metrics(metrics, steps)
        for key, value in metrics.items():
            result.history[key].append((steps, value))
        self.progress.report(steps, metrics)


@torch.no_grad()
def evaluate(
    agent: Agent, env: BatchedEnv, seed: int, items_per_page: int | None, ranking: Ranking | None = None
) -> dict[str, float]:
    """Runs every user of ``env`` through exactly one episode with the deterministic policy.

    The policy is the agent's ``frozen_policy``, which never draws from the agent's own random
    stream (the random policy acts from one): when and how often a run evaluates, step 0
    included, leaves its training unchanged.

    With ``ranking`` (the offline datasets), the items recommended to each user, ``info["item"]``
    stacked into a (users, steps) array, are scored as well; a user whose episode ended early
    (``env.candidates=rated``) has ``NOT_SHOWN`` after its end, not its next episode's items.
    """
    policy = agent.frozen_policy()
    obs, _ = env.reset(seed=seed)
    n = env.num_envs
    active = np.ones(n, dtype=bool)
    returns = np.zeros(n, dtype=np.float64)
    lengths = np.zeros(n, dtype=np.int64)
    recommended: list[np.ndarray] = []
    while active.any():
        actions = policy(_tensor(obs), allowed=allowed_items(env))
        obs, rewards, terminated, truncated, info = env.step(actions.cpu().numpy())
        if ranking is not None:
            recommended.append(np.where(active, info["item"], NOT_SHOWN))
        returns += rewards * active
        lengths += active
        active &= ~(terminated | truncated)
    stats = EpisodeStats(items_per_page)
    stats.add(returns, lengths)
    metrics = stats.summary("eval")
    if ranking is not None:
        metrics.update(ranking(np.stack(recommended, axis=1)))
    return metrics
