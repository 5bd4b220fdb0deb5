"""End-to-end runs through the trainer, checked in the MLflow database they leave."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from macs_exp.agents.base import OffPolicyAgent
from macs_exp.app import compose_config
from macs_exp.trainer.run import run_experiment

REQUIRED_METRICS = {
    "train/episode_reward",
    "train/ctr",
    "eval/episode_reward",
    "eval/ctr",
    "train/actor_loss",
    "train/critic_loss",
    "perf/steps_per_s",
}


def client_for(outputs: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")


def only_run(outputs: Path):
    client = client_for(outputs)
    experiment = client.get_experiment_by_name("macs")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac"])
def test_run_logs_params_tags_metrics_and_artifacts(algo: str, tiny: list[str], tmp_path: Path) -> None:
    result = run_experiment(compose_config([f"algo={algo}", "mode=baseline", *tiny]), tmp_path / "run")
    client, run = only_run(tmp_path / "outputs")
    assert run.info.status == "FINISHED"
    assert run.data.tags["algo"] == algo
    assert (run.data.tags["mode"], run.data.tags["env"], run.data.tags["seed"]) == (
        "baseline",
        "virtual_taobao",
        "0",
    )
    assert "git_commit" in run.data.tags
    params = run.data.params
    assert params["algo.actor_learning_rate"] == "0.0001"
    assert params["trainer.total_steps"] == "400"
    assert params["env.id"] == "MACS/VirtualTaobao-v0"
    assert set(run.data.metrics) >= REQUIRED_METRICS
    # step = user-steps: the untrained policy's evaluation (0), two more (200, 400) and four
    # training windows.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/ctr")] == [0, 200, 400]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "perf/steps_per_s")] == [
        100,
        200,
        300,
        400,
    ]
    assert run.data.metrics["eval/ctr"] == pytest.approx(result.final_eval["eval/ctr"])
    assert 0.0 <= run.data.metrics["eval/ctr"] <= 1.0
    assert {
        "config.yaml",
        "learning_curve.png",
        "checkpoints/agent.pt",
        "checkpoints/best_agent.pt",
    } <= artifact_paths(client, run.info.run_id)
    config_text = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
    assert f"name: {algo}" in config_text


def test_same_seed_same_numbers(tiny: list[str], tmp_path: Path) -> None:
    def history(seed: int, where: str) -> dict:
        cfg = compose_config(["algo=td3", f"seed={seed}", "tracking.enabled=false", *tiny])
        result = run_experiment(cfg, tmp_path / where)
        return {k: v for k, v in result.history.items() if not k.startswith("perf/")}

    first = history(0, "a")
    assert first == history(0, "b")
    assert first != history(1, "c")


def test_tracking_disabled_writes_no_database(tiny: list[str], tmp_path: Path) -> None:
    run_experiment(compose_config(["tracking.enabled=false", *tiny]), tmp_path / "run")
    assert not (tmp_path / "outputs").exists()
    assert (tmp_path / "run" / "agent.pt").exists()


def test_crash_marks_run_failed_with_traceback(tiny: list[str], tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    original = OffPolicyAgent.update

    def flaky(self, gradient_steps: int):
        calls["n"] += 1
        if calls["n"] == 250:
            raise RuntimeError("simulated crash")
        return original(self, gradient_steps)

    monkeypatch.setattr(OffPolicyAgent, "update", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(compose_config(["algo=ddpg", *tiny]), tmp_path / "run")
    client, run = only_run(tmp_path / "outputs")
    assert run.info.status == "FAILED"
    traceback_file = client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))
    assert "simulated crash" in Path(traceback_file).read_text()
    # What was measured before the crash is kept.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/ctr")] == [0, 200]


def test_nan_loss_fails_the_run_with_a_clear_message(tiny: list[str], tmp_path: Path) -> None:
    with pytest.raises(Exception, match="became nan") as err:
        run_experiment(compose_config(["algo=td3", "algo.learning_rate=1e30", *tiny]), tmp_path / "run")
    assert "algo.learning_rate" in str(err.value)
    _, run = only_run(tmp_path / "outputs")
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_command_line_run(tmp_path: Path) -> None:
    """`python -m macs_exp algo=sac mode=joint` from a fresh directory leaves outputs/mlflow.db there."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "macs_exp",
            "algo=sac",
            "mode=joint",
            "macs.threshold_frac=0",
            "macs.threshold_window=5",
            "macs.stage2_steps=50",
            "trainer.total_steps=200",
            "trainer.eval_every=200",
            "trainer.eval_episodes=8",
            "trainer.log_every=100",
            "algo.learning_starts=50",
            "algo.batch_size=16",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _client, run = only_run(tmp_path / "outputs")
    assert run.info.status == "FINISHED" and run.data.tags["algo"] == "sac"
    assert run.data.metrics["macs/stage2_runs"] >= 1 and run.data.metrics["cf/transitions"] > 0
    assert list((tmp_path / "outputs" / "runs").glob("*/*_sac_joint_virtual_taobao_s0/agent.pt"))
