"""Fig. 4-6 curves: the numbers over seeds are checked by hand, the figures by their files."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import MlflowStore, run_script
from macs_exp.reports import curves as curves_module
from macs_exp.reports.curves import (
    CurvesError,
    aggregate,
    aggregate_on_grid,
    env_step_history,
    fetch_histories,
    finals,
    store_histories,
    write_figures,
)
from macs_exp.reports.runs import load_runs

PNG = b"\x89PNG\r\n\x1a\n"
SQRT2 = math.sqrt(2)

# ddpg/baseline: every seed logs steps 100 and 200.
BASELINE = {0: [(100, 1.0), (200, 2.0)], 1: [(100, 3.0), (200, 4.0)], 2: [(100, 5.0), (200, 9.0)]}
# ddpg/expert: uneven step sets (seed 1 skipped 200, seed 2 stopped before 300).
EXPERT = {0: [(100, 2.0), (200, 4.0), (300, 6.0)], 1: [(100, 4.0), (300, 8.0)], 2: [(100, 6.0), (200, 6.0)]}


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG


def fill_fig4(store: MlflowStore, sweep_id: str = "s1") -> str:
    """ddpg and sac in baseline and expert mode (3 seeds), a FAILED ddpg/expert seed with
    outlying values, a random reference policy, a joint run without macs params, and one
    rating-dataset run; returns the sweep's parent run id."""
    parent = store.sweep("fig4", sweep_id)
    for algo, shift in (("ddpg", 0.0), ("sac", 10.0)):
        for mode, table in (("baseline", BASELINE), ("expert", EXPERT)):
            for seed, points in table.items():
                ctr = [(s, v + shift) for s, v in points]
                reward = [(s, 10 * v) for s, v in points]
                metrics = {"eval/ctr": ctr, "eval/episode_reward": reward}
                store.run(
                    "fig4",
                    algo=algo,
                    mode=mode,
                    env="virtual_taobao",
                    seed=seed,
                    metrics=metrics,
                    sweep_id=sweep_id,
                )
    store.run(
        "fig4", algo="ddpg", mode="expert", env="virtual_taobao", seed=3,
        metrics={"eval/ctr": [(100, 100.0), (200, 100.0)]}, status="FAILED", sweep_id=sweep_id,
    )  # fmt: skip
    store.run(
        "fig4", algo="random", mode="baseline", env="virtual_taobao", seed=0,
        metrics={"eval/ctr": [(100, 0.5), (200, 0.7)]}, sweep_id=sweep_id,
    )  # fmt: skip
    store.run(
        "fig4", algo="ddpg", mode="joint", env="virtual_taobao", seed=0,
        metrics={"eval/ctr": [(100, 1.5), (200, 2.5)]}, sweep_id=sweep_id,
    )  # fmt: skip
    store.run(
        "fig4", algo="ddpg", mode="baseline", env="ml100k", seed=0,
        metrics={"test/precision": [(50, 0.1), (100, 0.2)], "eval/episode_reward": [(50, 1.0)]},
        sweep_id=sweep_id,
    )  # fmt: skip
    return parent


def fill_sweep(store: MlflowStore, experiment: str, mode: str, param: str, values: dict[str, float]) -> str:
    """Two seeds per param value; seed s logs ``base`` at step 100 and ``base + s`` at 200. A
    baseline run (where the param has no effect) sits beside them."""
    parent = store.sweep(experiment, "sw")
    for value, base in values.items():
        for seed in (0, 1):
            store.run(
                experiment, algo="ddpg", mode=mode, env="virtual_taobao", seed=seed, sweep_id="sw",
                metrics={"eval/ctr": [(100, base), (200, base + seed)]}, params={param: value},
            )  # fmt: skip
    store.run(
        experiment, algo="ddpg", mode="baseline", env="virtual_taobao", seed=0, sweep_id="sw",
        metrics={"eval/ctr": [(100, 0.0)]}, params={param: next(iter(values))},
    )  # fmt: skip
    return parent


def row(frame: pd.DataFrame, **where: object) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for column, value in where.items():
        mask &= frame[column] == value
    assert mask.sum() == 1, where
    return frame[mask].iloc[0]


def test_aggregate_averages_each_step_over_the_finished_runs_that_logged_it() -> None:
    runs = [("b", s, "FINISHED", BASELINE[s]) for s in BASELINE]
    runs += [("e", s, "FINISHED", EXPERT[s]) for s in EXPERT]
    runs += [("e", 3, "FAILED", [(100, 100.0)]), ("e", 4, "RUNNING", [(100, 100.0)])]
    frame = pd.DataFrame(
        [{"run_id": f"{m}{s}", "status": st, "panel": "DDPG", "line": m} for m, s, st, _ in runs]
    )
    histories = {f"{m}{s}": h for m, s, _, h in runs}
    curves = aggregate(frame, histories, "panel", "line")

    assert list(curves.columns) == ["panel", "line", "step", "mean", "std", "n"]
    assert list(zip(curves["line"], curves["step"], strict=True)) == [
        ("b", 100), ("b", 200), ("e", 100), ("e", 200), ("e", 300),
    ]  # fmt: skip
    assert row(curves, line="b", step=100)[["mean", "std", "n"]].tolist() == [3.0, 2.0, 3]
    b200 = row(curves, line="b", step=200)
    assert (b200["mean"], b200["std"], b200["n"]) == (5.0, pytest.approx(math.sqrt(13)), 3)
    # The FAILED and RUNNING seeds (100.0) stay out.
    assert row(curves, line="e", step=100)[["mean", "std", "n"]].tolist() == [4.0, 2.0, 3]
    for step, mean in ((200, 5.0), (300, 7.0)):
        point = row(curves, line="e", step=step)
        assert (point["mean"], point["std"], point["n"]) == (mean, pytest.approx(SQRT2), 2)

    alone = aggregate(frame.iloc[:1], {"b0": [(100, 1.0)]}, "panel", "line")
    assert alone["n"].tolist() == [1] and alone["mean"].tolist() == [1.0] and alone["std"].isna().all()


def test_finals_take_each_runs_last_step() -> None:
    frame = pd.DataFrame(
        [{"run_id": f"e{s}", "status": "FINISHED", "panel": "p", "line": 64} for s in EXPERT]
    )
    final = finals(frame, {f"e{s}": EXPERT[s] for s in EXPERT}, "panel", "line")
    # Last values 6, 8 and 6 (seed 2 stopped at step 200).
    assert list(final.columns) == ["panel", "line", "mean", "std", "n"]
    assert final[["mean", "n"]].iloc[0].tolist() == [pytest.approx(20 / 3), 3]
    assert final["std"].iloc[0] == pytest.approx(math.sqrt(4 / 3))


def test_fig4_draws_one_figure_per_env_from_the_store(mlflow_store: MlflowStore, tmp_path: Path) -> None:
    fill_fig4(mlflow_store)
    runs = load_runs(mlflow_store.client, "fig4")
    notes: list[str] = []
    written = write_figures(
        store_histories(mlflow_store.client),
        runs,
        experiment="fig4",
        figure="fig4",
        out_dir=tmp_path,
        report=notes.append,
    )

    assert [(w.path.name, w.metric, w.runs, w.sweep_ids) for w in written] == [
        ("fig4-fig4-ml100k.png", "test/precision", 1, ("s1",)),
        ("fig4-fig4-virtual_taobao.png", "eval/ctr", 14, ("s1",)),
    ]
    for w in written:
        assert_png(w.path)
    assert notes == ["skipped 1 of 16 runs that are not FINISHED (FAILED 1)"]

    # The curves behind the figure, fetched from MLflow: the same numbers as by hand.
    finished = runs[(runs["status"] == "FINISHED") & (runs["env"] == "virtual_taobao")]
    curves = aggregate(
        finished, fetch_histories(mlflow_store.client, finished["run_id"], "eval/ctr"), "algo", "mode"
    )
    e300 = row(curves, panel="sac", line="expert", step=300)
    assert (e300["mean"], e300["std"], e300["n"]) == (17.0, pytest.approx(SQRT2), 2)
    assert row(curves, panel="random", line="baseline", step=200)[["mean", "n"]].tolist() == [0.7, 1]


def test_fig4_metric_override_and_missing_metric(mlflow_store: MlflowStore, tmp_path: Path) -> None:
    fill_fig4(mlflow_store)
    runs = load_runs(mlflow_store.client, "fig4")
    notes: list[str] = []
    written = write_figures(
        store_histories(mlflow_store.client), runs, experiment="fig4", figure="fig4", out_dir=tmp_path,
        metric="eval/episode_reward", report=notes.append,
    )  # fmt: skip
    # The reference and joint runs logged no episode reward.
    assert [(w.env, w.runs) for w in written] == [("ml100k", 1), ("virtual_taobao", 12)]
    assert "virtual_taobao: left out 2 runs without eval/episode_reward" in notes
    with pytest.raises(CurvesError, match="no FINISHED run of experiment 'fig4' has test/recall"):
        write_figures(
            store_histories(mlflow_store.client), runs, experiment="fig4", figure="fig4", out_dir=tmp_path,
            metric="test/recall", report=notes.append,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("figure", "mode", "param", "values", "note"),
    [
        ("fig5", "expert", "macs.algo.net_arch", {"[64, 64]": 1.0, "[128, 128]": 3.0, "[256, 256]": 2.0},
         "fig5: left out 1 runs in other modes than expert/joint"),
        ("fig6", "joint", "macs.threshold_frac", {"0.2": 1.0, "0.4": 4.0, "0.8": 2.0},
         "fig6: left out 1 runs in other modes than joint"),
    ],
)  # fmt: skip
def test_sweep_figures_draw_curves_and_final_values(
    mlflow_store: MlflowStore,
    tmp_path: Path,
    figure: str,
    mode: str,
    param: str,
    values: dict[str, float],
    note: str,
) -> None:
    fill_sweep(mlflow_store, figure, mode, param, values)
    runs = load_runs(mlflow_store.client, figure)
    notes: list[str] = []
    written = write_figures(
        store_histories(mlflow_store.client),
        runs,
        experiment=figure,
        figure=figure,
        out_dir=tmp_path,
        report=notes.append,
    )
    assert [(w.path.name, w.runs) for w in written] == [(f"{figure}-{figure}-virtual_taobao.png", 6)]
    assert_png(written[0].path)
    assert notes == [note]

    # The final value of a param value: the mean of base and base + 1 over its two seeds.
    swept = runs[runs["mode"] == mode]
    frame = swept.assign(panel="p", line=swept[f"param:{param}"])
    final = finals(frame, fetch_histories(mlflow_store.client, frame["run_id"], "eval/ctr"), "panel", "line")
    assert dict(zip(final["line"], final["mean"], strict=True)) == {k: v + 0.5 for k, v in values.items()}
    assert final["std"].tolist() == pytest.approx([math.sqrt(0.5)] * 3)
    assert final["n"].tolist() == [2, 2, 2]


@pytest.mark.slow
def test_script_writes_prints_and_logs_the_figures(mlflow_store: MlflowStore, tmp_path: Path) -> None:
    parent = fill_fig4(mlflow_store)
    out = tmp_path / "figures"
    proc = run_script(
        "plot_curves.py", "--experiment", "fig4", "--tracking-uri", mlflow_store.uri, "--out-dir", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = [out / "fig4-fig4-ml100k.png", out / "fig4-fig4-virtual_taobao.png"]
    for path in paths:
        assert f"wrote {path}" in proc.stdout
        assert_png(path)
    assert "skipped 1 of 16 runs that are not FINISHED (FAILED 1)" in proc.stdout
    logged = mlflow_store.client.list_artifacts(parent, "figures")
    assert sorted(a.path for a in logged) == [f"figures/{p.name}" for p in paths]
    assert all(
        a.file_size == p.stat().st_size
        for a, p in zip(sorted(logged, key=lambda a: a.path), paths, strict=True)
    )


@pytest.mark.slow
def test_script_exits_2_for_an_unknown_experiment_or_a_missing_param(
    mlflow_store: MlflowStore, tmp_path: Path
) -> None:
    fill_fig4(mlflow_store)
    common = ["--tracking-uri", mlflow_store.uri, "--out-dir", str(tmp_path), "--no-log"]
    unknown = run_script("plot_curves.py", "--experiment", "nope", *common)
    assert unknown.returncode == 2
    assert "no MLflow experiment named 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr

    # The fig4 experiment's joint run has no macs.threshold_frac param.
    no_param = run_script("plot_curves.py", "--experiment", "fig4", "--figure", "fig6", *common)
    assert no_param.returncode == 2
    assert "Traceback" not in no_param.stderr
    assert "macs.threshold_frac" in no_param.stderr and "+experiment=fig6_threshold" in no_param.stderr
    assert not list(tmp_path.glob("*.png"))


def test_a_sweep_figure_says_when_the_param_was_not_varied(mlflow_store: MlflowStore, tmp_path: Path) -> None:
    fill_sweep(mlflow_store, "fig4", "joint", "macs.threshold_frac", {"0.4": 4.0})
    notes: list[str] = []
    runs = load_runs(mlflow_store.client, "fig4")
    written = write_figures(
        store_histories(mlflow_store.client),
        runs,
        experiment="fig4",
        figure="fig6",
        out_dir=tmp_path,
        report=notes.append,
    )
    assert_png(written[0].path)
    assert notes[-1] == "fig6: every run has macs.threshold_frac=0.4; +experiment=fig6_threshold varies it"


def test_env_step_history_matches_steps_and_interpolates_between_them() -> None:
    history = [(0, 0.5), (100, 1.0), (200, 2.0), (300, 3.0), (400, 4.0)]
    # perf/env_steps at steps 100 and 300 only: 200 lies halfway, 0 and 400 outside are dropped.
    assert env_step_history(history, [(100, 150.0), (300, 450.0)]) == [
        (150.0, 1.0),
        (300.0, 2.0),
        (450.0, 3.0),
    ]
    assert env_step_history(history, []) == []


def test_aggregate_on_grid_interpolates_each_seed_within_its_own_range() -> None:
    frame = pd.DataFrame([{"run_id": r, "status": "FINISHED", "panel": "p", "line": "l"} for r in ("a", "b")])
    histories = {"a": [(100.0, 1.0), (300.0, 3.0)], "b": [(200.0, 2.0), (400.0, 6.0)]}
    curves = aggregate_on_grid(frame, histories, "panel", "line")
    assert list(curves.columns) == ["panel", "line", "env_steps", "mean", "std", "n"]
    # Grid 100..400; a reaches 100-300 (2.0 at 200), b 200-400 (4.0 at 300).
    assert curves[["env_steps", "mean", "n"]].values.tolist() == [
        [100.0, 1.0, 1], [200.0, 2.0, 2], [300.0, 3.5, 2], [400.0, 6.0, 1],
    ]  # fmt: skip
    assert curves["std"].tolist()[1:3] == [0.0, pytest.approx(math.sqrt(0.5))]
    assert curves["std"].iloc[[0, 3]].isna().all()


@pytest.mark.slow
def test_fig4_on_env_steps(
    mlflow_store: MlflowStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Baselines cost one env step per user-step, expert seeds more and unevenly (seed 1 logged
    perf/env_steps off the eval steps); a cost-matched baseline is its own line; a joint run
    from before perf/env_steps is skipped by name."""
    ctr = [(100, 2.0), (200, 4.0)]
    specs = [
        ("baseline", 0, [(100, 1.0), (200, 2.0)], [(100, 100.0), (200, 200.0)], {}),
        (
            "baseline",
            0,
            [(100, 1.5), (200, 2.5)],
            [(100, 120.0), (200, 240.0)],
            {"trainer.budget": "env_steps"},
        ),
        ("expert", 0, ctr, [(100, 300.0), (200, 600.0)], {}),
        ("expert", 1, ctr, [(50, 200.0), (150, 600.0), (250, 800.0)], {}),
    ]
    for mode, seed, points, cost, params in specs:
        mlflow_store.run(
            "fig4", algo="ddpg", mode=mode, env="virtual_taobao", seed=seed, params=params,
            metrics={"eval/ctr": points, "perf/env_steps": cost},
        )  # fmt: skip
    old = mlflow_store.run(
        "fig4", algo="ddpg", mode="joint", env="virtual_taobao", seed=0, metrics={"eval/ctr": ctr}
    )
    drawn: list[tuple[pd.DataFrame, list[str], str]] = []
    real_plot = curves_module.plot_curves

    def spy(curves: pd.DataFrame, path: Path, *, label: Callable[[Any, Any], str], x: str, **kw: Any) -> Path:
        lines = dict.fromkeys(zip(curves["panel"], curves["line"], strict=True))
        drawn.append((curves, [label(panel, line) for panel, line in lines], x))
        return real_plot(curves, path, label=label, x=x, **kw)

    monkeypatch.setattr(curves_module, "plot_curves", spy)
    notes: list[str] = []
    written = write_figures(
        store_histories(mlflow_store.client),
        load_runs(mlflow_store.client, "fig4"),
        experiment="fig4",
        figure="fig4",
        out_dir=tmp_path,
        x="env_steps",
        report=notes.append,
    )
    assert_png(written[0].path)
    assert (written[0].path.name, written[0].runs) == ("fig4-fig4-virtual_taobao-env_steps.png", 4)
    assert notes == [
        f"virtual_taobao: skipped run {old} (ddpg/joint, seed 0): "
        "no perf/env_steps to put on the env-steps axis"
    ]
    curves, labels, x = drawn[0]
    assert (labels, x) == (["DDPG", "DDPG (=cost)", "DDPG-E"], "env_steps")
    assert row(curves, line="baseline (=cost)", env_steps=240.0)["mean"] == 2.5
    # Expert seed 0 is at 300 and 600 env steps, seed 1 (interpolated) at 400 and 700.
    expert = curves[curves["line"] == "expert"]
    assert expert[["env_steps", "mean", "n"]].values.tolist() == [
        [300.0, 2.0, 1], [400.0, pytest.approx(7 / 3), 2], [600.0, pytest.approx(11 / 3), 2], [700.0, 4.0, 1],
    ]  # fmt: skip


@pytest.mark.slow
def test_a_ctrl_run_is_a_curve_of_its_own_after_macs(mlflow_store: MlflowStore) -> None:
    fill_fig4(mlflow_store)
    mlflow_store.run(
        "fig4", algo="ddpg", mode="ctrl", env="virtual_taobao", seed=0,
        metrics={"eval/ctr": [(100, 1.0), (200, 1.2)]}, sweep_id="s1",
    )  # fmt: skip
    runs = load_runs(mlflow_store.client, "fig4")
    frame, label = curves_module._fig4_frame(runs[runs["env"] == "virtual_taobao"])
    assert list(frame["line"].cat.categories) == ["baseline", "expert", "joint", "ctrl", "random"]
    assert label("DDPG", "ctrl") == "DDPG-CTRL"
