"""The random and popular reference policies: the Agent protocol, reproducibility, and a
hand-checked evaluation on the rating env through the trainer's evaluate() and Table I metrics."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import transitions
from macs_exp.agents import Agent
from macs_exp.agents.base import OffPolicyConfig
from macs_exp.agents.reference import PopularPolicy, RandomPolicy
from macs_exp.data.dataset import RatingData
from macs_exp.envs.rating import RatingVecEnv
from macs_exp.metrics import ranking_metrics
from macs_exp.trainer.trainer import evaluate

OBS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
ACT = gym.spaces.Box(np.array([-1, 0, -2], np.float32), np.array([1, 3, 2], np.float32))


def cfg(name: str) -> OffPolicyConfig:
    return OffPolicyConfig(name=name)


@pytest.fixture
def two_users() -> RatingData:
    # Items by popularity (the last feature): 1, 3, 2, 4, 0, 5.
    features = np.array([[0.1, 0.2], [0.5, 1.0], [0.3, 0.6], [-0.2, 0.8], [0.0, 0.4], [0.9, 0.0]])
    return RatingData(
        name="two",
        n_users=2,
        n_items=6,
        item_features=features.astype(np.float32),
        train_indptr=np.array([0, 2, 3]),
        train_items=np.array([1, 0, 3]),
        train_ratings=np.array([5.0, 3.0, 4.0], np.float32),
        test_indptr=np.array([0, 3, 5]),
        test_items=np.array([3, 4, 5, 2, 0]),
        test_ratings=np.array([4.0, 5.0, 2.0, 1.0, 5.0], np.float32),
        positive_threshold=4.0,
        rating_min=1.0,
        rating_max=5.0,
    )


@pytest.mark.parametrize("cls", [RandomPolicy, PopularPolicy])
def test_protocol_and_trivial_learning(cls: type, tmp_path: Path) -> None:
    agent = cls(cfg(cls.name), OBS, ACT, "cpu", seed=0)
    assert isinstance(agent, Agent)
    obs = torch.zeros(5, 4)
    real = transitions(obs, torch.zeros(5, 3), torch.ones(5), obs, torch.zeros(5))
    agent.observe(real)
    agent.add_extra(real)
    # Nothing is kept and nothing is ever due; exploring is acting.
    assert agent.learn() == [] and not hasattr(agent, "buffer")
    twin = cls(cfg(cls.name), OBS, ACT, "cpu", seed=0)
    assert torch.equal(twin.explore(obs), agent.act(obs))
    agent.save(tmp_path / "a.pt")
    expected = agent.act(obs)
    agent.random_actions(3)
    agent.load(tmp_path / "a.pt")
    assert torch.equal(agent.act(obs), expected)
    other = (PopularPolicy if cls is RandomPolicy else RandomPolicy)(cfg("x"), OBS, ACT, "cpu", 0)
    with pytest.raises(ValueError, match="holds a"):
        other.load(tmp_path / "a.pt")


def test_frozen_policy_leaves_the_agents_random_stream_alone() -> None:
    agent, twin = (RandomPolicy(cfg("random"), OBS, ACT, "cpu", seed=1) for _ in range(2))
    frozen = agent.frozen_policy()
    obs = torch.zeros(3, 4)
    first = frozen(obs)
    assert torch.equal(first, twin.act(obs))
    assert not torch.equal(frozen(obs), first)
    assert torch.equal(agent.act(obs), first)  # the agent's own stream has not moved
    popular = PopularPolicy(cfg("popular"), OBS, ACT, "cpu", seed=0)
    assert torch.equal(popular.frozen_policy()(obs), popular.act(obs))


def test_random_is_uniform_in_the_box_and_reproducible_by_seed() -> None:
    a, b, c = (RandomPolicy(cfg("random"), OBS, ACT, "cpu", seed=s) for s in (7, 7, 8))
    obs = torch.zeros(4000, 4)
    x = a.act(obs, deterministic=True)
    assert torch.equal(x, b.act(obs, deterministic=True))
    assert not torch.equal(x, c.act(obs, deterministic=True))
    assert x.shape == (4000, 3)
    assert bool(((x >= torch.tensor(ACT.low)) & (x <= torch.tensor(ACT.high))).all())
    # Uniform: means at the box centres (0, 1.5, 0) within 4 standard errors.
    standard_error = np.array([1.0, 1.5, 2.0]) / 3**0.5 / 4000**0.5
    assert (np.abs(x.mean(0).numpy() - [0.0, 1.5, 0.0]) < 4 * standard_error).all()


def test_popular_points_along_the_last_feature() -> None:
    agent = PopularPolicy(cfg("popular"), OBS, ACT, "cpu", seed=0)
    assert agent.act(torch.zeros(2, 4)).tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="unit vector"):
        PopularPolicy(cfg("popular"), OBS, gym.spaces.Box(-1.0, 0.5, (3,), np.float32), "cpu", 0)


def test_popular_evaluated_like_any_agent(two_users: RatingData) -> None:
    env = RatingVecEnv(None, two_users, split="test", episode_length=2, state_size=2)
    agent = PopularPolicy(cfg("popular"), env.single_observation_space, env.single_action_space, "cpu", 0)
    # Training items excluded: user 0 gets 3 (a test positive) then 2 (unrated); user 1 gets 1
    # (unrated) then 2 (rated 1).
    assert evaluate(agent, env, seed=0, items_per_page=None)["eval/episode_reward"] == 0.5
    obs, _ = env.reset(seed=0)
    shown = []
    for _ in range(2):
        obs, *_, info = env.step(agent.act(torch.from_numpy(obs)).numpy())
        shown.append(info["item"])
    recommended = np.stack(shown, axis=1)
    assert recommended.tolist() == [[3, 2], [1, 2]]
    m = ranking_metrics(recommended, env.users, two_users)
    assert m["test/precision"] == 0.25
    assert m["test/recall"] == 0.25  # 1 / min(2, 2) and 0 / 1
    assert m["test/accuracy"] == pytest.approx((2 / 3 + 0 / 2) / 2)  # user 0: TP 3, TN 5
    assert m["test/ndcg"] == pytest.approx(1 / (1 + 1 / math.log2(3)) / 2)
    assert m["test/hit_rate"] == 0.5


def test_random_evaluation_is_reproducible_with_the_seed(two_users: RatingData) -> None:
    env = RatingVecEnv(None, two_users, split="test", episode_length=2, state_size=2)
    runs = [
        evaluate(
            RandomPolicy(cfg("random"), env.single_observation_space, env.single_action_space, "cpu", s),
            env,
            0,
            None,
        )
        for s in (3, 3)
    ]
    assert runs[0] == runs[1]
    assert 0.0 <= runs[0]["eval/episode_reward"] <= 2.0


def rated_users(features: np.ndarray, repeat: int = 1) -> tuple[RatingData, RatingVecEnv]:
    """Three test users with 5, 2 and 3 candidates (their test ratings), T = 3, each user served by
    ``repeat`` slots. Positives: user 0 {0, 1, 4}, user 1 {5}, user 2 none."""
    data = RatingData(
        name="rated",
        n_users=3,
        n_items=8,
        item_features=features.astype(np.float32),
        train_indptr=np.array([0, 1, 2, 3]),
        train_items=np.array([7, 6, 0]),
        train_ratings=np.array([5.0, 3.0, 2.0], np.float32),
        test_indptr=np.array([0, 5, 7, 10]),
        test_items=np.array([0, 1, 2, 3, 4, 5, 2, 3, 6, 7]),
        test_ratings=np.array([5, 4, 2, 1, 5, 4, 1, 2, 1, 3], np.float32),
        positive_threshold=4.0,
        rating_min=1.0,
        rating_max=5.0,
    )
    users = np.repeat(np.arange(3), repeat)
    env = RatingVecEnv(
        None, data, split="test", episode_length=3, state_size=2, users=users, candidates="rated"
    )
    return data, env


def evaluated(agent: Agent, env: RatingVecEnv, data: RatingData) -> tuple[dict[str, float], np.ndarray]:
    """The trainer's evaluation, and the recommendation lists it scored."""
    lists: list[np.ndarray] = []

    def ranking(recommended: np.ndarray) -> dict[str, float]:
        lists.append(recommended)
        return ranking_metrics(recommended, env.users, data)

    return evaluate(agent, env, seed=0, items_per_page=None, ranking=ranking), lists[0]


def test_popular_under_rated_candidates_by_hand() -> None:
    popularity = np.array([0.1, 0.9, 0.8, 0.2, 0.3, 0.5, 0.6, 0.4])
    data, env = rated_users(np.column_stack((np.zeros(8), popularity)))
    agent = PopularPolicy(cfg("popular"), env.single_observation_space, env.single_action_space, "cpu", 0)
    m, lists = evaluated(agent, env, data)
    # The most popular candidates first; user 1 runs out after its 2 candidates.
    assert lists.tolist() == [[1, 2, 4], [2, 5, -1], [6, 7, 3]]
    # Hits 2, 1, 0: precision (2/3 + 1/3 + 0) / 3; recall over users 0 and 1: 2/min(3, 3), 1/min(3, 1).
    assert m["test/precision"] == pytest.approx(1 / 3)
    assert m["test/recall"] == pytest.approx((2 / 3 + 1) / 2)
    assert (m["eval/episode_reward"], m["eval/episode_length"]) == pytest.approx((1.0, 8 / 3))


def test_random_under_rated_candidates_meets_the_uniform_expectation() -> None:
    # One-hot item features: a uniform random action's argmax is a uniform random candidate, so
    # each episode shows a uniform random L_u = min(T, |C_u|) of the candidates (docs/metrics.md).
    data, env = rated_users(np.column_stack((np.eye(8), np.zeros(8))), repeat=1000)
    agent = RandomPolicy(cfg("random"), env.single_observation_space, env.single_action_space, "cpu", 0)
    m, lists = evaluated(agent, env, data)
    candidates = [{0, 1, 2, 3, 4}, {2, 5}, {3, 6, 7}]
    for user, row in zip(env.users, lists, strict=True):
        assert set(row[row >= 0].tolist()) <= candidates[user]
    # E[hits_u] = L_u |P_u| / |C_u|: 3 * 3/5, 2 * 1/2, 0.
    hits = np.array([9 / 5, 1.0, 0.0])
    assert abs(m["test/precision"] - (hits / 3).mean()) < 0.0085  # 4 sd: sd^2 = 1000 * 0.04 / 3000^2
    assert abs(m["test/recall"] - (hits[0] / 3 + hits[1] / 1) / 2) < 0.0127  # 4 sd: 1000 * 0.04 / 2000^2
