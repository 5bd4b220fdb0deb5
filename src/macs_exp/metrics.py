"""Metric definitions shared by training, evaluation and the reports.

CTR follows VirtualTaobao's own definition: clicks / (pages x 10 items per page), pooled over
the episodes it summarises (total clicks over total items shown), so long sessions weigh in
proportion to the pages they show.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from macs_exp.data.lookup import RatedPairs

if TYPE_CHECKING:
    from macs_exp.data.dataset import RatingData

# The metric that ranks the runs of an env (best checkpoint, sweep summaries, curves, Optuna),
# the first of these a run logs: precision on the offline datasets (Table I), CTR where the env
# shows pages of items (VirtualTaobao), the episode reward anywhere else.
KEY_METRICS = ("test/precision", "eval/ctr", "eval/episode_reward")
# Pads a recommendation list past the end of a shorter episode (env.candidates=rated); ranks
# holding it recommend nothing.
NOT_SHOWN = -1


def key_metric(logged: Iterable[str]) -> str:
    """The key metric among the metric names ``logged`` (an evaluation's, a run's)."""
    present = set(logged)
    return next((k for k in KEY_METRICS if k in present), KEY_METRICS[-1])


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

    def state(self) -> dict[str, np.ndarray]:
        """The episodes so far, for a checkpoint (``summary`` pools them anyway)."""
        return {
            "returns": np.concatenate(self.returns) if self.returns else np.zeros(0),
            "lengths": np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.returns, self.lengths = [], []
        if len(state["returns"]):
            self.add(state["returns"], state["lengths"])

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


def ranking_metrics(recommended: np.ndarray, users: np.ndarray, data: RatingData) -> dict[str, float]:
    """Table I's offline metrics of one recommendation list per evaluation user, against the
    users' test ratings (definitions in docs/metrics.md).

    ``recommended`` is (U, T): the items shown to ``users[u]`` in order, distinct within a row
    (the rating env never repeats an item in an episode), ``NOT_SHOWN`` after the end of an
    episode shorter than T; Precision still divides by T. Every user must have a test rating,
    or Accuracy would be undefined. Recall, NDCG and HitRate average over the users with at
    least one positive test item (NaN if there is none); Precision and Accuracy over all users.
    """
    recommended = np.asarray(recommended, dtype=np.int64)
    users = np.asarray(users, dtype=np.int64)
    if recommended.ndim != 2 or recommended.shape[0] != users.shape[0] or recommended.shape[1] == 0:
        raise ValueError(
            f"recommended must be (users, T >= 1), got {recommended.shape} for {users.shape[0]} users"
        )
    shown = recommended != NOT_SHOWN
    if (recommended[shown] < 0).any() or (recommended >= data.n_items).any():
        raise ValueError(
            f"recommended items must lie in [0, {data.n_items}) or be {NOT_SHOWN} (nothing shown)"
        )
    in_order = np.sort(recommended, axis=1)
    if ((in_order[:, 1:] == in_order[:, :-1]) & (in_order[:, 1:] != NOT_SHOWN)).any():
        raise ValueError("an item is recommended twice to one user")
    n_shown = recommended.shape[1]
    start, end = data.test_indptr[users], data.test_indptr[users + 1]
    n_rated = end - start
    if (n_rated == 0).any():
        raise ValueError(
            f"users without test ratings cannot be evaluated: {users[n_rated == 0][:5].tolist()}"
        )
    test_positive = np.asarray(data.test_ratings) >= data.positive_threshold
    positives_before = np.concatenate(([0], np.cumsum(test_positive)))
    n_positive = positives_before[end] - positives_before[start]

    # Which recommendations the user rated in the test split, and which of those positively.
    pairs = RatedPairs.of(data, "test")
    index, rated = pairs.find(users[:, None], recommended)
    rated &= shown
    hit = rated & (pairs.ratings >= data.positive_threshold)[index]

    hits = hit.sum(1)
    # Predicted positive = recommended; among rated items, TN = negatives not recommended.
    true_negatives = (n_rated - n_positive) - (rated.sum(1) - hits)
    discount = 1.0 / np.log2(np.arange(n_shown) + 2.0)
    with_positives = n_positive > 0
    ideal = np.cumsum(discount)[np.minimum(n_shown, n_positive[with_positives]) - 1]
    evaluated = int(with_positives.sum())

    def mean_over_positives(values: np.ndarray) -> float:
        return float(values.mean()) if evaluated else float("nan")

    return {
        "test/precision": float((hits / n_shown).mean()),
        "test/recall": mean_over_positives(
            hits[with_positives] / np.minimum(n_shown, n_positive[with_positives])
        ),
        "test/accuracy": float(((hits + true_negatives) / n_rated).mean()),
        "test/ndcg": mean_over_positives((hit[with_positives] @ discount) / ideal),
        "test/hit_rate": mean_over_positives((hits[with_positives] >= 1).astype(np.float64)),
        "test/users": float(len(users)),
        "test/users_without_positives": float(len(users) - evaluated),
    }
