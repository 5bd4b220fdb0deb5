"""What a training run returns."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


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
    # Every env step the run took (perf/env_steps at the end).
    env_steps: int = 0

    def state(self) -> dict[str, Any]:
        """The evaluations and histories so far, for a checkpoint."""
        return {
            "key_metric": self.key_metric,
            "final_eval": dict(self.final_eval),
            "best_eval": dict(self.best_eval),
            "history": {k: [list(point) for point in v] for k, v in self.history.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.key_metric = str(state["key_metric"])
        self.final_eval = dict(state["final_eval"])
        self.best_eval = dict(state["best_eval"])
        for key, points in state["history"].items():
            self.history[key] = [(int(step), float(value)) for step, value in points]
