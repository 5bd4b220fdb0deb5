"""Metric definitions shared by training, evaluation and the reports.

CTR follows VirtualTaobao's own definition: clicks / (pages x 10 items per page), pooled over
the episodes it summarises (total clicks over total items shown), so long sessions weigh in
proportion to the pages they show.
"""

from __future__ import annotations

import numpy as np


def ctr(clicks: float, pages: float, items_per_page: int) -> float:
    return float(clicks) / (float(pages) * items_per_page) if pages > 0 else 0.0


class EpisodeStats:
    """Accumulates finished episodes (their returns and lengths) for one summary."""

    def __init__(self, items_per_page: int | None) -> None:
        self.items_per_page = items_per_page
        self.returns: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []

    def add(self, returns: np.ndarray, lengths: np.ndarray) -> None:
        self.returns.append(np.asarray(returns, dtype=np.float64).copy())
        self.lengths.append(np.asarray(lengths, dtype=np.int64).copy())

    def summary(self, prefix: str) -> dict[str, float]:
        if not self.returns:
            return {}
        returns = np.concatenate(self.returns)
        lengths = np.concatenate(self.lengths)
        out = {
            f"{prefix}/episode_reward": float(returns.mean()),
            f"{prefix}/episode_length": float(lengths.mean()),
            f"{prefix}/episodes": float(returns.size),
        }
        if self.items_per_page:
            out[f"{prefix}/ctr"] = ctr(returns.sum(), lengths.sum(), self.items_per_page)
        return out
