"""The training loop: one loop for every agent, every mode and every batched env.

It knows agents only through their protocol (``macs_exp.agents.protocol``) and modes only
through the augmenter protocol (``macs_exp.trainer.augmenter``): it never asks which algorithm
or which mode it runs.

Between vector steps it can write the whole training state to a checkpoint (every
``trainer.checkpoint_every`` user-steps, and when SIGTERM asks it to stop), and it can start
from one instead of from a reset: a resumed run takes exactly the steps, random draws and
metrics the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from macs_exp.agents import Agent, ReportsMetrics, Resumable, Transitions, Updates
from macs_exp.envs.base import BatchedEnv, allowed_items, user_keywords
from macs_exp.envs.counting import CountingEnv, StepCounter
from macs_exp.metrics import NOT_SHOWN, EpisodeStats, key_metric
from macs_exp.schema import ConfigError
from macs_exp.tracking import Tracker
from macs_exp.tracking.mlflow_tracker import Terminated
from macs_exp.trainer.augmenter import Augmenter, NoAugmentation
from macs_exp.trainer.budget import Budget
from macs_exp.trainer.checkpoint import Checkpointing, pack, save_checkpoint, unpack
from macs_exp.trainer.config import TrainerConfig
from macs_exp.trainer.progress import Progress
from macs_exp.trainer.result import TrainResult
from macs_exp.trainer.signals import graceful_stop

log = logging.getLogger("macs_exp")

# Scores the (users, steps) items recommended in one evaluation: the Table I metrics.
Ranking = Callable[[np.ndarray], dict[str, float]]

# A run as a generator: it yields its agent whenever the agent's updates are due and is sent
# their losses back, so that whoever drives it decides how the updates run (``drive``: the agent
# alone; ``macs_exp.trainer.parallel``: the agents of several seeds in one batched update).
Training = Generator[Agent, Updates, TrainResult]


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

    def state(self) -> dict[str, Any]:
        """What the window has gathered (its clock restarts on resume)."""
        return {
            "episodes": pack(self.episodes.state()),
            "steps": self.steps,
            "loss_sums": dict(self.loss_sums),
            "loss_count": self.loss_count,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.episodes.load_state(unpack(self.episodes.state(), state["episodes"]))
        self.steps = int(state["steps"])
        self.loss_sums.update(state["loss_sums"])
        self.loss_count = int(state["loss_count"])


@dataclass
class _Loop:
    """Where the loop stands: the current observations, each slot's running episode, counters."""

    obs: torch.Tensor
    returns: np.ndarray
    lengths: np.ndarray
    next_log: int
    next_eval: int
    next_checkpoint: int
    steps: int = 0

    def state(self) -> dict[str, Any]:
        return pack(self._fields())

    def load_state(self, state: dict[str, Any]) -> None:
        for key, value in unpack(self._fields(), state).items():
            setattr(self, key, value)

    def _fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


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
        checkpointing: Checkpointing | None = None,
    ) -> None:
        """``budget`` counts the env steps of every env the run trains with (the caller wraps
        them in ``CountingEnv``s on its counter); without one, only ``env`` is counted.
        ``checkpointing`` says where checkpoints go (none without it) and which to resume from."""
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
        # Decided once: whether every part of the run can be saved (``Resumable``, and an env
        # whose snapshot is tensors and containers: gymnasium's envs are Python objects).
        resumable = checkpointing is not None and (
            isinstance(agent, Resumable) and isinstance(self.augmenter, Resumable) and _packable(env)
        )
        if checkpointing is not None and not resumable:
            log.warning(
                "this run's agent, mode or env (%s, %s, %s) cannot be checkpointed: it writes no checkpoint",
                type(agent).__name__,
                type(self.augmenter).__name__,
                type(getattr(env, "env", env)).__name__,
            )
        self.checkpointing = checkpointing if resumable else None

    def train(self) -> TrainResult:
        """Trains the agent alone, updating it where the loop says."""
        return drive(self.run())

    def run(self) -> Training:
        """The training loop, yielding the agent at each vector step for its updates."""
        cfg, n = self.cfg, self.env.num_envs
        obs, _ = self.env.reset(seed=self.seed)
        loop = _Loop(
            _tensor(obs), np.zeros(n), np.zeros(n, dtype=np.int64), cfg.log_every, cfg.eval_every, self._every
        )
        result = TrainResult(steps=0, key_metric="", final_eval={}, best_eval={})
        window = _Window(EpisodeStats(self.items_per_page))
        resume = self.checkpointing.resume if self.checkpointing else None
        if resume is not None:
            self._restore(resume, loop, window, result)
        else:
            window.paused += self._paused(lambda: self.augmenter.start(self.agent), 0, result)
            # The untrained policy (after the mode's start: expert mode's stage 2), where every
            # evaluation curve starts.
            if self.cfg.eval_at_start:
                window.paused += self._paused(lambda: self._evaluate(0, result), 0, result)
        if not self._may_step(loop):
            raise ConfigError(
                f"trainer.total_steps={cfg.total_steps} leaves no env step for training "
                f"({self.budget.counter.steps} already spent before the first step); raise it"
            )
        with graceful_stop() as stop_requested:
            while self._may_step(loop):
                window = yield from self._iteration(loop, window, result)
                self._checkpoint_if_due(loop, window, result, stop_requested())
        result.steps = loop.steps
        result.env_steps = self.budget.counter.steps
        tags = self.augmenter.finish()
        if tags:
            self.tracker.set_tags(tags)
        self.tracker.flush()
        return result

    def _iteration(
        self, loop: _Loop, window: _Window, result: TrainResult
    ) -> Generator[Agent, Updates, _Window]:
        """One vector step, its updates, and the logging and evaluation that fall due after it;
        returns the logging window to go on with."""
        cfg = self.cfg
        self._step(loop, window, result)
        window.add_losses((yield self.agent))
        last = not self._may_step(loop)
        if loop.steps >= loop.next_log or last:
            self._log_window(window, loop.steps, result)
            window = _Window(EpisodeStats(self.items_per_page))
            loop.next_log = (loop.steps // cfg.log_every + 1) * cfg.log_every
        if loop.steps >= loop.next_eval or last:
            window.paused += self._paused(lambda: self._evaluate(loop.steps, result), loop.steps, result)
            loop.next_eval = (loop.steps // cfg.eval_every + 1) * cfg.eval_every
        return window

    @property
    def _every(self) -> int:
        """User-steps between checkpoints; 0 when there are none to write."""
        return self.checkpointing.every if self.checkpointing else 0

    # --- checkpoints --------------------------------------------------------------------
    def _checkpoint_if_due(self, loop: _Loop, window: _Window, result: TrainResult, stop: bool) -> None:
        """Writes a checkpoint when one is due (never after the last step: the run is about to
        finish) or a stop was asked; then stops, if asked."""
        every = self._every
        due = every > 0 and loop.steps >= loop.next_checkpoint and self._may_step(loop)
        if (due or stop) and self.checkpointing is not None:
            self._save(loop, window, result)
            if every:
                loop.next_checkpoint = (loop.steps // every + 1) * every
        if stop:
            where = f"checkpoint {self.checkpointing.path}" if self.checkpointing else "no checkpoint"
            raise Terminated(f"received SIGTERM: stopped at user-step {loop.steps} ({where})")

    def _save(self, loop: _Loop, window: _Window, result: TrainResult) -> None:
        assert self.checkpointing is not None
        assert isinstance(self.agent, Resumable) and isinstance(self.augmenter, Resumable)
        # Every metric up to this step reaches the store before the checkpoint that follows it:
        # a resumed run logs only what came after.
        self.tracker.flush()
        state = {
            **self.checkpointing.meta,
            "loop": loop.state(),
            "window": window.state(),
            "result": result.state(),
            "env_steps": self.budget.counter.steps,
            "env": pack(self.env.snapshot()),
            "agent": self.agent.training_state(),
            "augmenter": self.augmenter.training_state(),
            "torch_rng": torch.get_rng_state(),
        }
        save_checkpoint(self.checkpointing.path, state)

    def _restore(self, state: dict[str, Any], loop: _Loop, window: _Window, result: TrainResult) -> None:
        """The inverse of ``_save``, on a trainer built (and its env reset) as the saved one was."""
        assert isinstance(self.agent, Resumable) and isinstance(self.augmenter, Resumable)
        loop.load_state(state["loop"])
        window.load_state(state["window"])
        result.load_state(state["result"])
        self.budget.counter.steps = int(state["env_steps"])
        self.env.restore(unpack(self.env.snapshot(), state["env"]))
        self.agent.load_training_state(state["agent"])
        self.augmenter.load_training_state(state["augmenter"])
        torch.set_rng_state(state["torch_rng"])
        self.progress.advance(loop.steps)

    def _may_step(self, loop: _Loop) -> bool:
        n = self.env.num_envs
        return self.budget.allows(loop.steps, n * (1 + self.augmenter.queries_per_step()))

    def _step(self, loop: _Loop, window: _Window, result: TrainResult) -> None:
        """One vector step: act, let the augmenter look before and after, hand everything to
        the agent, and close the episodes that ended."""
        env, n = self.env, self.env.num_envs
        actions = self.agent.explore(loop.obs, allowed_items(env), **user_keywords(env))
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
        if isinstance(self.agent, ReportsMetrics):
            metrics.update(self.agent.window_metrics())
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


def _packable(env: BatchedEnv) -> bool:
    """Whether ``env``'s snapshot can go into a checkpoint."""
    try:
        pack(env.snapshot())
    except TypeError:
        return False
    return True


def drive(training: Training) -> TrainResult:
    """Runs ``training`` to its end, updating each agent it yields on its own. A failed update
    is raised inside the run, where the run records it."""
    try:
        agent = next(training)
        while True:
            try:
                updates = agent.learn()
            except Exception as err:
                agent = training.throw(err)
            else:
                agent = training.send(updates)
    except StopIteration as stop:
        return stop.value


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
        actions = policy(_tensor(obs), allowed=allowed_items(env), **user_keywords(env))
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
