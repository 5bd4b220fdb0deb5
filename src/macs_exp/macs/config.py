"""The schemas of the ``macs`` and ``expert`` groups: the synthesis policy pi_c, how it is
trained (Algorithms 1 and 2), and expert mode's expert."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from macs_exp import plugins
from macs_exp.agents.base import OffPolicyConfig
from macs_exp.macs.kl import KL_DIRECTIONS
from macs_exp.schema import Rules, Schema

# What the fixed policy does at the intervened state s'_n in stage 2 (docs/macs.md, item 3).
REPLAYS = ("algorithm2", "eq9")


def learner_rule(algo: Any, base: type) -> tuple[bool, str]:
    """The rule that ``algo`` is an agent whose schema derives from ``base``, listing them."""
    names = sorted(name for name, p in plugins.AGENTS.items() if issubclass(p.schema, base))
    return isinstance(algo, base), f"one of {', '.join(names)}"


@dataclass
class MacsConfig(Schema):
    """The counterfactual synthesis policy and its training (Algorithms 1 and 2)."""

    # The synthesis policy's own agent: any option of the algo group (algo@macs.algo=sac).
    algo: Any = MISSING
    # User-steps of one stage-2 run (Algorithm 2's loop over n).
    stage2_steps: int = MISSING
    # Steps per reward window: the KL is computed every kl_window steps (Algorithm 2's n%10).
    kl_window: int = MISSING
    # Additive smoothing of the reward histograms, in counts added to every bin.
    kl_smoothing: float = MISSING
    # eq11: KL(R' || R) as in Eqs. 10-11; algorithm2: KL(R || R') as Algorithm 2 writes it.
    kl_direction: str = MISSING
    # algorithm2: replay a_n, the action chosen at s_n, from s'_n (the pseudo-code);
    # eq9: the policy chooses its own action at s'_n (Eq. 9's sum over P(A | S_c)).
    replay: str = MISSING
    # The epsilon of Eqs. 11-12, keeping 1 / (KL + epsilon) finite.
    epsilon: float = MISSING
    # Probability that a real transition gets a counterfactual twin (stage 3).
    augment_prob: float = MISSING
    # Joint mode: epsilon_1 and Delta_1 as fractions of the env's maximum score.
    threshold_frac: float = MISSING
    temperature_frac: float = MISSING
    # Joint mode: the score compared with epsilon_1 is averaged over this many episodes.
    threshold_window: int = MISSING

    def rules(self) -> Rules:
        return {
            # pi_c learns off-policy, from transitions whose rewards are fixed after the fact.
            "algo": learner_rule(self.algo, OffPolicyConfig),
            "stage2_steps": (self.stage2_steps >= 1, "at least 1"),
            "kl_window": (self.kl_window >= 1, "at least 1"),
            "kl_smoothing": (self.kl_smoothing > 0, "positive (an empty bin would make the KL infinite)"),
            "kl_direction": (self.kl_direction in KL_DIRECTIONS, f"one of {KL_DIRECTIONS}"),
            "replay": (self.replay in REPLAYS, f"one of {', '.join(REPLAYS)}"),
            "epsilon": (self.epsilon > 0, "positive"),
            "augment_prob": (0 <= self.augment_prob <= 1, "in [0, 1]"),
            "threshold_frac": (0 <= self.threshold_frac <= 1, "in [0, 1]"),
            "temperature_frac": (self.temperature_frac > 0, "positive"),
            "threshold_window": (self.threshold_window >= 1, "at least 1"),
        }


@dataclass
class ExpertConfig(Schema):
    """The pretrained expert policy of expert mode (Sec. III-C1)."""

    algo: Any = MISSING
    total_steps: int = MISSING
    # Fixed rather than tied to the run's seed, so the runs of a sweep share one expert.
    seed: int = MISSING
    # A saved agent to use instead of training or the cache (null: cache, then train).
    checkpoint: str | None = MISSING
    cache_dir: str = MISSING
    # The expert is its best evaluation (from step 0 on), so how often it is evaluated shapes it:
    # null evaluates it as often as the run (trainer.eval_every); a number keeps one expert for
    # runs that evaluate less often themselves.
    eval_every: int | None = MISSING

    def rules(self) -> Rules:
        return {
            "algo": learner_rule(self.algo, OffPolicyConfig),
            "total_steps": (self.total_steps >= 1, "at least 1"),
            "eval_every": (
                self.eval_every is None or self.eval_every >= 1,
                "null (trainer.eval_every) or at least 1",
            ),
        }
