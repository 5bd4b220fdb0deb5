"""``mode=joint``: MACS trained jointly with the recommender (Algorithm 1).

Whenever the recommender's score over its last ``macs.threshold_window`` episodes reaches
epsilon_1, pi_c is (re)trained against a frozen copy of it with Eq. 12 and epsilon_1 rises by
Delta_1; from its first training on, every real transition gets a counterfactual twin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from macs_exp import plugins
from macs_exp.agents import Agent
from macs_exp.macs.augment import MacsAugmenter, build_synthesizer
from macs_exp.macs.schedule import ThresholdSchedule
from macs_exp.macs.synthesis import Synthesizer
from macs_exp.trainer.augmenter import AugmenterContext, ModeConfig
from macs_exp.trainer.budget import Budget

log = logging.getLogger("macs_exp")


@dataclass
class JointConfig(ModeConfig):
    """Joint mode's settings are in the ``macs`` group (its thresholds), shared with expert mode."""


class JointAugmenter(MacsAugmenter):
    def __init__(self, synthesizer: Synthesizer, schedule: ThresholdSchedule, budget: Budget) -> None:
        super().__init__(synthesizer)
        self.schedule = schedule
        self.budget = budget
        self._out_of_budget = False

    def episodes_ended(
        self, agent: Agent, returns: np.ndarray, lengths: np.ndarray, steps: int
    ) -> dict[str, float]:
        self.schedule.observe(self.synthesizer.info.episode_scores(returns, lengths))
        if not self.schedule.reached() or not self._affordable(steps):
            return {}
        metrics = self._stage2(agent.frozen_policy(), joint=True)
        self.schedule.advance()
        return {**metrics, **self._schedule_metrics()}

    def _affordable(self, steps: int) -> bool:
        """Under an env-step budget, a stage 2 runs only if all of it fits in what is left."""
        cost = self.synthesizer.stage2_cost()
        if cost <= self.budget.env_steps_left():
            return True
        if not self._out_of_budget:
            log.info(
                "joint: stage 2 due at user-step %d skipped: it costs %d env steps, %d left",
                steps,
                cost,
                self.budget.env_steps_left(),
            )
            self._out_of_budget = True
        return False

    def finish(self) -> dict[str, str]:
        """Tags the run with its stage-2 count, and warns when there was none: pi_c never existed,
        so nothing was augmented and the run is plain training."""
        if self.schedule.runs:
            return {"macs_stage2": str(self.schedule.runs)}
        log.warning(
            "mode=joint: stage 2 never ran (epsilon_1 = %.4g was never reached; best score over %d "
            "episodes: %.4g), so this run equals mode=baseline. Lower macs.threshold_frac (or set "
            "env.metadata.threshold_frac in the env's YAML) to let MACS act.",
            self.schedule.threshold,
            self.schedule.scores.maxlen,
            self.schedule.best_score,
        )
        return {"macs_stage2": "never"}

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), **self._schedule_metrics()}

    def training_state(self) -> dict[str, Any]:
        return {
            **super().training_state(),
            "schedule": self.schedule.state(),
            "out_of_budget": self._out_of_budget,
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        super().load_training_state(state)
        self.schedule.load_state(state["schedule"])
        self._out_of_budget = bool(state["out_of_budget"])

    def _schedule_metrics(self) -> dict[str, float]:
        return {"macs/threshold": self.schedule.threshold, "macs/stage2_runs": float(self.schedule.runs)}


@plugins.mode("joint", JointConfig, suffix="-J", order=20)
def joint(context: AugmenterContext) -> JointAugmenter:
    macs = context.cfg.macs
    synthesizer = build_synthesizer(context, macs)
    schedule = ThresholdSchedule(
        synthesizer.info.score_range, macs.threshold_frac, macs.temperature_frac, macs.threshold_window
    )
    return JointAugmenter(synthesizer, schedule, context.budget)
