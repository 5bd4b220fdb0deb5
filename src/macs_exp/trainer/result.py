"""What a training run returns."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


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
