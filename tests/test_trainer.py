from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from macs_exp.agents import make_agent
from macs_exp.app import compose_config
from macs_exp.envs.config import EnvConfig
from macs_exp.envs.factory import make_batched_env
from macs_exp.envs.gym_batched import GymBatchedEnv
from macs_exp.macs.expert import expert_config, expert_key
from macs_exp.metrics import EpisodeStats, ctr
from macs_exp.trainer.run import run_experiment
from macs_exp.trainer.trainer import evaluate


def test_ctr_is_pooled_clicks_over_items_shown() -> None:
    assert ctr(clicks=30, pages=6, items_per_page=10) == 0.5
    assert ctr(clicks=0, pages=0, items_per_page=10) == 0.0
    stats = EpisodeStats(items_per_page=10)
    stats.add(np.array([10.0, 0.0]), np.array([1, 3]))  # 10 clicks over 4 pages
    stats.add(np.array([6.0]), np.array([2]))
    summary = stats.summary("eval")
    assert summary["eval/ctr"] == pytest.approx(16 / 60)
    assert summary["eval/episode_reward"] == pytest.approx(16 / 3)
    assert summary["eval/episodes"] == 3
    plain = EpisodeStats(None)
    plain.add(np.array([1.0]), np.array([5]))
    assert set(plain.summary("x")) == {"x/episode_reward", "x/episode_length", "x/episodes"}


def test_gym_adapter_gives_dense_final_obs_on_truncation() -> None:
    env = GymBatchedEnv("Pendulum-v1", num_envs=2)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (2, 3)
    for t in range(200):
        obs, _, terminated, truncated, info = env.step(np.zeros((2, 1), np.float32))
        assert info["final_obs"].shape == (2, 3)
        assert not terminated.any()
        assert truncated.all() == (t == 199)
    # Same-step autoreset: the returned obs is a fresh start, the final one is kept apart.
    assert not np.allclose(obs, info["final_obs"])


def test_gym_adapter_snapshot_restore_replays_exactly() -> None:
    env = GymBatchedEnv("Pendulum-v1", num_envs=2)
    env.reset(seed=1)
    actions = np.random.default_rng(0).uniform(-2, 2, (10, 2, 1)).astype(np.float32)
    state = env.snapshot()
    first = [env.step(a)[0] for a in actions]
    env.restore(state)
    env.step(-actions[0])  # a branch that must leave no trace
    env.restore(state)
    second = [env.step(a)[0] for a in actions]
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_make_batched_env_rejects_unknown_ids() -> None:
    cfg = EnvConfig(name="x", id="NoSuchEnv-v9", num_envs=1, kwargs={})
    with pytest.raises(ValueError, match="NoSuchEnv-v9"):
        make_batched_env(cfg, 1, "cpu")


def test_evaluation_runs_each_user_for_exactly_one_episode() -> None:
    cfg = compose_config(["algo=td3"])
    env = make_batched_env(OmegaConf.to_object(cfg.env), 32, "cpu")
    agent = make_agent(
        OmegaConf.to_object(cfg.algo), env.single_observation_space, env.single_action_space, "cpu", 0
    )
    first = evaluate(agent, env, seed=5, items_per_page=10)
    assert first == evaluate(agent, env, seed=5, items_per_page=10)
    assert first["eval/episodes"] == 32
    assert first["eval/ctr"] == pytest.approx(
        first["eval/episode_reward"] / (first["eval/episode_length"] * 10)
    )
    assert first != evaluate(agent, env, seed=6, items_per_page=10)


def test_trainer_runs_a_generic_gymnasium_env(tmp_path: Path) -> None:
    cfg = compose_config(
        [
            "env=pendulum",
            "algo=sac",
            "tracking.enabled=false",
            "trainer.total_steps=400",
            "trainer.eval_every=400",
            "trainer.eval_episodes=2",
            "trainer.log_every=200",
            "trainer.progress=none",
            "algo.learning_starts=200",
            "algo.batch_size=32",
        ]
    )
    result = run_experiment(cfg, tmp_path)
    assert result.key_metric == "eval/episode_reward"
    assert result.final_eval["eval/episode_length"] == 200
    assert "eval/ctr" not in result.final_eval
    assert result.history["train/episode_reward"][0][0] == 200  # first window: one full episode


def test_batched_users_share_one_update_schedule(tiny: list[str], tmp_path: Path) -> None:
    """N users per step: the budget counts user-steps, gradient_steps=-1 keeps one update per user-step."""
    cfg = compose_config(
        ["algo=ddpg", "env.num_envs=8", "algo.gradient_steps=-1", "tracking.enabled=false", *tiny]
    )
    result = run_experiment(cfg, tmp_path)
    assert result.steps == 400
    checkpoint = torch.load(tmp_path / "agent.pt", weights_only=True)
    assert checkpoint["n_updates"] == 400 - 96  # updates start once 100 user-steps (13 x 8 = 104) are in


def test_log_mode_prints_progress_lines(tiny: list[str], tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="macs_exp")
    cfg = compose_config(["tracking.enabled=false", *tiny, "trainer.progress=log"])
    run_experiment(cfg, tmp_path)
    lines = [r.getMessage() for r in caplog.records if " step " in r.getMessage()]
    assert any("step 400/400" in line and "eval/ctr=" in line for line in lines)
    assert len(lines) >= 4


def test_wide_batches_log_and_evaluate_on_the_configured_grid(tiny: list[str], tmp_path: Path) -> None:
    """64 users per step and windows of 100 user-steps: one log per window, not one per step."""
    cfg = compose_config(["env.num_envs=64", "tracking.enabled=false", *tiny, "trainer.total_steps=640"])
    result = run_experiment(cfg, tmp_path)
    assert [s for s, _ in result.history["perf/steps_per_s"]] == [128, 256, 320, 448, 512, 640]
    assert [s for s, _ in result.history["eval/ctr"]] == [0, 256, 448, 640]


def test_the_untrained_policy_can_be_the_best(tiny: list[str], tmp_path: Path, monkeypatch) -> None:
    """The step-0 evaluation competes for the best checkpoint like any other: here it scores
    highest, so best_agent.pt is the agent before its first update."""
    scores = iter([3.0, 1.0, 2.0])
    monkeypatch.setattr(
        "macs_exp.trainer.trainer.evaluate", lambda *args, **kwargs: {"eval/episode_reward": next(scores)}
    )
    cfg = compose_config(["algo=ddpg", "mode=baseline", "tracking.enabled=false", *tiny])
    result = run_experiment(cfg, tmp_path)
    assert result.best_eval == {"eval/episode_reward": 3.0, "step": 0.0}
    assert result.history["best/step"] == [(0, 0.0)]
    assert torch.load(tmp_path / "best_agent.pt", weights_only=True)["n_updates"] == 0
    assert torch.load(tmp_path / "agent.pt", weights_only=True)["n_updates"] > 0


def test_a_run_can_evaluate_once_after_training(tiny: list[str], tmp_path: Path) -> None:
    """``trainer.eval_at_start=false`` with ``trainer.eval_every=${trainer.total_steps}``: one
    evaluation, after training, the same as the last of a run that evaluates from step 0 on
    (the large datasets' Table I, where one evaluation costs minutes)."""

    def run(name: str, *overrides: str) -> dict[str, list[tuple[int, float]]]:
        cfg = compose_config(["algo=ddpg", "mode=baseline", "tracking.enabled=false", *tiny, *overrides])
        return run_experiment(cfg, tmp_path / name).history

    often = run("often", "trainer.eval_every=100")
    once = run("once", "trainer.eval_every=${trainer.total_steps}", "trainer.eval_at_start=false")
    assert [s for s, _ in often["eval/ctr"]] == [0, 100, 200, 300, 400]
    assert once["eval/ctr"] == often["eval/ctr"][-1:]
    assert once["eval/episode_reward"] == often["eval/episode_reward"][-1:]


def test_the_expert_keeps_its_evaluations_when_the_run_evaluates_less() -> None:
    """The expert is its best evaluation, so ``expert.eval_every`` keeps it (its cache entry) the
    same for runs that evaluate once; null follows the run's ``trainer.eval_every``."""
    default = compose_config(["mode=expert"])
    once = compose_config(
        [
            "mode=expert",
            "trainer.eval_every=${trainer.total_steps}",
            "trainer.eval_at_start=false",
            f"expert.eval_every={default.trainer.eval_every}",
        ]
    )
    assert expert_key(once) == expert_key(default)
    trains = expert_config(once).trainer
    assert (trains.eval_every, trains.eval_at_start) == (default.trainer.eval_every, True)
    follows = compose_config(["mode=expert", "trainer.eval_every=300"])
    assert expert_config(follows).trainer.eval_every == 300
    assert expert_key(follows) != expert_key(default)


def test_evaluating_leaves_training_unchanged(tiny: list[str], tmp_path: Path) -> None:
    """The random policy acts from its own random stream, evaluating included; evaluations use a
    frozen copy of it, so that how often a run evaluates (step 0 included) changes no training
    number."""

    def training(eval_every: int) -> dict[str, list[tuple[int, float]]]:
        # A reference policy has no learning settings to override.
        budget = [o for o in tiny if not o.startswith("algo.")]
        overrides = ["algo=random", "mode=baseline", "tracking.enabled=false", *budget]
        result = run_experiment(compose_config([*overrides, f"trainer.eval_every={eval_every}"]), tmp_path)
        return {k: v for k, v in result.history.items() if k.startswith("train/")}

    assert training(100) == training(400)
