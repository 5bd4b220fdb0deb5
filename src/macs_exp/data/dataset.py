"""The preprocessed rating dataset that the rating environment serves.

Per-user interactions are stored CSR-style: user ``u``'s training ratings are
``train_items[train_indptr[u]:train_indptr[u + 1]]`` (with ``train_ratings`` alongside), in
chronological order (or the seeded random order where the source has no timestamps); the test
split is laid out the same way. Users and items are re-indexed densely from 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from macs_exp.data.reward_model import RatingModel

SPLITS = ("train", "test")


@dataclass(frozen=True)
class RatingData:
    name: str
    n_users: int
    n_items: int
    # (n_items, embedding_dim + 1) float32: the matrix-factorisation item factors, then one
    # last coordinate holding the item's training popularity scaled to [0, 1], so that a policy
    # can rank items by popularity with a single action direction (the "popular" reference).
    item_features: np.ndarray
    train_indptr: np.ndarray
    train_items: np.ndarray
    train_ratings: np.ndarray
    test_indptr: np.ndarray
    test_items: np.ndarray
    test_ratings: np.ndarray
    # Ratings at or above this are positives.
    positive_threshold: float
    rating_min: float
    rating_max: float
    # Counts worth logging as MLflow params (rows read, skipped bad rows, filtered users, ...).
    stats: dict[str, float] = field(default_factory=dict)
    # (n_users, embedding_dim + 1) float32: the user factors of the same factorisation as the item
    # factors (training ratings only), then the user's training activity scaled to [0, 1]. Read by
    # the DRR state only; None in hand-made datasets that do not need it.
    user_features: np.ndarray | None = None
    # The rating model of ``env.train_reward=model`` (``data.reward_model``), fitted on the training
    # ratings; attached by ``load_rating_data`` only when that setting asks for it.
    reward_model: RatingModel | None = None
    # (n_users,) and (n_items,): each dense index's id as the ratings file spells it (int64, or
    # str where ids are labels, as ISBNs), so that side files keyed by those ids (the knowledge
    # graph's u.item, book_author.dat, ...) can be joined. None in hand-made datasets.
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    def split_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``(indptr, items, ratings)`` CSR arrays of ``split``, one of :data:`SPLITS`."""
        if split == "train":
            return self.train_indptr, self.train_items, self.train_ratings
        if split == "test":
            return self.test_indptr, self.test_items, self.test_ratings
        raise ValueError(f"split={split!r} must be one of {SPLITS}")
