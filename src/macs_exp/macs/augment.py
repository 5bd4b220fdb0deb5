"""What the MACS modes and the random mask share as augmenters: stage 3's counterfactual twins
and the ``cf/*`` bookkeeping (see ``macs_exp.trainer.augmenter`` for the protocol)."""

from __future__ import annotations

import time
from typing import Any

import torch

from macs_exp.agents import AgentConfig, Policy, Transitions
from macs_exp.envs.base import BatchedEnv, env_info
from macs_exp.macs.config import MacsConfig
from macs_exp.macs.synthesis import Counterfactuals, Synthesizer
from macs_exp.trainer.augmenter import AugmenterContext, NoAugmentation

# pi_c's agent and stage-2 env draw from streams offset from the run's seed, so they never
# replay the recommender's random numbers.
SYNTHESIS_SEED_OFFSET = 10_007


# pi_c's checkpoint in the run's folder, rewritten after every stage 2.
PI_C_FILE = "pi_c.pt"


class _WindowMean:
    """A mean over the current logging window, restarted when read."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, values: torch.Tensor) -> None:
        self.total += float(values.sum())
        self.count += int(values.numel())

    def take(self) -> float | None:
        mean = self.total / self.count if self.count else None
        self.total, self.count = 0.0, 0
        return mean

    def state(self) -> list[float]:
        return [self.total, float(self.count)]

    def load_state(self, state: list[float]) -> None:
        self.total, self.count = float(state[0]), int(state[1])


class CounterfactualStats:
    """Counts what is stored, for ``cf/transitions`` and ``cf/buffer_share``, and the window's
    mean reward gap r_c - r_t (``cf/reward_gap``) and state change ||s_c - s_t||
    (``cf/state_change``)."""

    def __init__(self) -> None:
        self.real = 0
        self.extra = 0
        self._gap = _WindowMean()
        self._change = _WindowMean()

    def add(
        self,
        real: int,
        extra: int,
        gap: torch.Tensor | None = None,
        states: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """``states`` is (s_c, s_t) of the extra transitions, row for row."""
        self.real += real
        self.extra += extra
        if gap is not None:
            self._gap.add(gap)
        if states is not None:
            self._change.add((states[0] - states[1]).norm(dim=1))

    def state(self) -> dict[str, Any]:
        return {
            "real": self.real,
            "extra": self.extra,
            "gap": self._gap.state(),
            "change": self._change.state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.real, self.extra = int(state["real"]), int(state["extra"])
        self._gap.load_state(state["gap"])
        self._change.load_state(state["change"])

    def metrics(self) -> dict[str, float]:
        metrics = {
            "cf/transitions": float(self.extra),
            # The synthesised share of everything stored; equal to the share of the buffer's
            # content until it wraps around, and in expectation afterwards.
            "cf/buffer_share": self.extra / max(self.extra + self.real, 1),
        }
        for name, mean in (("cf/reward_gap", self._gap.take()), ("cf/state_change", self._change.take())):
            if mean is not None:
                metrics[name] = mean
        return metrics


class MacsAugmenter(NoAugmentation):
    """Stage 3 of Algorithm 1: once pi_c is trained, every real transition gets a twin
    (s_c, a_t, s_{t+1}, r_c), asked from the env before the real step. The modes differ in when
    pi_c is trained (stage 2): ``start`` (expert) or ``episodes_ended`` (joint)."""

    def __init__(self, synthesizer: Synthesizer) -> None:
        self.synthesizer = synthesizer
        self.stats = CounterfactualStats()
        self._pending: Counterfactuals | None = None

    def before_step(self, env: BatchedEnv, obs: torch.Tensor, actions: torch.Tensor) -> None:
        # Asked before the real step, from a snapshot the query restores.
        self._pending = (
            self.synthesizer.counterfactuals(env, obs, actions) if self.synthesizer.trained else None
        )

    def after_step(self, real: Transitions) -> list[Transitions]:
        cf, self._pending = self._pending, None
        if cf is None or not cf.valid.any():
            self.stats.add(len(real), 0)
            return []
        v = cf.valid
        # (s_c, a_t, s_{t+1}, r_c): the counterfactual state with the real action, next state and
        # episode end, and the reward the real action earns from s_c.
        twins = real.derived(v, continues_real=True, obs=cf.states[v], rewards=cf.rewards[v])
        self.stats.add(len(real), len(twins), cf.rewards[v] - real.rewards[v], (twins.obs, real.obs[v]))
        return [twins]

    def metrics(self) -> dict[str, float]:
        return self.stats.metrics()

    def training_state(self) -> dict[str, Any]:
        return {"synthesizer": self.synthesizer.training_state(), "stats": self.stats.state()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.synthesizer.load_training_state(state["synthesizer"])
        self.stats.load_state(state["stats"])

    def queries_per_step(self) -> int:
        # The intervention and the real action from s_c, once pi_c exists.
        return 2 if self.synthesizer.trained else 0

    def _stage2(self, policy: Policy, joint: bool) -> dict[str, float]:
        """Algorithm 2 against ``policy``: its metrics and its wall time (``perf/stage2_s``)."""
        t0 = time.perf_counter()
        metrics = self.synthesizer.train(policy, joint=joint).metrics
        metrics["perf/stage2_s"] = time.perf_counter() - t0
        return metrics


def build_synthesizer(context: AugmenterContext, macs: MacsConfig) -> Synthesizer:
    """pi_c with its own stage-2 env, seeded apart from the recommender, saved in the run's
    folder after each stage 2."""
    info = env_info(context.env, context.cfg.env.id)
    seed = context.seed + SYNTHESIS_SEED_OFFSET
    stage2_env = context.make_env()
    algo: AgentConfig = macs.algo
    agent = context.make_agent(algo, seed)
    return Synthesizer(agent, stage2_env, info, macs, seed, checkpoint=context.output_dir / PI_C_FILE)
