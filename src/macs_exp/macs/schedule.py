"""The joint-training threshold of Algorithm 2: epsilon_1, raised by Delta_1 after each stage 2."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


class ThresholdSchedule:
    """Tracks the recommender's score over its last ``window`` episodes and says when it has
    reached the current threshold.

    The threshold starts at ``score_low + threshold_frac * span`` and each ``advance`` raises it
    by ``temperature_frac * span``, span being the env's score range (10 for clicks per page,
    so the defaults give the paper's 4 then 5, 6, ... out of 10). The score is compared only
    once the window is full, so a few lucky first episodes cannot trigger stage 2.
    """

    def __init__(
        self,
        score_range: tuple[float, float],
        threshold_frac: float,
        temperature_frac: float,
        window: int,
    ) -> None:
        low, high = score_range
        self.threshold = low + threshold_frac * (high - low)
        self.delta = temperature_frac * (high - low)
        self.scores: deque[float] = deque(maxlen=window)
        self.runs = 0
        # The highest windowed score seen, to say how far a run stayed from the threshold.
        self.best_score = float("-inf")

    def observe(self, scores: np.ndarray) -> None:
        self.scores.extend(float(s) for s in np.asarray(scores).ravel())
        if len(self.scores) == self.scores.maxlen:
            self.best_score = max(self.best_score, self.mean_score)

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.scores)) if self.scores else float("nan")

    def reached(self) -> bool:
        return len(self.scores) == self.scores.maxlen and self.mean_score >= self.threshold

    def state(self) -> dict[str, float | int | list[float]]:
        return {
            "threshold": self.threshold,
            "scores": list(self.scores),
            "runs": self.runs,
            "best_score": self.best_score,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.threshold = float(state["threshold"])
        self.scores.clear()
        self.scores.extend(float(s) for s in state["scores"])
        self.runs = int(state["runs"])
        self.best_score = float(state["best_score"])

    def advance(self) -> None:
        self.runs += 1
        self.threshold += self.delta
