"""The counterfactual synthesis policy pi_c: its training (Algorithm 2) and its use (stage 3
of Algorithm 1).

Both ask the env "what if another action had been taken here?" by snapshotting its state,
stepping the alternative, and restoring the snapshot, so the real trajectory never changes.
A restore also rewinds the env's random generator, so the intervention step draws the same
random numbers as the real step it shadows; the step that earns r_c draws the ones after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from macs_exp.agents import Agent, Policy, Resumable, Transitions
from macs_exp.envs.base import BatchedEnv, EnvInfo, allowed_items, user_keywords
from macs_exp.macs.config import MacsConfig
from macs_exp.macs.kl import reward_kl, scale_rewards, synthesis_reward
from macs_exp.trainer.checkpoint import pack, unpack


@dataclass(frozen=True)
class _Step:
    """One vector step of stage 2: s_n, a'_n, s'_n, r_n, r'_n and how the intervention ended."""

    states: torch.Tensor
    interventions: torch.Tensor
    cf_states: torch.Tensor
    observed: torch.Tensor
    intervened: torch.Tensor
    cf_terminated: torch.Tensor
    cf_ended: torch.Tensor


@dataclass
class Counterfactuals:
    """Stage 3 for one batch: the counterfactual states s_c and rewards r_c of the real action.

    ``valid`` is False where no counterfactual exists: the user was not drawn (augment_prob), or
    the intervention itself ended the episode, leaving no state in which to take the real action.
    """

    states: torch.Tensor
    rewards: torch.Tensor
    valid: torch.Tensor


@dataclass(frozen=True)
class Stage2Report:
    """One stage-2 run: its metrics, and every reward pi_c was given, in the order stored
    (windows in turn, users within a window), which shows whether pi_c had any signal."""

    metrics: dict[str, float]
    rewards: torch.Tensor


# The action taken from s_c: fixed (the action chosen at the real state), or chosen there.
Response = np.ndarray | Callable[[np.ndarray], np.ndarray]

# Stage 2's env steps per user-step: the intervention, the response from s'_n, the real step.
STAGE2_STEPS_PER_USER_STEP = 3


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


def intervene(
    env: BatchedEnv, intervention: np.ndarray, response: Response
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From the env's current state: step ``intervention`` (giving s_c), then ``response`` from
    s_c (giving r_c), then restore. ``response`` is an array of actions, or a function of s_c
    that chooses them (Eq. 9's reading of stage 2). Returns s_c, r_c, and whether the
    intervention terminated or truncated the episode; where it did, s_c is that episode's last
    observation and r_c is meaningless."""
    snapshot = env.snapshot()
    s_c, _, terminated, truncated, info = env.step(intervention)
    ended = terminated | truncated
    if ended.any():
        s_c = np.where(ended[:, None], info["final_obs"], s_c)
    _, r_c, *_ = env.step(response(s_c) if callable(response) else response)
    env.restore(snapshot)
    return np.asarray(s_c, dtype=np.float32), np.asarray(r_c, dtype=np.float32), terminated, truncated


class Synthesizer:
    """pi_c with its own env for stage 2, so that training it never touches the recommender's
    env, and the bookkeeping the metrics report."""

    def __init__(
        self,
        agent: Agent,
        env: BatchedEnv,
        info: EnvInfo,
        cfg: MacsConfig,
        seed: int,
        checkpoint: Path | None = None,
    ) -> None:
        self.agent = agent
        self.env = env
        self.info = info
        self.cfg = cfg
        self.seed = seed
        # Where pi_c is saved after every stage 2 (Algorithm 2's last line), if anywhere.
        self.checkpoint = checkpoint
        self.generator = torch.Generator().manual_seed(seed)
        self.trained = False
        self._obs: np.ndarray | None = None

    # --- checkpoints --------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """pi_c's training state, its stage-2 env (where the next stage 2 continues from) and
        the stage-3 draws' stream."""
        if not isinstance(self.agent, Resumable):
            raise TypeError(f"pi_c's agent {self.agent.name!r} cannot be checkpointed")
        return {
            "agent": self.agent.training_state(),
            "env": None if self._obs is None else pack(self.env.snapshot()),
            "obs": None if self._obs is None else pack(self._obs),
            "generator": self.generator.get_state(),
            "trained": self.trained,
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        if not isinstance(self.agent, Resumable):
            raise TypeError(f"pi_c's agent {self.agent.name!r} cannot be restored from a checkpoint")
        self.agent.load_training_state(state["agent"])
        if state["env"] is not None:
            # A reset builds the env's state, whose types the snapshot is restored into.
            self._obs, _ = self.env.reset(seed=self.seed)
            self.env.restore(unpack(self.env.snapshot(), state["env"]))
            self._obs = unpack(self._obs, state["obs"])
        self.generator.set_state(state["generator"])
        self.trained = bool(state["trained"])

    def stage2_cost(self) -> int:
        """The env steps one stage-2 run takes: every user-step of it is three steps."""
        n = self.env.num_envs
        return -(-self.cfg.stage2_steps // n) * n * STAGE2_STEPS_PER_USER_STEP

    # --- stage 3 ------------------------------------------------------------------------
    def counterfactuals(self, env: BatchedEnv, obs: torch.Tensor, actions: torch.Tensor) -> Counterfactuals:
        n = obs.shape[0]
        drawn = (
            torch.ones(n, dtype=torch.bool)
            if self.cfg.augment_prob >= 1.0
            else torch.rand(n, generator=self.generator) < self.cfg.augment_prob
        )
        if not drawn.any():
            return Counterfactuals(obs, torch.zeros(n), drawn)
        intervention = self.agent.act(obs, deterministic=True, allowed=allowed_items(env))
        s_c, r_c, terminated, truncated = intervene(env, intervention.cpu().numpy(), actions.cpu().numpy())
        return Counterfactuals(_tensor(s_c), _tensor(r_c), drawn & ~torch.from_numpy(terminated | truncated))

    # --- stage 2 (Algorithm 2) ----------------------------------------------------------
    def train(self, policy: Policy, joint: bool) -> Stage2Report:
        """Trains pi_c for ``stage2_steps`` user-steps against ``policy`` (the expert, or a
        frozen copy of the recommender), with Eq. 11 (``joint=False``) or Eq. 12.

        Each user keeps its own windows R and R' of ``kl_window`` steps. When a window is full,
        its KL fixes the reward of all its transitions, which are then stored and learned from:
        pi_c's own schedule catches up with the updates its window made due.
        """
        if self._obs is None:
            self._obs, _ = self.env.reset(seed=self.seed)
        window: list[_Step] = []
        kls: list[torch.Tensor] = []
        rewards: list[torch.Tensor] = []
        visited: list[torch.Tensor] = []
        losses: dict[str, list[float]] = {}
        done_steps = 0
        while done_steps < self.cfg.stage2_steps:
            window.append(self._step(policy))
            done_steps += self.env.num_envs
            if len(window) == self.cfg.kl_window or done_steps >= self.cfg.stage2_steps:
                kl, reward = self._close_window(window, joint)
                kls.append(kl)
                rewards.append(reward)
                visited.extend(step.states for step in window)
                for update in self.agent.learn():
                    for key, value in update.items():
                        losses.setdefault(key, []).append(value)
                window.clear()
        self.trained = True
        if self.checkpoint is not None:
            self.agent.save(self.checkpoint)
        all_rewards = torch.cat(rewards)
        return Stage2Report(self._summary(kls, all_rewards, torch.cat(visited), losses), all_rewards)

    def _summary(
        self,
        kls: list[torch.Tensor],
        rewards: torch.Tensor,
        visited: torch.Tensor,
        losses: dict[str, list[float]],
    ) -> dict[str, float]:
        """The ``macs/*`` metrics of one stage-2 run (see docs/macs.md, Metrics)."""
        summary = {
            "macs/kl": float(torch.cat(kls).mean()),
            "macs/reward": float(rewards.mean()),
            # 0 when every transition got the same reward: pi_c had nothing to learn from.
            "macs/reward_std": float(rewards.std(correction=0)),
        }
        saturation = self.action_saturation(visited)
        if saturation is not None:
            summary["macs/action_saturation"] = saturation
        summary.update({f"macs/{k}": float(np.mean(v)) for k, v in losses.items()})
        if self.info.trivial_mask is not None:
            assert self._obs is not None
            summary["macs/trivial_change_fraction"] = self.trivial_change_fraction(self.env, self._obs)
        return summary

    def action_saturation(self, states: torch.Tensor) -> float | None:
        """The share of pi_c's deterministic action components at ``states`` that lie beyond 99%
        of the way from the action space's centre to its bound: a pi_c pinned to its bounds
        (tanh saturated) no longer tells states apart. None for a non-Box action space."""
        space = self.env.single_action_space
        if not isinstance(space, gym.spaces.Box):
            return None
        low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
        centre, half = (high + low) / 2, (high - low) / 2
        actions = self.agent.act(states, deterministic=True).cpu()
        return float(((actions - centre).abs() > 0.99 * half).float().mean())

    def _step(self, policy: Policy) -> _Step:
        """One step of Algorithm 2 from the stage-2 env's current state: the policy's a_n, pi_c's
        a'_n (exploring), the intervention's s'_n and r'_n, then the real step with a_n. r'_n is
        a_n's reward from s'_n (``macs.replay=algorithm2``) or that of the policy's own action
        there (``eq9``)."""
        assert self._obs is not None
        obs_t = _tensor(self._obs)
        allowed = allowed_items(self.env)
        a = policy(obs_t, allowed=allowed, **user_keywords(self.env)).cpu()
        a_prime = self.agent.explore(obs_t, allowed).cpu()
        response = self._response(policy, a)
        s_prime, r_prime, terminated, truncated = intervene(self.env, a_prime.numpy(), response)
        self._obs, r, *_ = self.env.step(a.numpy())
        return _Step(
            obs_t,
            a_prime,
            _tensor(s_prime),
            _tensor(r),
            _tensor(r_prime),
            torch.from_numpy(terminated),
            torch.from_numpy(terminated | truncated),
        )

    def _response(self, policy: Policy, a: torch.Tensor) -> Response:
        """What the fixed policy does at s'_n: replay a_n (Algorithm 2), or choose its own action
        there, as Eq. 9's sum over P(A | S_c) says."""
        if self.cfg.replay == "algorithm2":
            return a.numpy()

        def own_choice(s_prime: np.ndarray) -> np.ndarray:
            # Called with the env at s'_n, whose allowed items are then its current ones.
            return (
                policy(_tensor(s_prime), allowed=allowed_items(self.env), **user_keywords(self.env))
                .cpu()
                .numpy()
            )

        return own_choice

    def _close_window(self, window: list[_Step], joint: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixes the rewards of a full window from its KL (Eqs. 10-12) and hands its transitions
        to pi_c; returns the window's per-user KL and the rewards."""
        cfg, info = self.cfg, self.info
        stacked = {
            name: torch.stack([getattr(s, name) for s in window], 1) for name in _Step.__dataclass_fields__
        }
        observed, cf_ended = stacked["observed"], stacked["cf_ended"]
        # An intervention that ends the episode leaves no state to take a_n in: its r' is left
        # out of R', but pi_c still learns from the transition.
        kl = reward_kl(
            observed,
            stacked["intervened"],
            info.reward_range,
            info.reward_bins,
            cfg.kl_smoothing,
            cfg.kl_direction,
            valid=~cf_ended,
        )
        scaled = scale_rewards(observed, info.reward_range) if joint else None
        reward = synthesis_reward(kl[:, None].expand_as(observed), cfg.epsilon, scaled)
        terminated = stacked["cf_terminated"].flatten()
        self.agent.observe(
            Transitions(
                stacked["states"].flatten(0, 1),
                stacked["interventions"].flatten(0, 1),
                reward.flatten(),
                stacked["cf_states"].flatten(0, 1),
                # A truncated intervention still bootstraps from s'_n; only a real end does not.
                terminated,
                cf_ended.flatten() & ~terminated,
            )
        )
        return kl, reward.flatten()

    def trivial_change_fraction(self, env: BatchedEnv, obs: np.ndarray) -> float:
        """The share of the squared change s_c - s that pi_c's (deterministic) counterfactuals
        put on the components that by design do not affect rewards, pooled over the batch."""
        assert self.info.trivial_mask is not None
        obs_t = _tensor(obs)
        intervention = self.agent.act(obs_t, deterministic=True, allowed=allowed_items(env)).cpu().numpy()
        s_c, *_ = intervene(env, intervention, intervention)
        change = (torch.from_numpy(s_c) - obs_t).square()
        trivial = change[:, torch.from_numpy(self.info.trivial_mask)].sum()
        return float(trivial / change.sum().clamp_min(1e-12))
