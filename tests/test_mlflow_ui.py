"""What the MLflow UI is given to compare runs with: a model-training experiment, runs named after
what they train, the best evaluation (``best/*``) and curves that start at the untrained policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, MlflowStore
from macs_exp.app import compose_config
from macs_exp.tracking.config import TrackingConfig
from macs_exp.tracking.mlflow_tracker import ensure_experiment
from macs_exp.tracking.sweep import SweepContext
from macs_exp.trainer.job import run_sweep_job
from macs_exp.trainer.process import configure_torch
from macs_exp.trainer.run import run_experiment

KIND = "mlflow.experimentKind"
EVAL_METRICS = ("eval/ctr", "eval/episode_reward", "eval/episode_length", "eval/episodes")


def _tracking(store: MlflowStore, experiment: str) -> TrackingConfig:
    return TrackingConfig(
        enabled=True,
        experiment=experiment,
        dir=str(store.root),
        uri=store.uri,
        run_name=None,
        flush_every_s=10.0,
        ledger=None,
    )


def test_a_new_experiment_is_marked_model_training(mlflow_store: MlflowStore) -> None:
    experiment_id = ensure_experiment(_tracking(mlflow_store, "fresh"))
    assert mlflow_store.client.get_experiment(experiment_id).tags[KIND] == "custom_model_development"


def test_an_experiment_without_the_mark_gets_it_and_a_chosen_kind_stays(mlflow_store: MlflowStore) -> None:
    client = mlflow_store.client
    # As this project made them before, or as a user made one by hand.
    unmarked, chosen = mlflow_store.experiment("unmarked"), mlflow_store.experiment("chosen")
    client.set_experiment_tag(chosen, KIND, "genai_development")
    assert KIND not in client.get_experiment(unmarked).tags
    assert ensure_experiment(_tracking(mlflow_store, "unmarked")) == unmarked
    assert client.get_experiment(unmarked).tags[KIND] == "custom_model_development"
    ensure_experiment(_tracking(mlflow_store, "chosen"))
    assert client.get_experiment(chosen).tags[KIND] == "genai_development"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, Any]:
    """One TINY run, and its MLflow record."""
    configure_torch(1)
    root = tmp_path_factory.mktemp("ui")
    cfg = compose_config(["algo=td3", "mode=baseline", "seed=1", *TINY, f"tracking.dir={root / 'outputs'}"])
    run_experiment(cfg, root / "run")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("macs").experiment_id])
    return client, run


def test_a_run_is_named_after_what_it_trains(tiny_run: tuple[MlflowClient, Any]) -> None:
    _, run = tiny_run
    assert run.info.run_name == "td3-baseline-virtual_taobao-s1"


def test_every_evaluation_curve_starts_at_the_untrained_policy(tiny_run: tuple[MlflowClient, Any]) -> None:
    client, run = tiny_run
    for name in EVAL_METRICS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [0, 200, 400], name


def test_best_holds_the_best_evaluation_and_its_step(tiny_run: tuple[MlflowClient, Any]) -> None:
    client, run = tiny_run
    run_id, metrics = run.info.run_id, run.data.metrics
    key = [(m.step, m.value) for m in client.get_metric_history(run_id, "eval/ctr")]
    best_value = max(v for _, v in key)
    # The first evaluation to reach it: a later tie does not replace the best checkpoint.
    best_step = min(s for s, v in key if v == best_value)
    assert (metrics["best/eval/ctr"], metrics["best/step"]) == (best_value, best_step)
    assert {k for k in metrics if k.startswith("best/")} == {f"best/{k}" for k in (*EVAL_METRICS, "step")}
    for name in EVAL_METRICS:
        at_best = {m.step: m.value for m in client.get_metric_history(run_id, name)}[best_step]
        assert metrics[f"best/{name}"] == at_best, name
    # Logged at each evaluation that beat every earlier one, with that evaluation's step.
    records = [s for i, (s, v) in enumerate(key) if all(v > w for _, w in key[:i])]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "best/step")] == [
        (s, float(s)) for s in records
    ]


@pytest.mark.slow
def test_sweep_jobs_are_named_like_runs_also_when_they_fail(tmp_path: Path) -> None:
    """A job run as a sweep runs it (in a child process), and one failing before its run opens
    (recorded by the sweep's bookkeeping instead)."""
    overrides = [*TINY, f"tracking.dir={tmp_path / 'outputs'}", f"data.cache_dir={tmp_path / 'cache'}"]
    store = MlflowStore(tmp_path / "outputs")
    sweep = SweepContext("sw", store.sweep("macs", "sw"))
    jobs = [["algo=sac", "mode=baseline", "seed=3"], ["env=ml100k", f"env.data_dir={tmp_path / 'none'}"]]
    for num, job in enumerate(jobs):
        cfg = compose_config([*job, *overrides])
        run_sweep_job(cfg, str(tmp_path / str(num)), sweep, num, sweep.job_tags(num, job), None)
    runs = store.client.search_runs([store.experiment("macs")], "tags.role = 'run'")
    assert {r.data.tags["sweep_job"]: (r.info.run_name, r.info.status) for r in runs} == {
        "0": ("sac-baseline-virtual_taobao-s3", "FINISHED"),
        "1": ("ddpg-joint-ml100k-s0", "FAILED"),
    }
