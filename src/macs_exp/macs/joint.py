"""``mode=joint``: MACS trained jointly with the recommender (Algorithm 1).

Whenever the recommender's score over its last ``macs.threshold_window`` episodes reaches
epsilon_1, pi_c is (re)trained against a frozen copy of it with Eq. 12 and epsilon_1 rises by
Delta_1; from its first training on, every real transition gets a counterfactual twin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from macs_exp import plugins
from macs_exp.agents import Agent
from macs_exp.macs.augment import MacsAugmenter, build_synthesizer
from macs_exp.macs.schedule import ThresholdSchedule
from macs_exp.macs.synthesis import Synthesizer
from macs_exp.trainer.augmenter import AugmenterContext, ModeConfig


@dataclass
class JointConfig(ModeConfig):
    """Joint mode's settings are in the ``macs`` group (its thresholds), shared with expert mode."""


class JointAugmenter(MacsAugmenter):
    def __init__(self, synthesizer: Synthesizer, schedule: ThresholdSchedule) -> None:
        super().__init__(synthesizer)
        self.schedule = schedule

    def episodes_ended(
        self, agent: Agent, returns: np.ndarray, lengths: np.ndarray, steps: int
    ) -> dict[str, float]:
        self.schedule.observe(self.synthesizer.info.episode_scores(returns, lengths))
        if not self.schedule.reached():
            return {}
        metrics = self._stage2(agent.frozen_policy(), joint=True)
        self.schedule.advance()
        return {**metrics, **self._schedule_metrics()}

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), **self._schedule_metrics()}

    def _schedule_metrics(self) -> dict[str, float]:
        return {"macs/threshold": self.schedule.threshold, "macs/stage2_runs": float(self.schedule.runs)}


@plugins.mode("joint", JointConfig, suffix="-J", order=20)
def joint(context: AugmenterContext) -> JointAugmenter:
    macs = context.cfg.macs
    synthesizer = build_synthesizer(context, macs)
    schedule = ThresholdSchedule(
        synthesizer.info.score_range, macs.threshold_frac, macs.temperature_frac, macs.threshold_window
    )
    return JointAugmenter(synthesizer, schedule)
