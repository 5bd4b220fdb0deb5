"""Which (user, item) pairs a split rates, and with what rating, for batched queries.

The env's rewards and the offline metrics both ask "did user u rate item i, and how" for whole
batches of pairs, on the CPU with numpy or on the env's device with torch; both answer from the
one key layout built here. Pairs are keyed ``user * n_items + item`` and the keys sorted, so a
batch of queries is one binary search. A dense (n_users, n_items) table would be slightly
faster (about 10 µs of a rating-env step at N=256, under 2% of it) but does not fit
BookCrossing-sized data; one sorted array fits every size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from macs_exp.data.dataset import RatingData


@dataclass(frozen=True)
class RatedPairs:
    """The rated (user, item) pairs of one split as sorted keys, with their ratings alongside."""

    n_items: int
    # (R,) int64, strictly increasing: user * n_items + item of every rating in the split.
    keys: np.ndarray
    # (R,) the split's ratings (their stored dtype) in key order: ratings[j] belongs to keys[j].
    ratings: np.ndarray

    @classmethod
    def of(cls, data: RatingData, split: str) -> RatedPairs:
        """The pairs of ``split``; a user rating an item twice in it is an error, since the
        lookup could then answer with either rating."""
        indptr, items, ratings = data.split_arrays(split)
        users = np.repeat(np.arange(data.n_users, dtype=np.int64), np.diff(indptr))
        keys = users * data.n_items + np.asarray(items, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        if (np.diff(keys) == 0).any():
            raise ValueError(f"{data.name}: a user rates the same item twice in the {split} split")
        return cls(n_items=data.n_items, keys=keys, ratings=np.asarray(ratings)[order])

    def find(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(index, rated)`` for the pairs ``(users, items)`` (broadcast together, int64).

        Where ``rated``, ``ratings[index]`` (or any array in key order) holds the pair's value;
        elsewhere ``index`` is a valid position with no meaning, so gathers need no masking
        before the ``rated`` mask is applied.
        """
        query = users * self.n_items + items
        index = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        return index, self.keys[index] == query

    def to(self, device: torch.device) -> TorchRatedPairs:
        """The same keys as a tensor on ``device``, for queries that stay on the device."""
        return TorchRatedPairs(self.n_items, torch.as_tensor(self.keys, device=device))


@dataclass(frozen=True)
class TorchRatedPairs:
    """:class:`RatedPairs` with torch keys; ``find`` answers as ``RatedPairs.find`` does."""

    n_items: int
    keys: torch.Tensor

    def find(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query = users * self.n_items + items
        index = torch.searchsorted(self.keys, query).clamp_(max=len(self.keys) - 1)
        return index, self.keys[index] == query
