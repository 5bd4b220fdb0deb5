"""MACS end to end: every mode with every algo on VirtualTaobao and Synthetic-v0, the expert
cache, trajectories untouched by counterfactual queries, and the ground-truth check."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY_MACS
from macs_exp.app import compose_config
from macs_exp.trainer.run import run_experiment

MACS_METRICS = {
    "cf/transitions",
    "cf/buffer_share",
    "cf/reward_gap",
    "macs/kl",
    "macs/reward",
    "macs/stage2_runs",
    "macs/actor_loss",
    "macs/critic_loss",
}


def runs_of(outputs: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("macs")
    return client, client.search_runs([experiment.experiment_id], order_by=["attribute.start_time ASC"])


def main_runs(outputs: Path) -> list:
    return [r for r in runs_of(outputs)[1] if not r.info.run_name.startswith("expert-")]


@pytest.mark.slow
@pytest.mark.parametrize("env", ["virtual_taobao", "synthetic"])
@pytest.mark.parametrize("mode", ["expert", "joint", "random_mask"])
@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac"])
def test_every_mode_runs_and_logs_its_metrics(
    algo: str, mode: str, env: str, tiny: list[str], tmp_path: Path
) -> None:
    overrides = [f"algo={algo}", f"mode={mode}", f"env={env}", *tiny, *TINY_MACS]
    overrides.append(f"expert.cache_dir={tmp_path / 'experts'}")
    run_experiment(compose_config(overrides), tmp_path / "run")
    (run,) = main_runs(tmp_path / "outputs")
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.tags["mode"] == mode
    assert metrics["cf/transitions"] > 0
    if mode == "random_mask":
        # One masked twin per real transition: half of everything stored.
        assert metrics["cf/transitions"] == 400 and metrics["cf/buffer_share"] == pytest.approx(0.5)
        return
    assert set(metrics) >= MACS_METRICS
    assert 0 < metrics["cf/buffer_share"] < 0.5
    assert metrics["macs/stage2_runs"] >= 1 and metrics["macs/kl"] >= 0
    if mode == "joint":
        assert "macs/threshold" in metrics
    if env == "synthetic":
        assert 0 <= metrics["macs/trivial_change_fraction"] <= 1


def test_expert_is_cached_linked_and_reused(tiny: list[str], tmp_path: Path) -> None:
    overrides = [
        "mode=expert",
        "env=synthetic",
        *tiny,
        *TINY_MACS,
        f"expert.cache_dir={tmp_path / 'experts'}",
    ]
    run_experiment(compose_config(overrides), tmp_path / "a")
    run_experiment(compose_config([*overrides, "seed=1"]), tmp_path / "b")
    _, runs = runs_of(tmp_path / "outputs")
    experts = [r for r in runs if r.info.run_name.startswith("expert-")]
    first, second = main_runs(tmp_path / "outputs")
    assert len(experts) == 1, "the second run must reuse the cached expert"
    expert = experts[0]
    assert expert.info.status == "FINISHED" and expert.data.tags["mode"] == "baseline"
    assert expert.data.tags["mlflow.parentRunId"] == first.info.run_id
    assert {"eval/episode_reward", "eval/ctr"} <= set(expert.data.metrics)
    assert expert.data.params["trainer.total_steps"] == "200"
    for run, cached in ((first, "false"), (second, "true")):
        assert run.data.tags["expert_run_id"] == expert.info.run_id
        assert run.data.tags["expert_cached"] == cached
    checkpoint = Path(first.data.tags["expert_checkpoint"])
    assert checkpoint.is_file() and checkpoint.parent.parent == tmp_path / "experts"

    # A user-supplied checkpoint skips the cache.
    run_experiment(compose_config([*overrides, f"expert.checkpoint={checkpoint}"]), tmp_path / "c")
    third = main_runs(tmp_path / "outputs")[-1]
    assert (third.data.tags["expert_cached"], third.data.tags["expert_run_id"]) == ("false", "")
    assert len([r for r in runs_of(tmp_path / "outputs")[1] if r.info.run_name.startswith("expert-")]) == 1


def test_missing_expert_checkpoint_fails_clearly(tiny: list[str], tmp_path: Path) -> None:
    overrides = ["mode=expert", *tiny, *TINY_MACS, f"expert.checkpoint={tmp_path / 'nope.pt'}"]
    with pytest.raises(FileNotFoundError, match=r"expert.checkpoint=.*nope.pt.*does not exist"):
        run_experiment(compose_config(overrides), tmp_path / "run")
    (run,) = main_runs(tmp_path / "outputs")
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_queries_leave_the_recommenders_real_experience_unchanged(tiny: list[str], tmp_path: Path) -> None:
    """With learning switched off the recommender acts from its own random stream, so the real
    episodes of a baseline run and of a run making counterfactual queries at every step must
    be identical."""
    frozen = [*tiny, *TINY_MACS, "algo.learning_starts=100000", f"expert.cache_dir={tmp_path / 'experts'}"]
    base = run_experiment(compose_config(["mode=baseline", *frozen]), tmp_path / "base")
    queried = run_experiment(compose_config(["mode=expert", *frozen]), tmp_path / "queried")
    assert queried.history["cf/transitions"][-1][1] > 0
    for key in ("train/episode_reward", "train/ctr", "train/episodes", "eval/ctr"):
        assert queried.history[key] == base.history[key], key


def test_invalid_macs_values_are_refused_by_name(tiny: list[str], tmp_path: Path) -> None:
    for override, key in (
        ("macs.kl_direction=sideways", "macs.kl_direction"),
        ("macs.kl_smoothing=0", "macs.kl_smoothing"),
        ("macs.algo.gamma=2", "macs.algo.gamma"),
        ("expert.algo.batch_size=0", "expert.algo.batch_size"),
    ):
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            run_experiment(compose_config([override, *tiny]), tmp_path / "run")
    with pytest.raises(ValueError, match=r"mode\.mask_prob"):
        run_experiment(compose_config(["mode=random_mask", "mode.mask_prob=1.5", *tiny]), tmp_path / "run")


def test_synthesis_agent_is_any_algo_option() -> None:
    cfg = compose_config(["algo@macs.algo=sac", "macs.algo.learning_rate=0.01"])
    assert (cfg.macs.algo.name, cfg.macs.algo.learning_rate, cfg.algo.name) == ("sac", 0.01, "ddpg")
    assert cfg.macs.algo.ent_coef == "auto"


@pytest.mark.parametrize("mode", ["joint", "expert"])
def test_same_seed_same_numbers_with_macs(mode: str, tiny: list[str], tmp_path: Path) -> None:
    """pi_c, its stage-2 env and the augmentation draws are all seeded from the run's seed."""
    overrides = [
        f"mode={mode}",
        "env=synthetic",
        "macs.augment_prob=0.5",
        "tracking.enabled=false",
        *tiny,
        *TINY_MACS,
        f"expert.cache_dir={tmp_path / 'experts'}",
    ]
    first = run_experiment(compose_config(overrides), tmp_path / "a")
    second = run_experiment(compose_config(overrides), tmp_path / "b")
    for key in ("train/critic_loss", "macs/kl", "cf/transitions", "eval/episode_reward"):
        assert first.history[key] == second.history[key], key
    other = run_experiment(compose_config([*overrides, "seed=1"]), tmp_path / "c")
    assert other.history["train/critic_loss"] != first.history["train/critic_loss"]
