"""The training loop: one loop for every algorithm and every batched env."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from macs_exp.agents.base import Agent
from macs_exp.config import AlgoConfig, ReferenceConfig, TrainerConfig
from macs_exp.envs.base import BatchedEnv, EnvInfo
from macs_exp.macs import Synthesizer, ThresholdSchedule, random_mask
from macs_exp.macs.synthesis import Policy
from macs_exp.metrics import EpisodeStats
from macs_exp.tracking import Tracker
from macs_exp.trainer.progress import Progress

# Scores the (users, steps) items recommended in one evaluation: the Table I metrics.
Ranking = Callable[[np.ndarray], dict[str, float]]


@dataclass
class Augmentation:
    """How a mode adds transitions to the recommender's buffer.

    - ``synthesizer`` alone (expert mode): pi_c is trained once against ``expert`` before the
      recommender starts, then counterfactuals come from it at every step.
    - ``synthesizer`` with ``schedule`` (joint mode, Algorithm 1): pi_c is (re)trained against a
      frozen copy of the recommender whenever its score reaches the threshold.
    - ``mask_prob`` (the random-mask ablation): masked copies of the real states.
    """

    env_info: EnvInfo | None = None
    synthesizer: Synthesizer | None = None
    expert: Policy | None = None
    schedule: ThresholdSchedule | None = None
    mask_prob: float | None = None
    seed: int = 0


@dataclass
class TrainResult:
    steps: int
    # The evaluation metric that selects the best checkpoint (and that sweepers optimise).
    key_metric: str
    final_eval: dict[str, float]
    best_eval: dict[str, float]
    # metric name -> [(user_step, value), ...], for the learning-curve figure
    history: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    run_id: str | None = None


class Trainer:
    def __init__(
        self,
        agent: Agent,
        env: BatchedEnv,
        eval_env: BatchedEnv,
        cfg: TrainerConfig,
        algo: AlgoConfig | ReferenceConfig,
        tracker: Tracker,
        seed: int,
        checkpoint_dir: Path,
        progress: Progress | None = None,
        augmentation: Augmentation | None = None,
        ranking: Ranking | None = None,
    ) -> None:
        self.agent = agent
        self.env = env
        self.eval_env = eval_env
        self.cfg = cfg
        self.algo = algo
        self.tracker = tracker
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress or Progress("none", cfg.total_steps, "")
        self.aug = augmentation or Augmentation()
        self.mask_generator = torch.Generator().manual_seed(self.aug.seed)
        # Counterfactual bookkeeping for the cf/* metrics.
        self.real_stored = 0
        self.cf_stored = 0
        self._gap_sum = 0.0
        self._gap_count = 0
        self.items_per_page = env.metadata.get("items_per_page")
        self.ranking = ranking
        # The metric that selects the best checkpoint: precision on the offline datasets, CTR
        # where the env defines one.
        if ranking is not None:
            self.key_metric = "test/precision"
        else:
            self.key_metric = "eval/ctr" if self.items_per_page else "eval/episode_reward"

    def train(self) -> TrainResult:
        cfg, algo, env = self.cfg, self.algo, self.env
        n = env.num_envs
        obs_np, _ = env.reset(seed=self.seed)
        obs = torch.from_numpy(np.array(obs_np, dtype=np.float32))
        running_return = np.zeros(n, dtype=np.float64)
        running_length = np.zeros(n, dtype=np.int64)
        episodes = EpisodeStats(self.items_per_page)
        loss_sums: dict[str, float] = defaultdict(float)
        loss_count = 0
        result = TrainResult(steps=0, key_metric=self.key_metric, final_eval={}, best_eval={})

        steps = vec_steps = 0
        next_log, next_eval = cfg.log_every, cfg.eval_every
        window_start, window_steps, paused_time = time.perf_counter(), 0, 0.0
        aug = self.aug
        # Reference policies act without a warm-up and never update.
        warmup = algo.learning_starts if isinstance(algo, AlgoConfig) else 0
        if aug.synthesizer is not None and aug.expert is not None:
            paused_time += self._stage2(aug.expert, 0, result)
        while steps < cfg.total_steps:
            actions = self.agent.random_actions(n) if steps < warmup else self.agent.act(obs)
            # Stage 3: asked before the real step, from a snapshot the query restores.
            cf = (
                aug.synthesizer.counterfactuals(env, obs, actions)
                if aug.synthesizer is not None and aug.synthesizer.trained
                else None
            )
            next_np, rewards_np, terminated_np, truncated_np, info = env.step(actions.cpu().numpy())
            done_np = terminated_np | truncated_np
            next_obs = torch.from_numpy(np.array(next_np, dtype=np.float32))
            # Bootstrapping needs the true last observation of a finished episode, not the
            # first observation of its replacement.
            real_next = (
                torch.from_numpy(np.where(done_np[:, None], info["final_obs"], next_np).astype(np.float32))
                if done_np.any()
                else next_obs
            )
            rewards, terminated = torch.from_numpy(rewards_np), torch.from_numpy(terminated_np)
            self.agent.store(obs, actions, rewards, real_next, terminated)
            self.real_stored += n
            if cf is not None and cf.valid.any():
                v = cf.valid
                # (s_c, a_t, s_{t+1}, r_c): the counterfactual state with the real action, next
                # state and termination, and the reward the real action earns from s_c.
                self.agent.store(cf.states[v], actions[v], cf.rewards[v], real_next[v], terminated[v])
                stored = int(v.sum())
                self.cf_stored += stored
                self._gap_sum += float((cf.rewards[v] - rewards[v]).sum())
                self._gap_count += stored
            if aug.mask_prob is not None:
                masked = random_mask(obs, aug.mask_prob, self.mask_generator)
                self.agent.store(masked, actions, rewards, real_next, terminated)
                self.cf_stored += n
            obs = next_obs
            steps += n
            vec_steps += 1
            window_steps += n
            self.progress.advance(n)

            running_return += rewards_np
            running_length += 1
            if done_np.any():
                episodes.add(running_return[done_np], running_length[done_np])
                if aug.schedule is not None and aug.env_info is not None:
                    aug.schedule.observe(
                        aug.env_info.episode_scores(running_return[done_np], running_length[done_np])
                    )
                running_return[done_np] = 0.0
                running_length[done_np] = 0
                if aug.schedule is not None and aug.schedule.reached():
                    paused_time += self._stage2(self.agent.frozen_policy(), steps, result)

            if isinstance(algo, AlgoConfig) and steps >= warmup and vec_steps % algo.train_freq == 0:
                grad_steps = algo.gradient_steps if algo.gradient_steps > 0 else n * algo.train_freq
                for key, value in self.agent.update(grad_steps).items():
                    loss_sums[key] += value
                loss_count += 1

            if steps >= next_log or steps >= cfg.total_steps:
                elapsed = time.perf_counter() - window_start - paused_time
                metrics = {f"train/{k}": v / loss_count for k, v in loss_sums.items()} if loss_count else {}
                metrics.update(episodes.summary("train"))
                metrics.update(self._augmentation_metrics())
                metrics["perf/steps_per_s"] = window_steps / max(elapsed, 1e-9)
                self._log(metrics, steps, result)
                episodes = EpisodeStats(self.items_per_page)
                loss_sums.clear()
                loss_count = 0
                window_start, window_steps, paused_time = time.perf_counter(), 0, 0.0
                next_log = (steps // cfg.log_every + 1) * cfg.log_every

            if steps >= next_eval or steps >= cfg.total_steps:
                t0 = time.perf_counter()
                self._evaluate(steps, result)
                paused_time += time.perf_counter() - t0
                next_eval = (steps // cfg.eval_every + 1) * cfg.eval_every

        result.steps = steps
        self.tracker.flush()
        return result

    def _stage2(self, policy: Policy, steps: int, result: TrainResult) -> float:
        """Runs Algorithm 2 against ``policy``; returns its wall time, which is kept out of
        ``perf/steps_per_s`` (it is logged as ``perf/stage2_s``)."""
        aug = self.aug
        assert aug.synthesizer is not None
        t0 = time.perf_counter()
        metrics = aug.synthesizer.train(policy, joint=aug.schedule is not None)
        if aug.schedule is not None:
            aug.schedule.advance()
            metrics["macs/stage2_runs"] = float(aug.schedule.runs)
            metrics["macs/threshold"] = aug.schedule.threshold
        else:
            metrics["macs/stage2_runs"] = 1.0
        elapsed = time.perf_counter() - t0
        metrics["perf/stage2_s"] = elapsed
        self._log(metrics, steps, result)
        return elapsed

    def _augmentation_metrics(self) -> dict[str, float]:
        aug = self.aug
        if aug.synthesizer is None and aug.mask_prob is None:
            return {}
        metrics = {
            "cf/transitions": float(self.cf_stored),
            # The counterfactual share of everything stored; equal to the share of the buffer's
            # content until it wraps around, and in expectation afterwards.
            "cf/buffer_share": self.cf_stored / max(self.cf_stored + self.real_stored, 1),
        }
        if self._gap_count:
            metrics["cf/reward_gap"] = self._gap_sum / self._gap_count
            self._gap_sum, self._gap_count = 0.0, 0
        if aug.schedule is not None:
            metrics["macs/threshold"] = aug.schedule.threshold
            metrics["macs/stage2_runs"] = float(aug.schedule.runs)
        return metrics

    def _evaluate(self, steps: int, result: TrainResult) -> None:
        metrics = evaluate(self.agent, self.eval_env, self.cfg.eval_seed, self.items_per_page, self.ranking)
        self._log(metrics, steps, result)
        result.final_eval = metrics
        if not result.best_eval or metrics[self.key_metric] > result.best_eval[self.key_metric]:
            result.best_eval = {**metrics, "step": float(steps)}
            self.agent.save(self.checkpoint_dir / "best_agent.pt")

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

    With ``ranking`` (the offline datasets), the items recommended to each user, ``info["item"]``
    stacked into a (users, steps) array, are scored as well.
    """
    obs, _ = env.reset(seed=seed)
    n = env.num_envs
    active = np.ones(n, dtype=bool)
    returns = np.zeros(n, dtype=np.float64)
    lengths = np.zeros(n, dtype=np.int64)
    recommended: list[np.ndarray] = []
    while active.any():
        actions = agent.act(torch.from_numpy(np.asarray(obs, dtype=np.float32)), deterministic=True)
        obs, rewards, terminated, truncated, info = env.step(actions.cpu().numpy())
        if ranking is not None:
            recommended.append(np.asarray(info["item"]))
        returns += rewards * active
        lengths += active
        active &= ~(terminated | truncated)
    stats = EpisodeStats(items_per_page)
    stats.add(returns, lengths)
    metrics = stats.summary("eval")
    if ranking is not None:
        metrics.update(ranking(np.stack(recommended, axis=1)))
    return metrics
