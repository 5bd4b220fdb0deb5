"""MACS/Session-v0: the rewards and moves of its generative model on hand-made states, its
random streams, its gymnasium id and its config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from macs_exp.app import compose_config
from macs_exp.envs.factory import make_batched_env
from macs_exp.envs.session import SessionVecEnv
from macs_exp.envs.taste import UserState
from macs_exp.trainer.run import run_experiment

TAU = float(np.tanh(0.4))  # the taste of USER below: tanh(0.2 + mean(0.1, 0.3))
# item_dim=1, history=4, recent=2: [u, h_1, h_2, g_1, g_2].
USER = [0.2, 0.1, 0.3, -0.5, 0.7]


def small_env(num_envs: int = 1, **kwargs: Any) -> SessionVecEnv:
    return SessionVecEnv(num_envs, item_dim=1, history=4, recent=2, **kwargs)


def put(env: SessionVecEnv, obs: list[list[float]] | np.ndarray) -> None:
    """Sets the users' states to ``obs`` through the public restore, generator left as it is."""
    state = torch.tensor(np.asarray(obs), dtype=torch.float32).reshape(env.state.shape)
    env.restore(UserState(state, torch.zeros(env.num_envs, dtype=torch.long), env.generator.get_state()))


def step(env: SessionVecEnv, items: list[float]) -> tuple[np.ndarray, np.ndarray]:
    obs, clicks, *_ = env.step(np.asarray(items, np.float32)[:, None])
    return obs, clicks


def test_spaces_and_metadata_at_the_defaults() -> None:
    env = SessionVecEnv(3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 44) and obs.dtype == np.float32 and info == {}
    assert env.single_observation_space == gym.spaces.Box(-1.0, 1.0, (44,), np.float32)
    assert env.single_action_space == gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    assert env.observation_space.shape == (3, 44) and env.action_space.shape == (3, 4)
    meta = env.metadata
    assert (meta["items_per_page"], meta["reward_range"], meta["reward_bins"]) == (10, (0.0, 10.0), 11)
    assert (meta["score"], meta["score_range"]) == ("mean_reward", (0.0, 10.0))
    # u and h_1..h_3 (16 elements) are essential, g_1..g_7 (28) trivial.
    np.testing.assert_array_equal(meta["trivial_mask"], [False] * 16 + [True] * 28)


def test_clicks_follow_the_formula_on_a_hand_made_state() -> None:
    env = small_env(5)
    put(env, [USER] * 5)
    # Squared distances 0, 0.04, 0.09, (1 - TAU)^2 = 0.38, (1 + TAU)^2 = 1.9.
    _, clicks = step(env, [TAU, TAU + 0.2, TAU + 0.3, 1.0, -1.0])
    np.testing.assert_array_equal(clicks, [10, 7, 5, 0, 0])
    assert round(10 * np.exp(-8 * 0.04)) == 7 and round(10 * np.exp(-8 * 0.09)) == 5


def test_items_are_clipped_before_scoring_and_logging() -> None:
    env = small_env()
    put(env, [[0.9, 1.0, 1.0, 0.0, 0.0]])  # taste tanh(1.9) = 0.956
    # Scored as 1.0: round(10 * exp(-8 * 0.044^2)) = 10, where 1.5 itself would earn 1.
    obs, clicks = step(env, [1.5])
    assert clicks[0] == 10
    np.testing.assert_array_equal(obs, np.float32([[0.9, 1.0, 1.0, 1.0, 0.0]]))


def test_clicks_follow_the_formula_on_random_users() -> None:
    env = SessionVecEnv(64)
    obs, _ = env.reset(seed=3)
    items = np.clip(env.oracle_actions(obs) + np.random.default_rng(0).normal(0, 0.3, (64, 4)), -1, 1)
    _, clicks, *_ = env.step(items.astype(np.float32))
    blocks = obs.reshape(64, 11, 4).astype(np.float64)
    taste = np.tanh(blocks[:, 0] + blocks[:, 1:4].mean(1))
    expected = np.round(10 * np.exp(-8 * ((items - taste) ** 2).mean(1)))
    np.testing.assert_array_equal(clicks, expected)
    assert len(set(clicks.tolist())) > 5  # the draw spans many click counts


def test_engaged_item_enters_the_window_and_pushes_the_history() -> None:
    env = small_env()
    put(env, [USER])
    obs, clicks = step(env, [TAU])
    assert clicks[0] == 10
    # h_2 = 0.3 moves to g_1 and g_2 = 0.7 is forgotten; u stays.
    np.testing.assert_allclose(obs, [[0.2, TAU, 0.1, 0.3, -0.5]], rtol=0, atol=1e-7)


def test_skipped_item_is_logged_only_in_the_older_history() -> None:
    env = small_env()
    put(env, [USER])
    obs, clicks = step(env, [-1.0])
    assert clicks[0] == 0
    np.testing.assert_array_equal(obs, np.float32([[0.2, 0.1, 0.3, -1.0, -0.5]]))


def test_engage_clicks_is_the_threshold() -> None:
    env = small_env(2, engage_clicks=7)
    put(env, [USER] * 2)
    obs, clicks = step(env, [TAU + 0.2, TAU + 0.3])
    np.testing.assert_array_equal(clicks, [7, 5])
    np.testing.assert_allclose(
        obs, [[0.2, TAU + 0.2, 0.1, 0.3, -0.5], [0.2, 0.1, 0.3, TAU + 0.3, -0.5]], rtol=0, atol=1e-7
    )


def test_the_older_history_never_affects_the_reward() -> None:
    env = SessionVecEnv(128)
    obs, _ = env.reset(seed=1)
    items = np.clip(env.oracle_actions(obs) + np.random.default_rng(1).normal(0, 0.3, (128, 4)), -1, 1)
    snapshot = env.snapshot()
    _, clicks, *_ = env.step(items.astype(np.float32))
    perturbed = obs.copy()
    perturbed[:, 16:] = np.random.default_rng(2).uniform(-1, 1, (128, 28))
    env.restore(snapshot)
    put(env, perturbed)
    _, perturbed_clicks, *_ = env.step(items.astype(np.float32))
    np.testing.assert_array_equal(perturbed_clicks, clicks)
    assert len(set(clicks.tolist())) > 5


def test_oracle_actions_are_the_taste_and_earn_ten_clicks() -> None:
    env = SessionVecEnv(32)
    obs, _ = env.reset(seed=4)
    for _ in range(12):  # across a truncation
        oracle = env.oracle_actions(obs)
        blocks = obs.reshape(32, 11, 4)
        np.testing.assert_allclose(oracle, np.tanh(blocks[:, 0] + blocks[:, 1:4].mean(1)), atol=1e-6)
        obs, clicks, *_ = env.step(oracle)
        np.testing.assert_array_equal(clicks, np.full(32, 10.0))


def test_episodes_are_truncated_with_final_obs_and_new_users_from_the_generator() -> None:
    env = small_env(2, episode_length=2)
    env.reset(seed=5)
    stream = torch.Generator().manual_seed(5)
    torch.rand((2, 5, 1), generator=stream)  # the users of the reset
    put(env, [USER, USER])
    obs, _, terminated, truncated, info = env.step(np.float32([[-1.0], [-1.0]]))
    assert not truncated.any() and not terminated.any() and not info["_final_obs"].any()
    obs, _, terminated, truncated, info = env.step(np.float32([[-1.0], [TAU]]))
    assert truncated.all() and not terminated.any() and info["_final_obs"].all()
    # Both skipped first; the second user then engages, its taste unchanged by the skip.
    np.testing.assert_allclose(
        info["final_obs"], [[0.2, 0.1, 0.3, -1.0, -1.0], [0.2, TAU, 0.1, 0.3, -1.0]], rtol=0, atol=1e-7
    )
    np.testing.assert_array_equal(obs, (2 * torch.rand((2, 5), generator=stream) - 1).numpy())


def test_reset_draws_users_uniformly_from_the_seed_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    env = SessionVecEnv(3)
    obs, _ = env.reset(seed=5)
    np.testing.assert_array_equal(
        obs, (2 * torch.rand((3, 44), generator=torch.Generator().manual_seed(5)) - 1).numpy()
    )
    np.testing.assert_array_equal(SessionVecEnv(3).reset(seed=5)[0], obs)
    assert not np.array_equal(env.reset()[0], obs)  # unseeded: the stream continues
    env.step(np.zeros((3, 4), np.float32))
    assert torch.equal(torch.get_rng_state(), before)


def test_restore_replays_the_same_steps_across_an_episode_end() -> None:
    env = SessionVecEnv(4, episode_length=3)
    env.reset(seed=6)
    items = np.random.default_rng(3).uniform(-1, 1, (6, 4, 4)).astype(np.float32)
    env.step(items[0])
    snapshot = env.snapshot()
    first = [env.step(a) for a in items[1:]]
    env.restore(snapshot)
    again = [env.step(a) for a in items[1:]]
    for (obs, clicks, _, truncated, info), (obs2, clicks2, _, truncated2, info2) in zip(
        first, again, strict=True
    ):
        np.testing.assert_array_equal(obs, obs2)
        np.testing.assert_array_equal(clicks, clicks2)
        np.testing.assert_array_equal(truncated, truncated2)
        np.testing.assert_array_equal(info["final_obs"], info2["final_obs"])
    # Both episode ends (steps 3 and 6) fall in the replay, so new users come from the generator.
    assert sum(int(out[3].sum()) for out in first) == 8


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"item_dim": 0}, "item_dim"),
        ({"history": 1, "recent": 1}, "history"),
        ({"recent": 0}, "recent"),
        ({"recent": 10}, "recent"),
        ({"sharpness": 0.0}, "sharpness"),
        ({"engage_clicks": 0}, "engage_clicks"),
        ({"engage_clicks": 11}, "engage_clicks"),
        ({"episode_length": 0}, "episode_length"),
    ],
)
def test_bad_kwargs_name_their_yaml_key(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^env\.kwargs\.{name} must be "):
        SessionVecEnv(2, **kwargs)


def test_make_vec_and_the_config_make_the_env() -> None:
    made = gym.make_vec("MACS/Session-v0", num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(made, SessionVecEnv) and made.reset(seed=0)[0].shape == (3, 44)
    env_cfg = compose_config(["env=session"]).env
    assert (env_cfg.name, env_cfg.id, env_cfg.num_envs) == ("session", "MACS/Session-v0", 16)
    assert dict(env_cfg.kwargs) == {
        "item_dim": 4,
        "history": 10,
        "recent": 3,
        "sharpness": 8.0,
        "engage_clicks": 1,
        "episode_length": 10,
    }
    env = make_batched_env(OmegaConf.to_object(env_cfg), 2, "cpu")
    assert isinstance(env, SessionVecEnv) and env.recent == 3


def test_a_tiny_baseline_run_trains_and_evaluates(tmp_path: Path) -> None:
    overrides = [
        "env=session",
        "mode=baseline",
        "trainer.total_steps=64",
        "trainer.eval_every=32",
        "trainer.eval_episodes=4",
        "trainer.log_every=32",
        "tracking.enabled=false",
        "trainer.progress=none",
    ]
    result = run_experiment(compose_config(overrides), tmp_path / "run")
    assert result.steps >= 64
    assert 0.0 <= result.final_eval["eval/episode_reward"] <= 100.0
    assert (tmp_path / "run" / "agent.pt").exists()
