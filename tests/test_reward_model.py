"""env.train_reward=model: the rating model's fit and the rewards of unrated items in training episodes."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from macs_exp.data import RatingData, build_rating_data, load_rating_data
from macs_exp.data.reward_model import fit_reward_model
from macs_exp.envs.rating import RatingVecEnv


def latent_ratings(n_users: int = 40, n_items: int = 30, seed: int = 0) -> pd.DataFrame:
    """Ratings 1-5 from a rank-2 model plus noise, 60% of the pairs, with increasing timestamps."""
    rng = np.random.default_rng(seed)
    users, items = rng.normal(size=(n_users, 2)), rng.normal(size=(n_items, 2))
    scores = 3.0 + 1.2 * users @ items.T + rng.normal(scale=0.3, size=(n_users, n_items))
    u, i = np.nonzero(rng.random((n_users, n_items)) < 0.6)
    return pd.DataFrame(
        {
            "user": u + 1,
            "item": i + 1,
            "rating": np.clip(np.rint(scores[u, i]), 1, 5),
            "timestamp": np.arange(len(u), dtype=np.float64),
        }
    )


@pytest.fixture(scope="module")
def data() -> RatingData:
    built = build_rating_data(
        latent_ratings(),
        name="latent",
        positive_threshold=4.0,
        min_user_ratings=1,
        min_item_ratings=1,
        test_fraction=0.2,
        embedding_dim=3,
        seed=0,
    )
    model, stats = fit_reward_model(built, seed=0)
    return dataclasses.replace(built, reward_model=model, stats={**built.stats, **stats})


def test_the_fit_is_reported_and_beats_the_global_mean(data: RatingData) -> None:
    stats = data.stats
    assert stats["model_fit_ratings"] + stats["model_heldout_ratings"] == len(data.train_ratings)
    assert 0 < stats["model_heldout_ratings"] < 0.2 * len(data.train_ratings)
    assert 0 < stats["model_rmse"] < 0.8 * stats["model_baseline_rmse"]
    # Deterministic: the same seed fits the same model.
    again, stats_again = fit_reward_model(dataclasses.replace(data, reward_model=None), seed=0)
    assert data.reward_model is not None and stats_again == {k: stats[k] for k in stats_again}
    torch.testing.assert_close(again.item_factors, data.reward_model.item_factors, rtol=0, atol=0)


def train_steps(
    data: RatingData, reward: str, train_reward: str, steps: int = 12
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(users, items, rewards, window's last item) of each step of 8 training slots."""
    env = RatingVecEnv(8, data, episode_length=4, state_size=3, reward=reward, train_reward=train_reward)
    env.reset(seed=1)
    actions = np.random.default_rng(2).normal(size=(steps, 8, data.item_features.shape[1]))
    out = []
    for a in actions:
        users = env.users
        _, rewards, _, done, info = env.step(a.astype(np.float32))
        # The window as the step left it: read before the autoreset only where no episode ended.
        window = env.core.window[:, -1].numpy().copy()
        out.append((users, info["item"], rewards, np.where(done, -1, window)))
    return out


def logged_train_rating(data: RatingData, user: int, item: int) -> float | None:
    lo, hi = data.train_indptr[user], data.train_indptr[user + 1]
    found = np.flatnonzero(data.train_items[lo:hi] == item)
    return float(data.train_ratings[lo + found[0]]) if found.size else None


@pytest.mark.parametrize("reward", ["binary", "normalized_rating"])
def test_unrated_items_earn_the_models_prediction_and_rated_ones_their_rating(
    data: RatingData, reward: str
) -> None:
    assert data.reward_model is not None
    seen = {"rated": 0, "unrated": 0, "modelled positive": 0}
    for users, items, rewards, window in train_steps(data, reward, "model"):
        predicted = data.reward_model.predict(torch.from_numpy(users), torch.from_numpy(items)).numpy()
        for k, (user, item) in enumerate(zip(users, items, strict=True)):
            rating = logged_train_rating(data, user, item)
            seen["rated" if rating is not None else "unrated"] += 1
            value = float(predicted[k]) if rating is None else rating
            expected = float(value >= 4.0) if reward == "binary" else (value - 1.0) / 4.0
            assert rewards[k] == pytest.approx(expected, abs=1e-6), (user, item, rating)
            if rating is None and value >= 4.0 and window[k] >= 0:
                # A modelled positive enters the state like a logged one.
                assert window[k] == item
                seen["modelled positive"] += 1
    assert min(seen.values()) > 0, seen


def test_logged_training_rewards_and_the_test_split_ignore_the_model(data: RatingData) -> None:
    for logged, modelled in zip(
        train_steps(data, "binary", "logged"), train_steps(data, "binary", "model"), strict=True
    ):
        users, items, rewards, _ = logged
        rated = np.array(
            [logged_train_rating(data, u, i) is not None for u, i in zip(users, items, strict=True)]
        )
        np.testing.assert_array_equal(rewards, np.where(rated, rewards, 0.0))
        np.testing.assert_array_equal(modelled[1], items)  # the actions, not the states, pick items
        np.testing.assert_array_equal(modelled[2][rated], rewards[rated])

    def test_rewards(train_reward: str) -> np.ndarray:
        env = RatingVecEnv(
            None, data, split="test", episode_length=4, state_size=3, train_reward=train_reward
        )
        env.reset(seed=0)
        actions = np.random.default_rng(3).normal(size=(4, env.num_envs, data.item_features.shape[1]))
        return np.stack([env.step(a.astype(np.float32))[1] for a in actions])

    np.testing.assert_array_equal(test_rewards("model"), test_rewards("logged"))


def test_model_reward_without_a_model_names_the_fix(data: RatingData) -> None:
    with pytest.raises(ValueError, match=r"train_reward=model needs data\.reward_model"):
        RatingVecEnv(4, dataclasses.replace(data, reward_model=None), train_reward="model")
    with pytest.raises(ValueError, match="train_reward='predicted' must be one of"):
        RatingVecEnv(4, data, train_reward="predicted")


def write_ml1m(folder: Path) -> None:
    frame = latent_ratings(n_users=25, n_items=40, seed=4)
    lines = [f"{u}::{i}::{int(r)}::{978300000 + int(t)}\n" for u, i, r, t in frame.itertuples(index=False)]
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text("".join(lines))


def test_ml1m_file_with_model_rewards_loads_caches_and_steps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from macs_exp.app import compose_config
    from macs_exp.config import to_config
    from macs_exp.envs.factory import make_batched_env

    write_ml1m(tmp_path / "ml-1m")
    overrides = ["env=ml1m", f"env.data_dir={tmp_path / 'ml-1m'}", f"data.cache_dir={tmp_path / 'cache'}"]
    config = to_config(compose_config([*overrides, "env.train_reward=model", "env.num_envs=4"]))
    with caplog.at_level(logging.INFO, logger="macs_exp"):
        first = load_rating_data(config.env, config.data)
        second = load_rating_data(config.env, config.data)
    messages = [r.getMessage() for r in caplog.records if "reward model cache" in r.getMessage()]
    assert [m.split(":")[0] for m in messages] == ["reward model cache miss", "reward model cache hit"]
    assert first.stats == second.stats and first.stats["model_rmse"] > 0
    assert first.reward_model is not None and second.reward_model is not None
    torch.testing.assert_close(first.reward_model.user_factors, second.reward_model.user_factors)
    env = make_batched_env(config.env, 4, "cpu", data=second)
    env.reset(seed=0)
    rewards = env.step(np.ones((4, second.item_features.shape[1]), np.float32))[1]
    assert rewards.shape == (4,)
    # Logged runs neither fit nor carry a model.
    logged = to_config(compose_config(overrides))
    assert logged.env.train_reward == "logged"
    assert load_rating_data(logged.env, logged.data).reward_model is None


def test_the_fit_script_prints_the_stats_a_run_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location(
        "reward_model_fit", REPO / "scripts" / "reward_model_fit.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["env=tiny_ratings", f"data.cache_dir={tmp_path}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("=")[0] for line in lines] == [
        "data.stats.model_baseline_rmse",
        "data.stats.model_fit_ratings",
        "data.stats.model_heldout_ratings",
        "data.stats.model_rmse",
    ]
    assert script.main(["env=synthetic"]) == 2
