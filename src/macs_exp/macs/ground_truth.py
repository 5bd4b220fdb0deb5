"""The ground-truth study: does stage 2 teach pi_c to change only the trivial components?

On an env that declares which state components are trivial (``trivial_mask``) and knows its
reward-maximising action (``oracle_actions``: Synthetic-v0, Session-v0), pi_c is trained with
Algorithm 2 against that oracle, and ``trivial_change_fraction`` is measured on a fixed probe
of users before and after. ``scripts/ground_truth.py`` runs it over seeds and configurations;
docs/macs.md ("Where MACS can learn") reports the numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from macs_exp.agents import Policy, make_agent
from macs_exp.envs.base import BatchedEnv, env_info
from macs_exp.envs.config import EnvConfig
from macs_exp.envs.factory import make_batched_env
from macs_exp.macs.config import MacsConfig
from macs_exp.macs.synthesis import Synthesizer

# The probe: its own users, the same for every seed and configuration.
PROBE_USERS = 256
PROBE_SEED = 5


@dataclass(frozen=True)
class GroundTruth:
    """One seed's outcome: the trivial-change fraction on the probe before and after stage 2,
    the spread of pi_c's reward in it, and the share of its saturated action components."""

    seed: int
    before: float
    after: float
    reward_std: float
    saturation: float

    @property
    def gain(self) -> float:
        return self.after - self.before


def oracle_policy(env: BatchedEnv) -> Policy:
    """The env's reward-maximising action as a fixed policy (the expert of the study)."""
    oracle = getattr(env, "oracle_actions", None)
    if oracle is None:
        raise ValueError(f"{type(env).__name__} has no oracle_actions: the ground-truth study needs one")

    def policy(
        obs: torch.Tensor, *, allowed: torch.Tensor | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        # The ground-truth simulators have no item catalogue and no users: both are always None.
        return torch.from_numpy(oracle(obs.cpu().numpy()))

    return policy


def measure(env_cfg: EnvConfig, macs: MacsConfig, seed: int) -> GroundTruth:
    """Trains one pi_c (agent and stage-2 env seeded with ``seed``) for ``macs.stage2_steps``
    user-steps against the oracle, with Eq. 11 as in expert mode."""
    env = make_batched_env(env_cfg, env_cfg.num_envs, "cpu")
    probe = make_batched_env(env_cfg, PROBE_USERS, "cpu")
    try:
        info = env_info(env, env_cfg.id)
        if info.trivial_mask is None:
            raise ValueError(f"env {env_cfg.id!r} declares no trivial_mask")
        agent = make_agent(macs.algo, env.single_observation_space, env.single_action_space, "cpu", seed)
        synthesizer = Synthesizer(agent, env, info, macs, seed=seed)
        probe_obs, _ = probe.reset(seed=PROBE_SEED)
        before = synthesizer.trivial_change_fraction(probe, probe_obs)
        report = synthesizer.train(oracle_policy(env), joint=False)
        after = synthesizer.trivial_change_fraction(probe, probe_obs)
        saturation = synthesizer.action_saturation(torch.from_numpy(np.asarray(probe_obs, dtype=np.float32)))
    finally:
        env.close()
        probe.close()
    return GroundTruth(seed, before, after, report.metrics["macs/reward_std"], float(saturation or 0.0))


@dataclass(frozen=True)
class Summary:
    """Mean and (population) standard deviation of each column over the seeds."""

    results: Sequence[GroundTruth]

    def column(self, name: str) -> tuple[float, float]:
        values = [float(getattr(r, name)) for r in self.results]
        return statistics.fmean(values), statistics.pstdev(values)

    def raised_on_every_seed(self) -> bool:
        return all(r.gain > 0 for r in self.results)
