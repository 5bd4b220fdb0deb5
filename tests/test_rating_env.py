"""MACS/Rating-v0: the episode protocol on hand-checked data, batching against a per-user
reference, autoreset, determinism and snapshot/restore."""

from __future__ import annotations

import dataclasses
import logging

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium.vector import AutoresetMode

from macs_exp.data.dataset import RatingData
from macs_exp.data.preprocess import build_rating_data
from macs_exp.envs import RATING_ID, rating
from macs_exp.envs.base import BatchedEnv, env_info
from macs_exp.envs.rating import RatingVecEnv

# Items 0..7 by popularity (the last feature): 4, 6, 5, 0, 1, 2, 3, 7.
POPULARITY = np.array([0.5, 0.4, 0.3, 0.2, 1.0, 0.7, 0.9, 0.1], dtype=np.float32)
POPULAR = np.array([0.0, 0.0, 1.0], dtype=np.float32)


def make_data(
    train: list[list[tuple[int, float]]],
    test: list[list[tuple[int, float]]],
    features: np.ndarray,
    threshold: float = 4.0,
) -> RatingData:
    def csr(rows: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        indptr = np.concatenate(([0], np.cumsum([len(r) for r in rows]))).astype(np.int64)
        items = np.array([i for r in rows for i, _ in r], dtype=np.int64)
        ratings = np.array([v for r in rows for _, v in r], dtype=np.float32)
        return indptr, items, ratings

    train_indptr, train_items, train_ratings = csr(train)
    test_indptr, test_items, test_ratings = csr(test)
    return RatingData(
        name="toy",
        n_users=len(train),
        n_items=len(features),
        item_features=features.astype(np.float32),
        train_indptr=train_indptr,
        train_items=train_items,
        train_ratings=train_ratings,
        test_indptr=test_indptr,
        test_items=test_items,
        test_ratings=test_ratings,
        positive_threshold=threshold,
        rating_min=1.0,
        rating_max=5.0,
    )


@pytest.fixture(scope="module")
def toy() -> RatingData:
    features = np.column_stack((np.arange(8) / 8, -np.arange(8) / 8, POPULARITY))
    return make_data(
        train=[[(0, 5), (1, 2), (2, 4), (3, 5)], [(5, 4)], [(7, 1), (6, 4)]],
        test=[[(4, 5), (5, 2)], [(6, 3), (0, 4)], []],
        features=features,
    )


def random_data(seed: int, n_users: int = 30, n_items: int = 40, dim: int = 5) -> RatingData:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for _ in range(n_users):
        items = rng.permutation(n_items)[: rng.integers(6, 26)]
        rated = [(int(i), float(rng.integers(1, 6))) for i in items]
        n_test = len(rated) // 4
        train.append(rated[: len(rated) - n_test])
        test.append(rated[len(rated) - n_test :])
    features = np.column_stack((rng.normal(size=(n_items, dim - 1)), rng.uniform(size=n_items)))
    return make_data(train, test, features)


def obs_of(data: RatingData, window: list[int], state_size: int) -> np.ndarray:
    dim = data.item_features.shape[1]
    padded = [None] * (state_size - len(window)) + window
    return np.concatenate([np.zeros(dim) if i is None else data.item_features[i] for i in padded])


def test_test_split_follows_the_protocol_by_hand(toy: RatingData) -> None:
    env = RatingVecEnv(None, toy, split="test", episode_length=3, state_size=2)
    assert env.num_envs == 2 and env.users.tolist() == [0, 1]  # user 2 has no test rating
    obs, _ = env.reset(seed=0)
    f = toy.item_features
    # State: the last two training positives; user 1 has one, left-padded with zeros.
    np.testing.assert_array_equal(obs, [np.r_[f[2], f[3]], np.r_[np.zeros(3), f[5]]])
    actions = np.tile(POPULAR, (2, 1))
    steps = [env.step(actions) for _ in range(3)]
    # Most popular first, training items excluded: user 0 gets 4, 6, 5; user 1 gets 4, 6, 0.
    assert [s[4]["item"].tolist() for s in steps] == [[4, 4], [6, 6], [5, 0]]
    assert [s[1].tolist() for s in steps] == [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    assert [s[3].tolist() for s in steps] == [[False, False], [False, False], [True, True]]
    assert not any(s[2].any() for s in steps)
    # Positives enter the state: user 0 after step 1, user 1 after step 3.
    np.testing.assert_array_equal(steps[1][0], [np.r_[f[3], f[4]], np.r_[np.zeros(3), f[5]]])
    last = steps[2][4]
    np.testing.assert_array_equal(last["final_obs"], [np.r_[f[3], f[4]], np.r_[f[5], f[0]]])
    assert last["_final_obs"].tolist() == [True, True]
    # Each slot restarts with its own user.
    np.testing.assert_array_equal(steps[2][0], obs)
    assert env.users.tolist() == [0, 1]


def test_normalized_rating_rewards_any_rated_item(toy: RatingData) -> None:
    env = RatingVecEnv(None, toy, split="test", episode_length=3, state_size=2, reward="normalized_rating")
    env.reset(seed=0)
    rewards = [env.step(np.tile(POPULAR, (2, 1)))[1].tolist() for _ in range(3)]
    # (r - 1) / 4: user 0 rated 4 a 5 and 5 a 2; user 1 rated 6 a 3 and 0 a 4.
    assert rewards == [[1.0, 0.0], [0.0, 0.5], [0.25, 0.75]]
    assert env.metadata["reward_bins"] == 5


def test_train_episodes_start_at_a_uniform_cut_and_exclude_the_history(toy: RatingData) -> None:
    env = RatingVecEnv(8, toy, split="train", episode_length=3, state_size=2, users=np.array([0]))
    env.reset(seed=3)
    least_popular = np.tile(-POPULAR, (8, 1))
    f = toy.item_features
    pad = np.zeros(3)
    # By cut: history items[:cut] excluded from the least popular first (7, 3, 2, 1, 0, 5, ...);
    # rewards from the training ratings (0:5, 1:2, 2:4, 3:5); state from earlier positives.
    expected = {
        0: ([7, 3, 2], [0, 1, 1], [pad, pad]),
        1: ([7, 3, 2], [0, 1, 1], [pad, f[0]]),
        2: ([7, 3, 2], [0, 1, 1], [pad, f[0]]),
        3: ([7, 3, 5], [0, 1, 0], [f[0], f[2]]),
    }
    seen = []
    for _ in range(6):
        cuts = env.snapshot().cuts.tolist()
        first_obs = env.core.observation().numpy()
        steps = [env.step(least_popular) for _ in range(3)]
        for slot, cut in enumerate(cuts):
            items, rewards, window = expected[cut]
            assert [s[4]["item"][slot] for s in steps] == items
            assert [s[1][slot] for s in steps] == rewards
            np.testing.assert_array_equal(first_obs[slot], np.concatenate(window))
        seen += cuts
    assert np.bincount(seen).tolist() == [13, 13, 15, 7]  # 48 episodes over cuts 0..3
    # Uniform over 0..3: 4000 draws give 1000 each, give or take 4 standard deviations (110).
    many = RatingVecEnv(4000, toy, split="train", episode_length=3, state_size=2, users=np.array([0]))
    many.reset(seed=0)
    counts = np.bincount(many.snapshot().cuts.numpy(), minlength=5)
    assert counts[4] == 0 and np.abs(counts[:4] - 1000).max() < 110, counts


def reference_episode(
    data: RatingData,
    split: str,
    user: int,
    cut: int,
    actions: np.ndarray,
    state_size: int,
    rated: bool = False,
) -> tuple[list[int], list[float], list[np.ndarray]]:
    """One user's episode, computed the slow and obvious way; ``rated`` episodes recommend only
    the items rated in the split served (after the cut) and stop when they run out."""
    lo, hi = data.train_indptr[user], data.train_indptr[user + 1]
    history = list(zip(data.train_items[lo:hi].tolist(), data.train_ratings[lo:hi].tolist(), strict=True))
    excluded = {i for i, _ in history[:cut]}
    window = [i for i, r in history[:cut] if r >= data.positive_threshold][-state_size:]
    if split == "train":
        ratings = dict(history[cut:])
    else:
        lo, hi = data.test_indptr[user], data.test_indptr[user + 1]
        ratings = dict(zip(data.test_items[lo:hi].tolist(), data.test_ratings[lo:hi].tolist(), strict=True))
    if rated:
        excluded = set(range(data.n_items)) - set(ratings)
    items, rewards, observations = [], [], [obs_of(data, window, state_size)]
    for a in actions[: data.n_items - len(excluded)]:
        scores = data.item_features.astype(np.float64) @ a
        scores[list(excluded)] = -np.inf
        item = int(scores.argmax())
        excluded.add(item)
        positive = ratings.get(item, 0.0) >= data.positive_threshold
        items.append(item)
        rewards.append(float(positive))
        window = ([*window, item] if positive else window)[-state_size:]
        observations.append(obs_of(data, window, state_size))
    return items, rewards, observations


@pytest.mark.parametrize("block_rows", [None, 4])
@pytest.mark.parametrize("split", ["train", "test"])
def test_batched_slots_match_a_per_user_reference(
    split: str, block_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_data(0)
    if block_rows:  # slots scored 4 at a time, as a large catalogue would be
        monkeypatch.setattr(rating, "SCORE_BLOCK", block_rows * data.n_items)
    n = 6 if split == "train" else None
    env = RatingVecEnv(n, data, split=split, episode_length=5, state_size=3)
    obs, _ = env.reset(seed=11)
    actions = np.random.default_rng(1).uniform(-1, 1, (3, 5, env.num_envs, 5)).astype(np.float32)
    for episode in actions:
        start = env.snapshot()
        steps = [env.step(a) for a in episode]
        for slot in range(env.num_envs):
            user, cut = int(start.users[slot]), int(start.cuts[slot])
            items, rewards, observations = reference_episode(
                data, split, user, cut, episode[:, slot].astype(np.float64), 3
            )
            assert [s[4]["item"][slot] for s in steps] == items
            assert [s[1][slot] for s in steps] == rewards
            np.testing.assert_allclose(obs[slot], observations[0], rtol=0, atol=0)
            got = [s[0][slot] for s in steps[:-1]] + [steps[-1][4]["final_obs"][slot]]
            np.testing.assert_allclose(np.array(got), np.array(observations[1:]), rtol=0, atol=0)
        obs = steps[-1][0]
    if split == "test":
        assert env.num_envs == int((np.diff(data.test_indptr) > 0).sum())


@pytest.mark.parametrize("split", ["train", "test"])
def test_rated_slots_match_a_per_user_reference_across_uneven_episodes(split: str) -> None:
    data = random_data(0)
    env = RatingVecEnv(
        6 if split == "train" else None, data, split=split, episode_length=5, state_size=3, candidates="rated"
    )
    obs, _ = env.reset(seed=11)
    n = env.num_envs
    starts = [(int(u), int(c), obs[i]) for i, (u, c) in enumerate(zip(env.users, env.core.cuts, strict=True))]
    running: list[list[tuple[np.ndarray, int, float, np.ndarray]]] = [[] for _ in range(n)]
    lengths = []
    for a in np.random.default_rng(1).uniform(-1, 1, (16, n, 5)).astype(np.float32):
        obs, rewards, terminated, truncated, info = env.step(a)
        assert not terminated.any() and info["_final_obs"].tolist() == truncated.tolist()
        for slot in range(n):
            last = info["final_obs"][slot] if truncated[slot] else obs[slot]
            running[slot].append((a[slot], int(info["item"][slot]), float(rewards[slot]), last))
            if not truncated[slot]:
                continue
            user, cut, first = starts[slot]
            steps = running[slot]
            items, expected, observations = reference_episode(
                data, split, user, cut, np.array([s[0] for s in steps], np.float64), 3, rated=True
            )
            # The episode ended when T items were shown or the candidates ran out, not before.
            assert len(items) == len(steps) == min(5, len(observations) - 1)
            assert [s[1] for s in steps] == items and [s[2] for s in steps] == expected
            np.testing.assert_array_equal(np.array([first] + [s[3] for s in steps]), np.array(observations))
            lengths.append(len(steps))
            starts[slot] = (int(env.users[slot]), int(env.core.cuts[slot]), obs[slot])
            running[slot] = []
    # Some episodes ran out of candidates first, so slots reset at different steps.
    assert min(lengths) < 5 and 5 in lengths


def test_rated_users_without_candidates_are_never_served(
    toy: RatingData, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="macs_exp"):
        env = RatingVecEnv(None, toy, split="test", episode_length=3, state_size=2, candidates="rated")
    assert env.users.tolist() == [0, 1]  # user 2 has no test rating: nothing to recommend
    assert "1 of 3 users have no ratings in the test split and are not served" in caplog.text
    env.reset(seed=0)
    steps = [env.step(np.tile(POPULAR, (2, 1))) for _ in range(4)]
    # Each test user has 2 candidates: the two most popular first, then the episode ends.
    assert [s[4]["item"].tolist() for s in steps] == [[4, 6], [5, 0], [4, 6], [5, 0]]
    assert [s[1].tolist() for s in steps[:2]] == [[1.0, 0.0], [0.0, 1.0]]
    assert [s[3].tolist() for s in steps] == [[False, False], [True, True]] * 2
    assert env.users.tolist() == [0, 1]
    with pytest.raises(ValueError, match="ratings in the test split"):
        RatingVecEnv(None, toy, split="test", users=np.array([2]), candidates="rated")
    # Under rated, no room check: the candidates bound the episode, not the catalogue.
    assert RatingVecEnv(None, toy, split="test", episode_length=9, candidates="rated").num_envs == 2


def test_drr_state_by_hand(toy: RatingData) -> None:
    users = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, 1.0], [3.0, 3.0, 3.0]], np.float32)
    data = dataclasses.replace(toy, user_features=users)
    env = RatingVecEnv(None, data, split="test", episode_length=3, state_size=2, state="drr")
    obs, _ = env.reset(seed=0)
    f = data.item_features
    # User 0's last two training positives are 2 and 3; user 1's only one is 5 (no padding in the mean).
    mean = np.stack(((f[2] + f[3]) / 2, f[5]))
    np.testing.assert_allclose(obs, np.concatenate((users[:2], mean, users[:2] * mean), axis=1), rtol=1e-6)
    space = env.single_observation_space
    assert space.shape == (9,) and all(space.contains(o) for o in obs)
    np.testing.assert_array_equal(space.low[:3], [0.0, -1.0, 0.5])
    obs, *_ = env.step(np.tile(POPULAR, (2, 1)))  # user 0 is shown 4, a test positive
    np.testing.assert_allclose(obs[0, 3:6], (f[3] + f[4]) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="state=drr needs user_features"):
        RatingVecEnv(None, toy, split="test", state="drr")


def test_drr_train_states_do_not_depend_on_test_ratings() -> None:
    rng = np.random.default_rng(0)
    rows = [
        (u, i, int(rng.integers(1, 6)), 10 * i + u)
        for u in range(12)
        for i in range(15)
        if rng.random() < 0.8
    ]
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    # The last rating (by time) of user 0 is in its test split; flip it between a hit and a miss.
    last = frame.index[frame.user == 0][-1]
    changed = frame.copy()
    changed.loc[last, "rating"] = 6 - frame.loc[last, "rating"] if frame.loc[last, "rating"] != 3 else 5

    def states(ratings: pd.DataFrame) -> list[np.ndarray]:
        data = build_rating_data(
            ratings,
            name="leak",
            positive_threshold=4,
            min_user_ratings=2,
            min_item_ratings=1,
            test_fraction=0.2,
            embedding_dim=4,
            seed=0,
        )
        env = RatingVecEnv(8, data, episode_length=4, state_size=3, state="drr")
        out = [env.reset(seed=3)[0]]
        for a in np.random.default_rng(1).uniform(-1, 1, (9, 8, 5)).astype(np.float32):
            obs, _, _, _, info = env.step(a)
            out += [obs, info["final_obs"]]
        return out

    for x, y in zip(states(frame), states(changed), strict=True):
        np.testing.assert_array_equal(x, y)


def test_same_seed_same_trajectories_and_another_seed_other_users() -> None:
    data = random_data(1)
    actions = np.random.default_rng(2).uniform(-1, 1, (25, 4, 5)).astype(np.float32)

    def run(seed: int) -> list[np.ndarray]:
        env = RatingVecEnv(4, data, episode_length=5, state_size=3)
        out = [env.reset(seed=seed)[0]]
        for a in actions:
            obs, rewards, _, _, info = env.step(a)
            out += [obs, rewards, info["item"], env.users]
        return out

    first, again, other = run(5), run(5), run(6)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(first, other, strict=True))


@pytest.mark.parametrize("candidates", ["catalog", "rated"])
def test_snapshot_restore_replays_across_episode_boundaries(candidates: str) -> None:
    data = random_data(2)
    env = RatingVecEnv(5, data, episode_length=4, state_size=3, candidates=candidates)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for a in rng.uniform(-1, 1, (6, 5, 5)).astype(np.float32):
        env.step(a)
    snapshot = env.snapshot()
    actions = rng.uniform(-1, 1, (9, 5, 5)).astype(np.float32)  # crosses two episode starts
    real = [env.step(a) for a in actions]
    # A counterfactual branch, then back: the replay equals the unbranched run.
    env.restore(snapshot)
    branch = [env.step(-a) for a in actions]
    # Users are drawn independently of the actions, so the branch meets the same new users.
    branch_users = env.users
    assert any(not np.array_equal(b[4]["item"], r[4]["item"]) for b, r in zip(branch, real, strict=True))
    env.restore(snapshot)
    replay = [env.step(a) for a in actions]
    np.testing.assert_array_equal(env.users, branch_users)
    for r, p in zip(real, replay, strict=True):
        for x, y in zip(r[:4], p[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        for key in ("item", "final_obs", "_final_obs"):
            np.testing.assert_array_equal(r[4][key], p[4][key])
    with pytest.raises(ValueError, match="does not fit"):
        RatingVecEnv(4, data, episode_length=4, state_size=3, candidates=candidates).restore(snapshot)
    other = "catalog" if candidates == "rated" else "rated"
    with pytest.raises(ValueError, match="does not fit"):
        RatingVecEnv(5, data, episode_length=4, state_size=3, candidates=other).restore(snapshot)


@pytest.mark.parametrize("candidates", ["catalog", "rated"])
def test_a_snapshot_is_not_changed_by_later_steps(candidates: str) -> None:
    data = random_data(3)
    env = RatingVecEnv(3, data, episode_length=4, state_size=2, candidates=candidates)
    env.reset(seed=1)
    env.step(np.ones((3, 5), np.float32))
    snapshot = env.snapshot()
    kept = dataclasses.replace(
        snapshot,
        recommended=snapshot.recommended.clone(),
        rated=None if snapshot.rated is None else snapshot.rated.clone(),
    )
    env.step(np.ones((3, 5), np.float32))
    assert torch.equal(snapshot.recommended, kept.recommended)
    if snapshot.rated is not None and kept.rated is not None:
        for name in ("items", "available", "shown", "length"):
            assert torch.equal(getattr(snapshot.rated, name), getattr(kept.rated, name)), name


def test_spaces_metadata_and_registration(toy: RatingData) -> None:
    env = gym.make_vec(
        RATING_ID,
        num_envs=2,
        vectorization_mode="vector_entry_point",
        data=toy,
        split="test",
        episode_length=3,
    )
    assert isinstance(env, BatchedEnv)
    space = env.single_observation_space
    assert space.shape == (30,) and space.dtype == np.float32
    np.testing.assert_array_equal(space.low[:3], [0.0, -7 / 8, 0.0])
    np.testing.assert_array_equal(space.high[:3], [7 / 8, 0.0, 1.0])
    assert env.single_action_space == gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    obs, _ = env.reset(seed=0)
    assert all(space.contains(o) for o in obs)
    meta = env.metadata
    assert meta["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert (meta["reward_range"], meta["reward_bins"], meta["score"]) == ((0.0, 1.0), 2, "return")
    assert meta["score_range"] == (0.0, 3.0)
    info = env_info(env, RATING_ID)
    assert info.episode_scores(np.array([3.0]), np.array([10])).tolist() == [3.0]


def test_rejects_what_it_cannot_serve(toy: RatingData) -> None:
    with pytest.raises(ValueError, match="exceeds the 2 evaluation users"):
        RatingVecEnv(3, toy, split="test")
    with pytest.raises(ValueError, match="num_envs must be given"):
        RatingVecEnv(None, toy)
    with pytest.raises(ValueError, match="ratings in the test split"):
        RatingVecEnv(None, toy, split="test", users=np.array([2]))
    # User 0's 4 training items leave 4 items: too few for 5 test recommendations.
    with pytest.raises(ValueError, match="exceeds the 8 items"):
        RatingVecEnv(None, toy, split="test", episode_length=5)
    twice = dataclasses.replace(toy, test_items=np.array([4, 4, 6, 0]))
    with pytest.raises(ValueError, match="twice"):
        RatingVecEnv(None, twice, split="test", episode_length=3)
    with pytest.raises(ValueError, match="split="):
        RatingVecEnv(None, toy, split="valid")
