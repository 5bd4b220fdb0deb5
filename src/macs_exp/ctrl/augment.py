"""``mode=ctrl``: CTRL's counterfactual transitions as an augmenter (docs/ctrl.md).

After a warm-up share of the budget, the causal model is fitted to the real transitions seen so
far, and refitted after every further share. Once fitted, every real transition (s, a, r, s')
gets ``ctrl.per_transition`` counterfactual ones (s, a', r', s'_cf): abduct u from the real
transition, draw an alternative action a', generate s'_cf = G(s, a', u), and take r' from the
env's known rule (the rating env's accept bit) or the learned reward head (every other env).
They cost no env step; only the gate's probe queries step an env, one that is not charged.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from macs_exp import plugins
from macs_exp.agents import SamplesActions, Transitions
from macs_exp.ctrl.config import CtrlConfig
from macs_exp.ctrl.fit import Optimisers, TransitionStore, fit
from macs_exp.ctrl.gate import GatePairs, Prediction, gate_metrics
from macs_exp.ctrl.model import CausalModel
from macs_exp.envs.base import BatchedEnv, BinaryOutcomes, ItemCatalogue, Outcomes, env_info, user_keywords
from macs_exp.macs.augment import CounterfactualStats
from macs_exp.trainer.augmenter import AugmenterContext, ModeConfig, NoAugmentation
from macs_exp.trainer.checkpoint import save_checkpoint

log = logging.getLogger("macs_exp")

# CTRL's random stream (alternative actions, the GAN's prior and minibatches) is offset from
# the run's seed, so it never replays the recommender's.
CTRL_SEED_OFFSET = 20_011
# The fitted causal model in the run's folder, rewritten after every fit (weights only).
CTRL_FILE = "ctrl.pt"


@dataclass
class CtrlModeConfig(ModeConfig):
    """CTRL's settings are in the ``ctrl`` group."""


@dataclass
class _Prepared:
    """What ``before_step`` worked out from the env for ``after_step``: the real and the K
    alternative actions' features (the model's action input), the alternatives as actions, their
    two outcomes on a binary-outcome env, and the gate's probe answer."""

    real_features: torch.Tensor
    alt_features: torch.Tensor
    alt_actions: torch.Tensor
    valid: torch.Tensor
    alt_outcomes: list[Outcomes] | None
    probe: tuple[torch.Tensor, torch.Tensor] | None


def _half_range(space: gym.Space[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(low, high, half width) of a Box action space; an unbounded side counts as width 2."""
    assert isinstance(space, gym.spaces.Box)
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    finite = torch.isfinite(low) & torch.isfinite(high)
    return low, high, torch.where(finite, (high - low) / 2, torch.ones_like(low))


class CtrlAugmenter(NoAugmentation):
    def __init__(
        self, cfg: CtrlConfig, env: BatchedEnv, probe_env: BatchedEnv, context: AugmenterContext
    ) -> None:
        self.cfg = cfg
        self.probe_env = probe_env
        self.info = env_info(env, context.cfg.env.id)
        rule = (
            env.binary_outcomes(torch.zeros(env.num_envs, dtype=torch.int64))
            if isinstance(env, BinaryOutcomes)
            else None
        )
        # The env's reward rule (accepted, rejected) where it has one; else the learned reward head.
        self.binary = rule is not None
        self.reward_rule = (rule.accepted_reward, rule.rejected_reward) if rule is not None else (1.0, 0.0)
        obs_dim = int(np.prod(env.single_observation_space.shape or (1,)))
        action_dim = (
            int(env.item_features().shape[1])
            if isinstance(env, ItemCatalogue)
            else int(np.prod(env.single_action_space.shape or (1,)))
        )
        self.low, self.high, self.half = _half_range(env.single_action_space)
        self.model = CausalModel(
            obs_dim + action_dim,
            1 if self.binary else obs_dim,
            cfg.net_arch,
            cfg.noise_arch,
            binary=self.binary,
            temperature=cfg.temperature,
            noise_context=cfg.noise_context,
        )
        self.optimisers = Optimisers.of(self.model, cfg)
        self.store = TransitionStore(cfg.capacity, obs_dim + action_dim, 1 if self.binary else obs_dim)
        self.generator = torch.Generator().manual_seed(context.seed + CTRL_SEED_OFFSET)
        # Fits at warm-up + k x refit user-steps, k = 0, 1, ..., while training remains after them.
        self.total = context.cfg.trainer.total_steps
        self.refit_every = max(round(cfg.refit_frac * self.total), 1)
        self.next_fit = max(round(cfg.warmup_frac * self.total), 1)
        self.steps = 0
        self.fits = 0
        self.gate_results: list[bool] = []
        self.gate: list[GatePairs] = []
        self.stats = CounterfactualStats()
        # Where alternative actions come from the recommender's own behaviour policy.
        self.sampler = context.agent if isinstance(context.agent, SamplesActions) else None
        self.checkpoint = context.output_dir / CTRL_FILE
        self._pending: _Prepared | None = None

    # --- the env side: alternative actions, their features and outcomes ---------------------
    def _perturbed(self, actions: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(actions.shape, generator=self.generator) * self.cfg.action_noise * self.half
        return torch.clamp(actions.float() + noise, self.low, self.high)

    def before_step(self, env: BatchedEnv, obs: torch.Tensor, actions: torch.Tensor) -> None:
        k = self.cfg.per_transition
        if not isinstance(env, ItemCatalogue):
            alt = torch.stack([self._perturbed(actions) for _ in range(k)])
            prepared = _Prepared(
                actions.float(), alt, alt, torch.ones(k, len(obs), dtype=torch.bool), None, None
            )
        else:
            prepared = self._prepare_items(env, obs, actions)
        if self._gate_due():
            prepared.probe = self._probe(env, prepared.alt_actions[0])
        self._pending = prepared

    def _prepare_items(self, env: ItemCatalogue, obs: torch.Tensor, actions: torch.Tensor) -> _Prepared:
        """On an item env, a' shows another allowed item than a does (by the env's own rule):
        a' is a + noise, stored as that item's features, the action that names it exactly; or,
        for an agent with a behaviour distribution (``SamplesActions``: TPGR), an item drawn from
        it, stored as the agent names items."""
        features = env.item_features()
        allowed = env.allowed_items()
        real = env.choose_items(actions, allowed)
        rows = torch.arange(len(real))
        others = allowed.clone()
        others[rows, real] = False
        k = self.cfg.per_transition
        if self.sampler is not None:
            users = user_keywords(env)
            items = [self.sampler.sample_actions(obs, others, self.generator, **users) for _ in range(k)]
        else:
            items = [env.choose_items(self._perturbed(actions), others) for _ in range(k)]
        valid = torch.stack([others[rows, item] for item in items])
        alt = torch.stack([features[item] for item in items])
        named = torch.stack(items).to(actions.dtype) if self.sampler is not None else alt
        outcomes = [self._outcomes(env, item) for item in items] if self.binary else None
        return _Prepared(features[real], alt, named, valid, outcomes, None)

    @staticmethod
    def _outcomes(env: ItemCatalogue, items: torch.Tensor) -> Outcomes:
        """The two outcomes of showing ``items``, from an env known to declare them."""
        assert isinstance(env, BinaryOutcomes)
        outcomes = env.binary_outcomes(items)
        assert outcomes is not None, "the env declared binary outcomes when the run started"
        return outcomes

    def _gate_due(self) -> bool:
        """Whether this step's transitions are held out for the gate of the coming fit."""
        return self.next_fit - self.steps <= self.cfg.gate_pairs and self.steps < self.next_fit

    def _probe(self, env: BatchedEnv, alt_actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The env's reward and next observation for a', from the real step's starting state."""
        self.probe_env.restore(env.snapshot())
        next_obs, rewards, terminated, truncated, info = self.probe_env.step(alt_actions.cpu().numpy())
        done = terminated | truncated
        final = np.where(done[:, None], info["final_obs"], next_obs) if done.any() else next_obs
        return torch.as_tensor(np.asarray(rewards, dtype=np.float32)), torch.as_tensor(
            np.asarray(final, dtype=np.float32)
        )

    # --- the real transitions: stored, held out, or turned into counterfactuals -------------
    def _outcome_of(self, real: Transitions) -> torch.Tensor:
        if self.binary:
            return (real.rewards.float() == self.reward_rule[0]).float()[:, None]
        return (real.next_obs - real.obs).float()

    def after_step(self, real: Transitions) -> list[Transitions]:
        prepared, self._pending = self._pending, None
        assert prepared is not None, "after_step without before_step"
        obs = real.obs.float().flatten(1)
        context = torch.cat((obs, prepared.real_features.flatten(1)), dim=1)
        outcome = self._outcome_of(real)
        if prepared.probe is not None:
            alt_context = torch.cat((obs, prepared.alt_features[0].flatten(1)), dim=1)
            reward, next_obs = prepared.probe
            accepted = prepared.alt_outcomes[0].accepted if prepared.alt_outcomes else next_obs
            self.gate.append(
                GatePairs(context, outcome, alt_context, obs, reward, next_obs, accepted.flatten(1))
            )
        else:
            self.store.add(context, outcome, real.rewards)
        self.steps += len(real)
        if not self.fits:
            self.stats.add(len(real), 0)
            return []
        extra = [
            self._counterfactuals(real, prepared, context, outcome, k) for k in range(self.cfg.per_transition)
        ]
        kept = [t for t in extra if len(t)]
        self.stats.add(len(real), sum(len(t) for t in kept))
        return kept

    def _counterfactuals(
        self, real: Transitions, prepared: _Prepared, context: torch.Tensor, outcome: torch.Tensor, k: int
    ) -> Transitions:
        obs = real.obs.float().flatten(1)
        alt_context = torch.cat((obs, prepared.alt_features[k].flatten(1)), dim=1)
        outcomes = prepared.alt_outcomes[k] if prepared.alt_outcomes else None
        cf = self.model.counterfactual(context, outcome, alt_context)
        reward, next_obs = self._resolve(cf, obs, alt_context, outcomes)
        v = prepared.valid[k]
        twins = real.derived(
            v,
            continues_real=False,
            actions=prepared.alt_actions[k][v].to(real.actions.dtype),
            rewards=reward[v].to(real.rewards.dtype),
            next_obs=next_obs[v].view_as(real.next_obs[v]),
        )
        self.stats.add(0, 0, gap=reward[v] - real.rewards[v].float())
        return twins

    def _resolve(
        self, cf: torch.Tensor, obs: torch.Tensor, alt_context: torch.Tensor, outcomes: Outcomes | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward and next observation of a generated outcome: on a binary-outcome env the
        env's rule and the mode the gate opens to, else the reward head and s + (s' - s)."""
        if outcomes is not None:
            accept = cf[:, 0] > 0
            reward = torch.where(accept, outcomes.accepted_reward, outcomes.rejected_reward)
            return reward, torch.where(accept[:, None], outcomes.accepted, outcomes.rejected)
        low, high = self.info.reward_range
        return self.model.counterfactual_reward(alt_context, cf).clamp(low, high), obs + cf

    def _predict(self, pairs: GatePairs, outcomes: Outcomes | None) -> Prediction:
        """The gate's view of the held-out pairs: the counterfactual with the abducted u and with
        u = 0, and the SCM-free reference (which classifies too on binary rewards: accepted where
        its regression says more likely than not)."""
        model = self.model
        cf = model.counterfactual(pairs.context, pairs.outcome, pairs.alt_context)
        no_u = model.counterfactual(pairs.context, pairs.outcome, pairs.alt_context, use_noise=False)
        reward, next_obs = self._resolve(cf, pairs.obs, pairs.alt_context, outcomes)
        next_no_u = self._resolve(no_u, pairs.obs, pairs.alt_context, outcomes)[1]
        with torch.no_grad():
            reference = model.reference_reward(model.context_norm(pairs.alt_context))
        if outcomes is not None:
            ref = torch.where(reference > 0.5, outcomes.accepted_reward, outcomes.rejected_reward)
            return Prediction(reward, cf[:, 0], next_obs, next_no_u, ref, reference)
        low, high = self.info.reward_range
        return Prediction(reward, reward, next_obs, next_no_u, reference.clamp(low, high), reference)

    # --- fitting and the gate ---------------------------------------------------------------
    def episodes_ended(
        self, agent: Any, returns: np.ndarray, lengths: np.ndarray, steps: int
    ) -> dict[str, float]:
        if not self.next_fit <= self.steps < self.total or self.store.size < self.cfg.batch_size:
            return {}
        losses = fit(self.model, self.optimisers, self.store, self.cfg, self.generator, first=not self.fits)
        self.fits += 1
        while self.next_fit <= self.steps:
            self.next_fit += self.refit_every
        metrics = {f"ctrl/{k}": v for k, v in losses.items()}
        metrics["ctrl/fits"] = float(self.fits)
        metrics["ctrl/fit_transitions"] = float(self.store.size)
        metrics.update(self._run_gate())
        save_checkpoint(self.checkpoint, {"model": self.model.state_dict()})
        return metrics

    def _run_gate(self) -> dict[str, float]:
        """Scores the held-out pairs. Their real transitions are not fitted to, by this fit or any
        later one, so that no gate scores the model on what it was fitted to."""
        if not self.gate:
            return {}
        pairs = GatePairs.cat(self.gate)
        self.gate = []
        outcomes = Outcomes(pairs.alt_accepted, pairs.obs, *self.reward_rule) if self.binary else None
        pred = self._predict(pairs, outcomes)
        low, high = self.info.reward_range
        metrics = gate_metrics(pairs, pred, self.cfg.gate_tolerance * (high - low), self.binary)
        passed = bool(metrics["ctrl/gate_pass"])
        self.gate_results.append(passed)
        if not passed:
            log.warning("ctrl: the causal model failed its gate at fit %d: %s", self.fits, _fmt(metrics))
        return metrics

    def metrics(self) -> dict[str, float]:
        return self.stats.metrics()

    def finish(self) -> dict[str, str]:
        """Tags the run with the last gate's verdict and how many gates failed."""
        if not self.fits:
            log.warning("mode=ctrl: the causal model was never fitted, so this run equals mode=baseline")
            return {"ctrl_gate": "never", "ctrl_fits": "0"}
        failed = sum(not passed for passed in self.gate_results)
        last = "pass" if self.gate_results and self.gate_results[-1] else "fail"
        return {
            "ctrl_gate": last,
            "ctrl_gate_failed": f"{failed}/{len(self.gate_results)}",
            "ctrl_fits": str(self.fits),
        }

    # --- checkpoints -------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimisers": self.optimisers.state_dict(),
            "store": self.store.state(),
            "generator": self.generator.get_state(),
            "counters": [self.steps, self.next_fit, self.fits],
            "gate_results": list(self.gate_results),
            "gate": [dataclasses.asdict(pairs) for pairs in self.gate],
            "stats": self.stats.state(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimisers.load_state_dict(state["optimisers"])
        self.store.load_state(state["store"])
        self.generator.set_state(state["generator"])
        self.steps, self.next_fit, self.fits = (int(v) for v in state["counters"])
        self.gate_results = [bool(v) for v in state["gate_results"]]
        self.gate = [GatePairs(**pairs) for pairs in state["gate"]]
        self.stats.load_state(state["stats"])
        self.model.train(False)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k.removeprefix('ctrl/')}={v:.4g}" for k, v in metrics.items())


@plugins.mode("ctrl", CtrlModeConfig, suffix="-CTRL", order=30)
def ctrl(context: AugmenterContext) -> CtrlAugmenter:
    """``mode=ctrl``: CTRL's augmentation, with its gate's probe env (no cost of the run)."""
    return CtrlAugmenter(context.cfg.ctrl, context.env, context.make_probe_env(), context)
