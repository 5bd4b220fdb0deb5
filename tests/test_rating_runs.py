"""Rating datasets end to end: generated files in the raw formats, through the trainer, to the
Table I metrics in MLflow (never real data: the datasets' terms forbid redistributing them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from macs_exp.app import compose_config
from macs_exp.data import DataError
from macs_exp.trainer.run import run_experiment

TABLE_I = {
    "test/precision",
    "test/recall",
    "test/accuracy",
    "test/ndcg",
    "test/hit_rate",
    "eval/episode_reward",
}


def ml100k_files(folder: Path, users: int = 30, items: int = 60, per_user: int = 25) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    lines = []
    for u in range(1, users + 1):
        # Popular items are rated more often and higher, so popularity is informative.
        chosen = rng.choice(
            items, size=per_user, replace=False, p=np.linspace(2, 1, items) / np.linspace(2, 1, items).sum()
        )
        for k, i in enumerate(chosen):
            rating = int(np.clip(round(5 - 3 * i / items + rng.normal(0, 0.8)), 1, 5))
            lines.append(f"{u}\t{i + 1}\t{rating}\t{880000000 + 1000 * u + k}")
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    return folder


def bookcrossing_files(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    rows = ['"User-ID";"ISBN";"Book-Rating"']
    for u in range(20):
        for i in rng.choice(40, size=15, replace=False):
            rows.append(f'"{1000 + u}";"03930{i:05d}";"{int(rng.integers(0, 11))}"')
    (folder / "BX-Book-Ratings.csv").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    return folder


def only_run(outputs: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("macs").experiment_id])
    return run


RATING_TINY = [
    "trainer.total_steps=300",
    "trainer.eval_every=150",
    "trainer.log_every=100",
    "trainer.progress=none",
    "algo.learning_starts=50",
    "algo.batch_size=16",
    "algo.buffer_size=5000",
]


@pytest.mark.parametrize("algo", ["ddpg", "random", "popular"])
def test_ml100k_runs_and_logs_table_i(algo: str, tmp_path: Path) -> None:
    data = ml100k_files(tmp_path / "ml-100k")
    overrides = [
        "env=ml100k",
        f"env.data_dir={data}",
        f"algo={algo}",
        "mode=baseline",
        f"tracking.dir={tmp_path / 'outputs'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *(RATING_TINY if algo == "ddpg" else RATING_TINY[:4]),
    ]
    result = run_experiment(compose_config(overrides), tmp_path / "run")
    run = only_run(tmp_path / "outputs")
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) >= TABLE_I
    assert result.key_metric == "test/precision"
    # Every user with a test rating is evaluated, each for exactly 10 recommendations.
    assert run.data.metrics["test/users"] == 30 and run.data.metrics["eval/episode_length"] == 10
    # With binary rewards an episode's reward is the number of hits: 10 x precision.
    assert run.data.metrics["eval/episode_reward"] == pytest.approx(10 * run.data.metrics["test/precision"])
    assert run.data.params["data.stats.rows_read"] == "750.0"


def test_popular_beats_random_where_popularity_is_informative(tmp_path: Path) -> None:
    data = ml100k_files(tmp_path / "ml-100k")
    precision = {}
    for algo in ("random", "popular"):
        cfg = compose_config(
            [
                "env=ml100k",
                f"env.data_dir={data}",
                f"algo={algo}",
                "mode=baseline",
                "tracking.enabled=false",
                f"data.cache_dir={tmp_path / 'cache'}",
                *RATING_TINY[:4],
            ]
        )
        precision[algo] = run_experiment(cfg, tmp_path / algo).final_eval["test/precision"]
    assert precision["popular"] > 1.5 * precision["random"], precision


@pytest.mark.slow
def test_macs_runs_on_a_rating_env(tmp_path: Path) -> None:
    data = ml100k_files(tmp_path / "ml-100k")
    overrides = [
        "env=ml100k",
        f"env.data_dir={data}",
        "mode=joint",
        "macs.threshold_frac=0",
        "macs.threshold_window=3",
        "macs.stage2_steps=40",
        "macs.algo.learning_starts=20",
        "macs.algo.batch_size=16",
        f"tracking.dir={tmp_path / 'outputs'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *RATING_TINY,
    ]
    run_experiment(compose_config(overrides), tmp_path / "run")
    run = only_run(tmp_path / "outputs")
    assert run.data.metrics["cf/transitions"] > 0 and run.data.metrics["macs/stage2_runs"] >= 1


def test_bookcrossing_in_its_original_format_runs(tmp_path: Path) -> None:
    data = bookcrossing_files(tmp_path / "bx")
    overrides = [
        "env=bookcrossing",
        f"env.data_dir={data}",
        "env.min_user_ratings=2",
        "env.min_item_ratings=2",
        "algo=popular",
        "mode=baseline",
        f"tracking.dir={tmp_path / 'outputs'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *RATING_TINY[:4],
    ]
    run_experiment(compose_config(overrides), tmp_path / "run")
    run = only_run(tmp_path / "outputs")
    assert set(run.data.metrics) >= TABLE_I
    assert float(run.data.params["data.stats.implicit_dropped"]) > 0


def test_missing_data_fails_before_a_run_opens(tmp_path: Path) -> None:
    overrides = ["env=ml100k", f"env.data_dir={tmp_path / 'nowhere'}", f"tracking.dir={tmp_path / 'outputs'}"]
    with pytest.raises(DataError, match=r"nowhere.*u\.data.*scripts/download_data\.py"):
        run_experiment(compose_config(overrides), tmp_path / "run")
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_reference_policies_refuse_augmenting_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"algo=popular is invalid.*reference policy.*mode=baseline"):
        run_experiment(compose_config(["algo=popular", "mode=joint"]), tmp_path / "run")
