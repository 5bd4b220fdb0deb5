"""Table I from a store with known numbers: statistics, marks, holes and the script's outputs."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import MlflowStore, run_script
from macs_exp.reports.cost import mean_env_steps
from macs_exp.reports.runs import load_runs
from macs_exp.reports.table1 import CSV_COLUMNS, build_table, to_latex, to_markdown, write_tables

EXPERIMENT = "table1"
SWEEP = "s1"


def rating(recall: float) -> dict[str, float]:
    return {"test/recall": recall, "test/precision": recall / 2, "test/accuracy": recall + 0.5}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> MlflowStore:
    """ml100k has seeds 0-2, synthetic seeds 0-2 and virtual_taobao only seed 0. Shared by the
    module because filling SQLite takes seconds; no test changes what the table reads."""
    s = MlflowStore(tmp_path_factory.mktemp("store"))
    s.sweep(EXPERIMENT, SWEEP)

    def run(algo: str, mode: str, env: str, seed: int, metrics: dict | None = None, status: str = "FINISHED"):
        s.run(
            EXPERIMENT,
            algo=algo,
            mode=mode,
            env=env,
            seed=seed,
            metrics=metrics,
            status=status,
            sweep_id=SWEEP,
        )

    for seed, recall in enumerate([0.1, 0.2, 0.3]):
        run("ddpg", "baseline", "ml100k", seed, rating(recall))
    run("ddpg", "expert", "ml100k", 0, rating(0.3))
    run("ddpg", "expert", "ml100k", 1, rating(0.4))
    run("ddpg", "expert", "ml100k", 2, rating(0.9))
    time.sleep(0.01)  # start times have millisecond resolution; the rerun must be later
    run("ddpg", "expert", "ml100k", 2, rating(0.5))
    run("ddpg", "expert", "ml100k", 0, status="FAILED")  # a later failure does not undo a finished seed
    run("ddpg", "joint", "ml100k", 0, rating(0.25))
    run("ddpg", "joint", "ml100k", 1, rating(0.35))
    run("ddpg", "joint", "ml100k", 2, status="FAILED")
    # CTRL names its own row, after MACS's.
    for seed, recall in enumerate([0.15, 0.25, 0.35]):
        run("ddpg", "ctrl", "ml100k", seed, rating(recall))
    for seed, recall in enumerate([0.2, 0.3, 0.4]):
        run("sac", "baseline", "ml100k", seed, rating(recall))
    run("sac", "expert", "ml100k", 0, status="RUNNING")
    # TPGR, the discrete recommender, comes after the actor-critics and before the references.
    for seed, recall in enumerate([0.05, 0.1, 0.15]):
        run("tpgr", "baseline", "ml100k", seed, rating(recall))
        run("tpgr", "ctrl", "ml100k", seed, rating(recall + 0.01))
        # PGPR, the graph walker, after TPGR.
        run("pgpr", "joint", "ml100k", seed, rating(recall + 0.02))
    for seed in range(3):
        run("td3", "baseline", "ml100k", seed, status="KILLED" if seed else "FAILED")
        run("random", "baseline", "ml100k", seed, rating(0.01))
    run("popular", "baseline", "ml100k", 0, rating(0.05))

    for seed, (base, joint) in enumerate(zip([4.0, 5.0, 6.0], [1.0, 2.0, 3.0], strict=True)):
        run("ddpg", "baseline", "synthetic", seed, {"eval/episode_reward": base})
        run("ddpg", "joint", "synthetic", seed, {"eval/episode_reward": joint})
    run("ddpg", "baseline", "virtual_taobao", 0, {"eval/ctr": 0.5, "eval/episode_reward": 7.0})
    return s


@pytest.fixture(scope="module")
def table(store: MlflowStore) -> pd.DataFrame:
    return build_table(load_runs(store.client, EXPERIMENT))


def cell(table: pd.DataFrame, row: str, env: str, metric: str) -> pd.Series:
    found = table[(table["row"] == row) & (table["env"] == env) & (table["metric"] == metric)]
    assert len(found) == 1, (row, env, metric)
    return found.iloc[0]


def test_rows_and_columns_follow_the_paper_order(table: pd.DataFrame) -> None:
    rows = list(dict.fromkeys(table["row"]))
    assert rows == [
        "DDPG",
        "DDPG-E",
        "DDPG-J",
        "DDPG-CTRL",
        "SAC",
        "SAC-E",
        "SAC-J",
        "SAC-CTRL",
        "TD3",
        "TD3-E",
        "TD3-J",
        "TD3-CTRL",
        "TPGR",
        "TPGR-E",
        "TPGR-J",
        "TPGR-CTRL",
        "PGPR",
        "PGPR-E",
        "PGPR-J",
        "PGPR-CTRL",
        "Random",
        "Popular",
    ]
    columns = list(dict.fromkeys(zip(table["env"], table["metric"], strict=True)))
    assert columns == [
        ("ml100k", "test/recall"),
        ("ml100k", "test/precision"),
        ("ml100k", "test/accuracy"),
        ("synthetic", "eval/episode_reward"),
        ("virtual_taobao", "eval/ctr"),
    ]


def test_mean_and_sample_std_over_the_latest_finished_runs(table: pd.DataFrame) -> None:
    base = cell(table, "DDPG", "ml100k", "test/recall")
    assert (base["mean"], base["std"], base["n"], base["expected"]) == (
        pytest.approx(0.2),
        pytest.approx(0.1),
        3,
        3,
    )
    assert base["status"] == "complete"
    # Seed 2's rerun (0.5) replaces its first run (0.9); seed 0's later failure changes nothing.
    expert = cell(table, "DDPG-E", "ml100k", "test/recall")
    assert (expert["mean"], expert["std"], expert["n"], expert["failed"]) == (
        pytest.approx(0.4),
        pytest.approx(0.1),
        3,
        0,
    )
    assert cell(table, "DDPG-E", "ml100k", "test/precision")["mean"] == pytest.approx(0.2)
    popular = cell(table, "Popular", "ml100k", "test/recall")
    assert (popular["mean"], popular["n"], popular["expected"], popular["status"]) == (0.05, 1, 3, "partial")
    assert math.isnan(popular["std"])


def test_holes_are_counted_per_cell(table: pd.DataFrame) -> None:
    joint = cell(table, "DDPG-J", "ml100k", "test/recall")
    assert (joint["n"], joint["failed"], joint["running"], joint["status"]) == (2, 1, 0, "partial")
    td3 = cell(table, "TD3", "ml100k", "test/accuracy")
    assert (td3["n"], td3["failed"], td3["status"]) == (0, 3, "failed")
    sac_expert = cell(table, "SAC-E", "ml100k", "test/recall")
    assert (sac_expert["n"], sac_expert["running"], sac_expert["status"]) == (0, 1, "running")
    assert cell(table, "SAC-J", "ml100k", "test/recall")["status"] == "missing"
    assert cell(table, "Random", "synthetic", "eval/episode_reward")["status"] == "missing"
    taobao = cell(table, "DDPG", "virtual_taobao", "eval/ctr")
    assert (taobao["mean"], taobao["n"], taobao["expected"], taobao["status"]) == (0.5, 1, 1, "complete")


def test_best_and_tied_second_marks_per_column(table: pd.DataFrame) -> None:
    recall = table[table["metric"] == "test/recall"].set_index("row")["mark"]
    assert recall["DDPG-E"] == "best"
    assert recall["DDPG-J"] == recall["SAC"] == "second"  # both have mean 0.3
    assert set(recall.drop(["DDPG-E", "DDPG-J", "SAC"])) == {""}
    reward = table[table["env"] == "synthetic"].set_index("row")["mark"]
    assert (reward["DDPG"], reward["DDPG-J"]) == ("best", "second")


def test_improvement_and_welch_p_value_against_the_baseline(table: pd.DataFrame) -> None:
    joint = cell(table, "DDPG-J", "synthetic", "eval/episode_reward")
    assert joint["improvement_pct"] == pytest.approx(-60.0)
    # Welch's t-test of [1, 2, 3] against [4, 5, 6]: t = -3/sqrt(2/3), df = 4.
    assert joint["p_value"] == pytest.approx(0.021311641128756723, rel=1e-12)
    expert = cell(table, "DDPG-E", "ml100k", "test/recall")
    assert expert["improvement_pct"] == pytest.approx(100.0)
    assert expert["p_value"] == pytest.approx(0.07048399691021993, rel=1e-9)
    assert math.isnan(cell(table, "DDPG", "ml100k", "test/recall")["improvement_pct"])


def test_markdown_shows_numbers_marks_and_holes(table: pd.DataFrame) -> None:
    lines = {
        line.split(" | ")[0].strip("| "): line
        for line in to_markdown(table).splitlines()
        if line.startswith("|")
    }
    # ml100k's runs predate env.candidates, so they ran the catalog protocol, and the header says so;
    # synthetic is no rating dataset and has no protocol.
    assert lines["Method"] == (
        "| Method | ml100k (catalog) Recall | ml100k (catalog) Precision | ml100k (catalog) Accuracy "
        "| synthetic Reward | virtual_taobao CTR |"
    )
    assert "| 0.2000 ± 0.1000 (n=3) |" in lines["DDPG"]
    assert "| **0.4000 ± 0.1000** (n=3) +100.0% (p=0.070) |" in lines["DDPG-E"]
    assert "| 0.3000 ± 0.0707* (n=2/3, 1 failed) +50.0% (p=0.285) |" in lines["DDPG-J"]
    assert "| *2.00 ± 1.00* (n=3)" not in lines["DDPG-J"]
    assert "| 2.00 ± 1.00* (n=3) -60.0% (p=0.021) |" in lines["DDPG-J"]
    assert lines["SAC-E"].startswith(
        "| SAC-E | running (1) | running (1) | running (1) | missing | missing |"
    )
    assert lines["TD3"].startswith("| TD3 | failed (3) | failed (3) | failed (3) | missing |")
    assert "| 0.0500 ± – (n=1/3, 2 missing) |" in lines["Popular"]


def test_latex_marks_and_escapes(table: pd.DataFrame) -> None:
    tex = to_latex(table)
    assert tex.startswith("\\begin{tabular}{lccccc}\n\\toprule\n")
    assert (
        "\\multicolumn{3}{c}{ml100k (catalog)} & \\multicolumn{1}{c}{synthetic} & "
        "\\multicolumn{1}{c}{virtual\\_taobao}" in tex
    )
    assert "DDPG-E & \\textbf{0.4000 $\\pm$ 0.1000} &" in tex
    assert "2.00 $\\pm$ 1.00$^{*}$" in tex
    assert "TD3 & -- & -- & -- & -- & -- \\\\" in tex
    assert "\\bottomrule\n\\end{tabular}" in tex


def test_files_are_written_with_the_long_csv(table: pd.DataFrame, tmp_path: Path) -> None:
    paths = write_tables(table, tmp_path / "tables", "table1-s1", "Table I")
    assert [p.name for p in paths] == ["table1-s1.md", "table1-s1.csv", "table1-s1.tex"]
    csv = pd.read_csv(paths[1], keep_default_na=False)
    assert tuple(csv.columns) == CSV_COLUMNS
    assert len(csv) == 22 * 5
    joint = csv[(csv["row"] == "DDPG-J") & (csv["metric"] == "test/recall")].iloc[0]
    assert (joint["n"], joint["expected"], joint["failed"], joint["status"], joint["mark"]) == (
        2,
        3,
        1,
        "partial",
        "second",
    )
    assert float(joint["improvement_pct"]) == pytest.approx(50.0)
    td3 = csv[(csv["row"] == "TD3") & (csv["metric"] == "test/recall")].iloc[0]
    assert (td3["mean"], td3["failed"], td3["status"], td3["mark"]) == ("", 3, "failed", "")
    assert csv.loc[(csv["row"] == "SAC-J") & (csv["env"] == "ml100k"), "status"].tolist() == ["missing"] * 3
    assert (
        paths[0]
        .read_text()
        .rstrip()
        .endswith("cells: 27 complete, 6 partial, 3 failed, 3 running, 71 missing")
    )


@pytest.mark.slow
def test_script_prints_writes_and_logs_to_the_sweep_parent(store: MlflowStore, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    proc = run_script(
        "table1.py", "--experiment", EXPERIMENT, "--tracking-uri", store.uri, "--out-dir", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "## Table I: table1"
    assert lines[-1] == "cells: 27 complete, 6 partial, 3 failed, 3 running, 71 missing"
    assert any(line.startswith("| DDPG-E | **0.4000 ± 0.1000** (n=3) +100.0% (p=0.070) |") for line in lines)
    assert sorted(p.name for p in out.iterdir()) == ["table1.csv", "table1.md", "table1.tex"]

    parent = store.client.search_runs(
        [store.client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.role = 'sweep'"
    )[0].info.run_id
    assert f"logged to tables/ of sweep parent run(s) {parent}" in lines
    logged = sorted(a.path for a in store.client.list_artifacts(parent, "tables"))
    assert logged == ["tables/table1.csv", "tables/table1.md", "tables/table1.tex"]


@pytest.mark.slow
def test_script_names_files_after_the_sweeps(store: MlflowStore, tmp_path: Path) -> None:
    args = ["--experiment", EXPERIMENT, "--sweep-id", SWEEP, "--tracking-uri", store.uri, "--no-log"]
    proc = run_script("table1.py", *args, "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "table1-s1.md").is_file()
    assert "logged" not in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "sweep", "message"),
    [("nope", [], "no MLflow experiment named 'nope'"), (EXPERIMENT, ["other"], "has no training runs")],
)
def test_script_exits_2_without_runs(
    store: MlflowStore, tmp_path: Path, experiment: str, sweep: list[str], message: str
) -> None:
    sweep_args = [a for s in sweep for a in ("--sweep-id", s)]
    proc = run_script(
        "table1.py",
        "--experiment",
        experiment,
        *sweep_args,
        "--tracking-uri",
        store.uri,
        "--out-dir",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "out").exists()


COST = "cost"


@pytest.fixture(scope="module")
def cost_store(tmp_path_factory: pytest.TempPathFactory) -> MlflowStore:
    """DDPG on synthetic, 3 seeds per row: plain baselines from before ``trainer.budget`` (no
    such param), cost-matched baselines (``env_steps``), -J runs and -E runs one of which ran
    twice as long. Seeds, run names and paths differ per run, as the trainer writes them."""
    s = MlflowStore(tmp_path_factory.mktemp("cost"))

    def run(mode: str, seed: int, reward: float, env_steps: float, status: str = "FINISHED", **params: str):
        s.run(
            COST, algo="ddpg", mode=mode, env="synthetic", seed=seed, status=status,
            metrics={"eval/episode_reward": reward, "perf/env_steps": env_steps},
            params={"seed": str(seed), "tracking.run_name": f"{mode}-{seed}", "data.cache_dir": f"/m{seed}",
                    "trainer.total_steps": "1000", **params},
        )  # fmt: skip

    for seed in range(3):
        run("baseline", seed, 4.0 + seed, 1000)
        run(
            "baseline",
            seed,
            2.0 + seed,
            3000,
            **{"trainer.budget": "env_steps", "trainer.total_steps": "3000"},
        )
        run("joint", seed, 1.0 + seed, 2900 + 100 * seed, **{"trainer.budget": "user_steps"})
        run("expert", seed, 3.0 + seed, 2000, **({"trainer.total_steps": "2000"} if seed == 2 else {}))
    run("joint", 0, 0.0, 10**6, status="FAILED")  # neither in the table nor in the budget
    return s


@pytest.fixture(scope="module")
def cost_table(cost_store: MlflowStore) -> tuple[pd.DataFrame, list[str]]:
    warnings: list[str] = []
    return build_table(load_runs(cost_store.client, COST), report=warnings.append), warnings


def test_the_cost_matched_baseline_is_a_row_of_its_own(cost_table: tuple[pd.DataFrame, list[str]]) -> None:
    table, _ = cost_table
    assert list(dict.fromkeys(table["row"]))[:4] == ["DDPG", "DDPG (=cost)", "DDPG-E", "DDPG-J"]
    base = cell(table, "DDPG", "synthetic", "eval/episode_reward")
    cost = cell(table, "DDPG (=cost)", "synthetic", "eval/episode_reward")
    # Never averaged together: 4, 5, 6 and 2, 3, 4.
    assert (base["mean"], base["n"], base["budget"], base["env_steps"]) == (5.0, 3, "user_steps", 1000.0)
    assert (cost["mean"], cost["n"], cost["budget"], cost["env_steps"]) == (3.0, 3, "env_steps", 3000.0)
    assert math.isnan(cost["p_value"]) and math.isnan(cost["p_value_cost"])


def test_variants_are_tested_against_both_baselines(cost_table: tuple[pd.DataFrame, list[str]]) -> None:
    table, _ = cost_table
    joint = cell(table, "DDPG-J", "synthetic", "eval/episode_reward")
    assert joint["env_steps"] == 3000.0
    assert joint["improvement_pct"] == pytest.approx(-60.0)
    assert joint["p_value"] == pytest.approx(0.021311641128756713, rel=1e-9)
    # [1, 2, 3] against [2, 3, 4]: t = -1/sqrt(2/3), df = 4.
    assert joint["improvement_cost_pct"] == pytest.approx(-100 / 3)
    assert joint["p_value_cost"] == pytest.approx(0.28786413472669053, rel=1e-9)
    line = next(x for x in to_markdown(table).splitlines() if x.startswith("| DDPG-J |"))
    assert line == "| DDPG-J | 2.00 ± 1.00 (n=3) -60.0% (p=0.021); =cost -33.3% (p=0.288) | 3000 |"
    assert to_markdown(table).splitlines()[2] == "| Method | synthetic Reward | synthetic env_steps |"


def test_a_cell_of_differing_configs_is_named(cost_table: tuple[pd.DataFrame, list[str]]) -> None:
    _, warnings = cost_table
    # Seed, run name and cache dir differ in every cell; only -E's total_steps is a real difference.
    assert warnings == [
        "DDPG-E on synthetic averages runs whose config differs: "
        "trainer.total_steps=1000 (2 runs), 2000 (1 run)"
    ]


def test_cost_columns_in_the_csv_and_none_without_cost_runs(
    cost_table: tuple[pd.DataFrame, list[str]], table: pd.DataFrame, tmp_path: Path
) -> None:
    paths = write_tables(cost_table[0], tmp_path, "cost", "Table I")
    csv = pd.read_csv(paths[1])
    assert tuple(csv.columns[15:19]) == ("budget", "env_steps", "improvement_cost_pct", "p_value_cost")
    assert csv.set_index("row").loc["DDPG (=cost)", "env_steps"] == 3000.0
    # Runs from before perf/env_steps: the markdown has no env_steps column and no =cost text.
    markdown = to_markdown(table)
    assert "env_steps" not in markdown and "=cost" not in markdown


def test_mean_env_steps_of_the_finished_macs_runs(cost_store: MlflowStore) -> None:
    runs = load_runs(cost_store.client, COST)
    # (2000 * 3 + 2900 + 3000 + 3100) / 6 = 2500
    assert mean_env_steps(runs) == 2500
    assert mean_env_steps(runs, ["joint"], "ddpg") == 3000
    with pytest.raises(LookupError, match="no FINISHED sac runs in mode expert/joint logged perf/env_steps"):
        mean_env_steps(runs, algo="sac")
    # One budget per dataset: the runs of another env are left out.
    assert mean_env_steps(runs, ["joint"], env="synthetic") == 3000
    with pytest.raises(LookupError, match="no FINISHED runs on ml100k in mode"):
        mean_env_steps(runs, env="ml100k")


@pytest.mark.slow
def test_cost_budget_prints_one_integer_or_fails_cleanly(cost_store: MlflowStore) -> None:
    ok = run_script(
        "cost_budget.py", "--experiment", COST, "--tracking-uri", cost_store.uri, "--modes", "expert"
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "2000\n", "")
    none = run_script(
        "cost_budget.py", "--experiment", COST, "--tracking-uri", cost_store.uri, "--algo", "sac"
    )
    assert (none.returncode, none.stdout) == (2, "")
    assert none.stderr.startswith("error: no FINISHED sac runs") and none.stderr.count("\n") == 1


@pytest.mark.slow
def test_macs_runs_under_eq9_replay_are_a_row_of_their_own(mlflow_store: MlflowStore) -> None:
    """-J under macs.replay=eq9 is another method than -J: never averaged with it, compared with
    the same baseline. A baseline run's macs.replay is irrelevant (no pi_c) and changes nothing."""

    def run(mode: str, seed: int, reward: float, replay: str) -> None:
        metrics = {"eval/episode_reward": reward, **({"macs/stage2_runs": 1.0} if mode != "baseline" else {})}
        mlflow_store.run(
            "replay", algo="ddpg", mode=mode, env="synthetic", seed=seed, metrics=metrics,
            params={"seed": str(seed), "macs.replay": replay},
        )  # fmt: skip

    for seed in range(2):
        run("baseline", seed, 4.0 + seed, "eq9" if seed else "algorithm2")
        run("joint", seed, 5.0 + seed, "algorithm2")
        run("joint", seed, 7.0 + seed, "eq9")
    table = build_table(load_runs(mlflow_store.client, "replay"))
    assert list(dict.fromkeys(table["row"])) == ["DDPG", "DDPG-J", "DDPG-J (eq9)"]
    assert cell(table, "DDPG", "synthetic", "eval/episode_reward")["n"] == 2
    eq9 = cell(table, "DDPG-J (eq9)", "synthetic", "eval/episode_reward")
    assert (eq9["mean"], eq9["n"], eq9["improvement_pct"]) == (7.5, 2, pytest.approx(3.0 / 4.5 * 100))
    assert cell(table, "DDPG-J", "synthetic", "eval/episode_reward")["mean"] == 5.5


@pytest.fixture(scope="module")
def protocol_runs() -> pd.DataFrame:
    """DDPG on ml100k under both protocols from one folder, one run from before env.candidates
    (counts as catalog), and rated runs from a second folder. Built in the shape ``load_runs``
    returns (a param a run lacks is NaN) rather than through MLflow, which takes seconds."""
    rows: list[dict[str, object]] = []

    def run(mode: str, seed: int, recall: float, folder: str, protocol: str | None, steps: float) -> None:
        params = {"seed": str(seed), "env.data_dir": folder}
        if protocol is not None:
            params["env.candidates"] = protocol
        metrics = {**rating(recall), "perf/env_steps": steps}
        start = pd.Timestamp(1_700_000_000_000 + len(rows), unit="ms", tz="UTC")
        rows.append(
            {"run_id": f"r{len(rows)}", "status": "FINISHED", "sweep_id": "", "algo": "ddpg", "mode": mode,
             "env": "ml100k", "seed": seed, "start_time": start, "end_time": start,
             **{f"metric:{k}": v for k, v in metrics.items()}, **{f"param:{k}": v for k, v in params.items()}}
        )  # fmt: skip

    data, other = "/data/ml-100k", "/scratch/ml-100k-v2"
    run("baseline", 0, 0.1, data, "catalog", 100)
    run("baseline", 1, 0.2, data, "catalog", 100)
    run("baseline", 2, 0.3, data, None, 100)  # an older version's run: the catalog protocol
    run("joint", 0, 0.4, data, "catalog", 300)
    run("baseline", 0, 0.5, data, "rated", 200)
    run("baseline", 1, 0.7, data, "rated", 200)
    run("joint", 0, 0.6, data, "rated", 500)
    run("baseline", 0, 0.9, other, "rated", 200)
    return pd.DataFrame(rows)


def column_cell(table: pd.DataFrame, row: str, column: str, metric: str = "test/recall") -> pd.Series:
    found = table[(table["row"] == row) & (table["column"] == column) & (table["metric"] == metric)]
    assert len(found) == 1, (row, column, metric)
    return found.iloc[0]


def test_protocols_and_data_folders_never_share_a_cell(protocol_runs: pd.DataFrame) -> None:
    warnings: list[str] = []
    table = build_table(protocol_runs, report=warnings.append)
    assert warnings == []  # env.candidates and env.data_dir differ between columns, not within one
    catalog = column_cell(table, "DDPG", "ml100k (catalog)")
    assert (catalog["mean"], catalog["n"], catalog["expected"]) == (pytest.approx(0.2), 3, 3)
    assert (catalog["protocol"], catalog["data_dir"]) == ("catalog", "/data/ml-100k")
    rated = column_cell(table, "DDPG", "ml100k (rated, ml-100k)")
    assert (rated["mean"], rated["n"], rated["expected"]) == (pytest.approx(0.6), 2, 2)
    other = column_cell(table, "DDPG", "ml100k (rated, ml-100k-v2)")
    assert (other["mean"], other["n"], other["expected"], other["data_dir"]) == (
        0.9,
        1,
        1,
        "/scratch/ml-100k-v2",
    )
    # Each -J cell is compared with the baseline of its own column.
    assert column_cell(table, "DDPG-J", "ml100k (catalog)")["improvement_pct"] == pytest.approx(100.0)
    assert column_cell(table, "DDPG-J", "ml100k (rated, ml-100k)")["improvement_pct"] == pytest.approx(0.0)
    assert column_cell(table, "DDPG-J", "ml100k (rated, ml-100k-v2)")["status"] == "missing"
    # Marks are per column: every column's DDPG-J or DDPG is best there.
    assert column_cell(table, "DDPG", "ml100k (rated, ml-100k-v2)")["mark"] == "best"
    assert column_cell(table, "DDPG-J", "ml100k (catalog)")["mark"] == "best"


def test_headers_name_the_protocol_and_the_folder_when_there_are_several(protocol_runs: pd.DataFrame) -> None:
    markdown = to_markdown(build_table(protocol_runs)).splitlines()
    columns = ("ml100k (catalog)", "ml100k (rated, ml-100k)", "ml100k (rated, ml-100k-v2)")
    metrics = [f"{c} {m}" for c in columns for m in ("Recall", "Precision", "Accuracy")]
    assert markdown[2] == "| " + " | ".join(["Method", *metrics, *(f"{c} env_steps" for c in columns)]) + " |"
    # One protocol and one folder in the experiment: the protocol is still named.
    only_rated = protocol_runs[protocol_runs["param:env.candidates"] == "rated"]
    only_rated = only_rated[only_rated["param:env.data_dir"] == "/data/ml-100k"]
    header = to_markdown(build_table(only_rated)).splitlines()[2]
    assert header.startswith("| Method | ml100k (rated) Recall | ml100k (rated) Precision |")
    assert header.endswith("| ml100k (rated) Accuracy | ml100k (rated) env_steps |")


def test_cost_budget_per_protocol_and_folder(protocol_runs: pd.DataFrame) -> None:
    assert mean_env_steps(protocol_runs, ["joint"], env="ml100k") == 400
    assert mean_env_steps(protocol_runs, ["joint"], env="ml100k", protocol="catalog") == 300
    assert mean_env_steps(protocol_runs, ["joint"], protocol="rated", data_dir="/data/ml-100k") == 500
    with pytest.raises(
        LookupError, match=r"no FINISHED runs on ml100k under env\.candidates=rated from /scratch"
    ):
        mean_env_steps(protocol_runs, env="ml100k", protocol="rated", data_dir="/scratch/ml-100k-v2")
