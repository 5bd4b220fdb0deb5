"""The sorted (user, item) lookup that the rating env's rewards and the ranking metrics share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from macs_exp.data.dataset import RatingData
from macs_exp.data.lookup import RatedPairs
from test_rating_env import make_data

FEATURES = np.eye(3, dtype=np.float32)


@pytest.fixture(scope="module")
def two_users() -> RatingData:
    return make_data(
        train=[[(2, 5), (0, 3)], [(1, 4)]],
        test=[[(1, 2)], [(0, 5), (2, 1)]],
        features=FEATURES,
    )


def test_keys_are_sorted_with_their_ratings(two_users: RatingData) -> None:
    train = RatedPairs.of(two_users, "train")
    assert (train.n_items, train.keys.tolist(), train.ratings.tolist()) == (3, [0, 2, 4], [3.0, 5.0, 4.0])
    test = RatedPairs.of(two_users, "test")
    assert (test.keys.tolist(), test.ratings.tolist()) == ([1, 3, 5], [2.0, 5.0, 1.0])


def test_find_in_numpy_and_torch(two_users: RatingData) -> None:
    pairs = RatedPairs.of(two_users, "train")
    # Every (user, item) pair; (1, 2) has a key beyond the last, so its position is clamped.
    users, items = np.repeat([0, 1], 3), np.tile([0, 1, 2], 2)
    index, rated = pairs.find(users, items)
    assert rated.tolist() == [True, False, True, False, True, False]
    assert pairs.ratings[index[rated]].tolist() == [3.0, 5.0, 4.0]
    t_index, t_rated = pairs.to(torch.device("cpu")).find(torch.from_numpy(users), torch.from_numpy(items))
    assert t_rated.tolist() == rated.tolist()
    np.testing.assert_array_equal(t_index.numpy()[rated], index[rated])
    # Broadcasting: a column of users against their rows of items, as the metrics query.
    index, rated = RatedPairs.of(two_users, "test").find(np.array([[0], [1]]), np.array([[1, 2], [2, 0]]))
    assert rated.tolist() == [[True, False], [True, True]]
    assert index[rated].tolist() == [0, 2, 1]


def test_a_pair_rated_twice_is_refused() -> None:
    data = make_data(train=[[(1, 4), (1, 5)]], test=[[(0, 3)]], features=FEATURES)
    with pytest.raises(ValueError, match="rates the same item twice in the train split"):
        RatedPairs.of(data, "train")
    assert RatedPairs.of(data, "test").keys.tolist() == [0]


def test_an_unknown_split_is_refused(two_users: RatingData) -> None:
    with pytest.raises(ValueError, match=r"split='valid' must be one of \('train', 'test'\)"):
        RatedPairs.of(two_users, "valid")
