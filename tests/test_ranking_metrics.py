"""Table I metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from macs_exp.data.dataset import RatingData
from macs_exp.metrics import NOT_SHOWN, ranking_metrics


def data_with_tests(test: list[list[tuple[int, float]]], n_items: int = 10) -> RatingData:
    counts = [len(rows) for rows in test]
    return RatingData(
        name="hand",
        n_users=len(test),
        n_items=n_items,
        item_features=np.zeros((n_items, 2), np.float32),
        train_indptr=np.zeros(len(test) + 1, np.int64),
        train_items=np.zeros(0, np.int64),
        train_ratings=np.zeros(0, np.float32),
        test_indptr=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
        test_items=np.array([i for rows in test for i, _ in rows], np.int64),
        test_ratings=np.array([r for rows in test for _, r in rows], np.float32),
        positive_threshold=4.0,
        rating_min=1.0,
        rating_max=5.0,
    )


@pytest.fixture
def three_users() -> RatingData:
    return data_with_tests(
        [
            [(1, 5), (2, 3), (3, 4), (4, 1)],  # positives 1, 3; negatives 2, 4
            [(5, 2), (6, 1)],  # no positive
            [(7, 4)],  # positive 7
        ]
    )


def test_three_users_by_hand(three_users: RatingData) -> None:
    recommended = np.array([[3, 2, 9], [5, 0, 8], [0, 8, 7]])
    m = ranking_metrics(recommended, np.array([0, 1, 2]), three_users)
    # Hits: user 0 at rank 1 (item 3), user 1 none, user 2 at rank 3 (item 7).
    assert m["test/precision"] == pytest.approx((1 / 3 + 0 + 1 / 3) / 3)
    # Recall over users 0 and 2: 1 / min(3, 2) and 1 / min(3, 1).
    assert m["test/recall"] == pytest.approx((1 / 2 + 1) / 2)
    # Accuracy over rated items, recommended = predicted positive:
    # user 0: TP {3}, TN {4} of 4 rated; user 1: TN {6} of 2; user 2: TP {7} of 1.
    assert m["test/accuracy"] == pytest.approx((2 / 4 + 1 / 2 + 1 / 1) / 3)
    # NDCG: user 0 DCG 1 over IDCG 1 + 1/log2(3); user 2 DCG 1/log2(4) over IDCG 1.
    assert m["test/ndcg"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 0.5) / 2)
    assert m["test/ndcg"] == pytest.approx(0.5565736, abs=1e-7)
    assert m["test/hit_rate"] == 1.0
    assert (m["test/users"], m["test/users_without_positives"]) == (3.0, 1.0)


def test_user_order_and_subsets_follow_the_users_argument(three_users: RatingData) -> None:
    # User 0 alone, both positives found at ranks 2 and 3, the first slot a negative.
    m = ranking_metrics(np.array([[2, 1, 3]]), np.array([0]), three_users)
    assert m["test/precision"] == pytest.approx(2 / 3)
    assert m["test/recall"] == 1.0
    assert m["test/accuracy"] == pytest.approx(3 / 4)  # TP 1, 3; TN 4; FP 2
    assert m["test/ndcg"] == pytest.approx((1 / math.log2(3) + 1 / 2) / (1 + 1 / math.log2(3)))
    reordered = ranking_metrics(np.array([[0, 8, 7], [3, 2, 9]]), np.array([2, 0]), three_users)
    assert reordered["test/recall"] == pytest.approx(0.75)
    assert reordered["test/hit_rate"] == 1.0


def test_no_user_with_positives_gives_nan_where_undefined(three_users: RatingData) -> None:
    m = ranking_metrics(np.array([[5, 6]]), np.array([1]), three_users)
    assert (m["test/precision"], m["test/accuracy"]) == (0.0, 0.0)
    assert all(math.isnan(m[k]) for k in ("test/recall", "test/ndcg", "test/hit_rate"))
    assert m["test/users_without_positives"] == 1.0


def test_rejects_malformed_input(three_users: RatingData) -> None:
    with pytest.raises(ValueError, match="twice"):
        ranking_metrics(np.array([[3, 3, 9]]), np.array([0]), three_users)
    with pytest.raises(ValueError, match="without test ratings"):
        ranking_metrics(np.array([[3]]), np.array([1]), data_with_tests([[(1, 5)], []]))
    with pytest.raises(ValueError, match="recommended must be"):
        ranking_metrics(np.array([3, 2]), np.array([0, 2]), three_users)


def test_shorter_lists_are_padded_and_still_divided_by_t(three_users: RatingData) -> None:
    # User 1's episode showed 2 items, user 2's one (rated candidates ran out): -1 pads the rest.
    recommended = np.array([[3, 1, 2], [5, 6, NOT_SHOWN], [7, NOT_SHOWN, NOT_SHOWN]])
    m = ranking_metrics(recommended, np.array([0, 1, 2]), three_users)
    assert m["test/precision"] == pytest.approx((2 / 3 + 0 + 1 / 3) / 3)
    assert m["test/recall"] == pytest.approx((2 / 2 + 1 / 1) / 2)
    assert m["test/accuracy"] == pytest.approx((3 / 4 + 0 / 2 + 1 / 1) / 3)
    # A padding entry is never a hit, even where its key (user 1, item -1) is that of (user 0, item 9).
    ninth = data_with_tests([[(9, 5)], [(0, 5)]])
    assert ranking_metrics(np.array([[NOT_SHOWN]]), np.array([1]), ninth)["test/precision"] == 0.0
    with pytest.raises(ValueError, match=r"must lie in \[0, 10\)"):
        ranking_metrics(np.array([[10]]), np.array([0]), three_users)
