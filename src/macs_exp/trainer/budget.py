"""What a run may spend: ``trainer.total_steps`` user-steps, or that many env steps of every
kind (``trainer.budget=env_steps``), so that methods of different simulator cost can be
compared at equal cost."""

from __future__ import annotations

import math
from dataclasses import dataclass

from macs_exp.envs.counting import StepCounter

BUDGETS = ("user_steps", "env_steps")


@dataclass
class Budget:
    kind: str
    total: int
    # Every env step the run has taken (the envs it trains with count into it).
    counter: StepCounter

    def env_steps_left(self) -> float:
        """Env steps the run may still take: unbounded under a user-step budget."""
        if self.kind == "user_steps":
            return math.inf
        return self.total - self.counter.steps

    def allows(self, user_steps: int, next_cost: int) -> bool:
        """Whether the loop may take another vector step, at ``user_steps`` so far, when that
        step costs at most ``next_cost`` env steps."""
        if self.kind == "user_steps":
            return user_steps < self.total
        return next_cost <= self.env_steps_left()
