"""Learning curves over seeds in the shape of the paper's Fig. 4 (modes), 5 (hidden size of pi_c)
and 6 (threshold epsilon_1).

The numbers live in ``aggregate`` and ``finals``, pure functions of the runs frame and the metric
histories, so they can be checked without drawing; the plotting functions only read their output.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from macs_exp.metrics import KEY_METRICS
from macs_exp.reports.runs import (
    ENV_STEPS_METRIC,
    budget_order,
    budget_suffix,
    budgets,
    learning_algos,
    metric_column,
    mode_order,
    ordered,
    reference_algos,
    row_label,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from mlflow.tracking import MlflowClient


FIGURES = ("fig4", "fig5", "fig6")
# The first of these a FINISHED run of an env logged is what that env's figure shows.
DPI = 120

History = Sequence[tuple[int, float]]
# Where the figures read metric histories: (run ids, metric) -> run id -> [(step, value), ...];
# the MLflow store (``store_histories``) or the results ledger's curves.
HistorySource = Callable[[Iterable[str], str], dict[str, list[tuple[int, float]]]]
# What a curve's x is: the user-step of each evaluation (the paper's axis), or the env steps
# the run had taken by then, which charges MACS for its simulator calls.
X_AXES = {"user_steps": "user-steps", "env_steps": "env steps (simulator cost)"}


class CurvesError(Exception):
    """A selection no figure can be drawn from; the CLI reports it and exits with status 2."""


@dataclass(frozen=True)
class Sweep:
    """What Fig. 5 and 6 vary: the param, the modes in which it has an effect, the preset that
    sweeps it, and how one of its values reads on the plot."""

    param: str
    modes: tuple[str, ...]
    preset: str
    axis: str
    # Hidden sizes double from one value to the next; a log axis spaces them evenly.
    xscale: str
    value: Callable[[str], float]
    label: Callable[[float], str]
    tick: Callable[[float], str]


def first_width(net_arch: str) -> float:
    try:
        layers = json.loads(net_arch)
    except json.JSONDecodeError:
        layers = None
    if not isinstance(layers, list) or not layers:
        raise CurvesError(f"macs.algo.net_arch={net_arch!r} is not a list of layer widths")
    return float(layers[0])


def _tenths(frac: float) -> str:
    return f"{frac * 10:.3g}/10"


SWEEPS = {
    # pi_c exists only in the MACS modes; the random-mask ablation has no pi_c.
    "fig5": Sweep(
        param="macs.algo.net_arch",
        modes=("expert", "joint"),
        preset="+experiment=fig5_hidden",
        axis="hidden size of πc",
        xscale="log",
        value=first_width,
        label=lambda v: f"hidden {v:g}",
        tick=lambda v: f"{v:g}",
    ),
    # epsilon_1 gates only joint training (Algorithm 1).
    "fig6": Sweep(
        param="macs.threshold_frac",
        modes=("joint",),
        preset="+experiment=fig6_threshold",
        axis="threshold ε1",
        xscale="linear",
        value=float,
        label=lambda v: f"ε1 = {_tenths(v)}",
        tick=_tenths,
    ),
}


@dataclass(frozen=True)
class Written:
    path: Path
    env: str
    metric: str
    runs: int
    # The sweeps whose runs the figure draws, i.e. whose parent runs should hold it.
    sweep_ids: tuple[str, ...]


def aggregate(
    frame: pd.DataFrame, histories: Mapping[str, History], panel_by: str, line_by: str
) -> pd.DataFrame:
    """Mean and sample std over the FINISHED runs of ``frame`` at each step, per panel and line.

    Seeds need not share a step schedule: each step averages the runs that logged it, and ``n``
    says how many those are. ``std`` uses ddof=1 and is NaN where n = 1, since one run says
    nothing about spread; the plots then draw no band rather than a falsely tight one. Ordered
    categorical ``panel_by``/``line_by`` columns keep their category order in the result.
    A run id may appear in several rows (a reference policy drawn in several panels).
    """
    finished = frame.loc[frame["status"] == "FINISHED", ["run_id", panel_by, line_by]]
    points = pd.DataFrame(
        [(run_id, step, value) for run_id, history in histories.items() for step, value in history],
        columns=["run_id", "step", "value"],
    )
    merged = finished.merge(points, on="run_id").rename(columns={panel_by: "panel", line_by: "line"})
    return _summarise(merged, "step").astype({"step": "int64"})


def _summarise(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """Mean, sample std and count of ``value`` per panel, line and ``x``."""
    grouped = points.groupby(["panel", "line", x], sort=True, observed=True)["value"]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return out.astype({"mean": "float64", "std": "float64", "n": "int64"})


def env_step_history(history: History, env_steps: History) -> list[tuple[float, float]]:
    """``history`` with each user-step replaced by the env steps the run had taken then.

    The trainer logs ``perf/env_steps`` at every evaluation, so a step is normally matched
    exactly; a step it lacks is interpolated linearly between its neighbours in ``env_steps``
    (cumulative, hence increasing). A step outside that history is dropped: extrapolating
    would invent a cost the run never reported."""
    if not env_steps:
        return []
    steps = np.array([s for s, _ in env_steps], dtype=float)
    costs = np.array([c for _, c in env_steps], dtype=float)
    inside = [(s, v) for s, v in history if steps[0] <= s <= steps[-1]]
    xs = np.interp([s for s, _ in inside], steps, costs)
    return [(float(x), v) for x, (_, v) in zip(xs, inside, strict=True)]


def aggregate_on_grid(
    frame: pd.DataFrame, histories: Mapping[str, Sequence[tuple[float, float]]], panel_by: str, line_by: str
) -> pd.DataFrame:
    """``aggregate`` for curves whose x differs from seed to seed (env steps): columns panel,
    line, env_steps, mean, std, n.

    Each curve's grid is the union of its seeds' x values, so that every measured point is
    kept and no resolution is made up; each seed is interpolated linearly onto the grid points
    within its own x range and nowhere else (no extrapolation past its first or last
    evaluation). A point then averages the seeds that reach it and ``n`` says how many, as
    ``aggregate`` does for seeds that skipped a step. Binning would instead mix evaluations of
    different progress, and a grid clipped to the range all seeds share would cut every curve
    to its shortest seed.
    """
    finished = frame.loc[frame["status"] == "FINISHED", ["run_id", panel_by, line_by]]
    points = []
    for (panel, line), group in finished.groupby([panel_by, line_by], sort=True, observed=True):
        curves = [np.array(histories[r], dtype=float) for r in group["run_id"] if len(histories.get(r, ()))]
        if not curves:
            continue
        grid = np.unique(np.concatenate([c[:, 0] for c in curves]))
        for curve in curves:
            xs = grid[(grid >= curve[0, 0]) & (grid <= curve[-1, 0])]
            values = np.interp(xs, curve[:, 0], curve[:, 1])
            points += [(panel, line, x, v) for x, v in zip(xs, values, strict=True)]
    long = pd.DataFrame(points, columns=["panel", "line", "env_steps", "value"])
    # Keep the categories' order (modes, swept values) that ``plot_curves`` draws lines in.
    long = long.astype({"panel": finished[panel_by].dtype, "line": finished[line_by].dtype})
    return _summarise(long, "env_steps").astype({"env_steps": "float64"})


def finals(
    frame: pd.DataFrame, histories: Mapping[str, History], panel_by: str, line_by: str
) -> pd.DataFrame:
    """Mean and sample std over runs of each run's last logged value (the error bars of
    Fig. 5 and 6): columns panel, line, mean, std, n with ``aggregate``'s NaN rule."""
    last = {run_id: [(0, max(h, key=lambda p: p[0])[1])] for run_id, h in histories.items() if h}
    return aggregate(frame, last, panel_by, line_by).drop(columns="step")


def fetch_histories(
    client: MlflowClient, run_ids: Iterable[str], key: str
) -> dict[str, list[tuple[int, float]]]:
    """One ``get_metric_history`` call per run, sorted by step; a step logged twice keeps its
    latest value, so that a run counts once toward n."""
    histories = {}
    for run_id in run_ids:
        by_step: dict[int, float] = {}
        for metric in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)):
            by_step[int(metric.step)] = float(metric.value)
        histories[run_id] = sorted(by_step.items())
    return histories


def store_histories(client: MlflowClient) -> HistorySource:
    """``fetch_histories`` of one MLflow store, as the figures read histories."""
    return lambda run_ids, key: fetch_histories(client, run_ids, key)


def _fig4_frame(runs: pd.DataFrame) -> tuple[pd.DataFrame, Callable[[Any, Any], str]]:
    """Panel = learning algo, line = mode and budget (a cost-matched baseline is a line of its
    own, next to the plain one); reference policies repeat in every algo's panel."""
    references_names = reference_algos()
    learners = runs[~runs["algo"].isin(references_names)]
    budget = budgets(learners)
    # A line is keyed by how its label ends, e.g. "baseline (=cost)"; the label needs the parts.
    keys = [m + budget_suffix(b) for m, b in zip(learners["mode"], budget, strict=True)]
    parts = dict(zip(keys, zip(learners["mode"], budget, strict=True), strict=True))
    learners = learners.assign(panel=learners["algo"].str.upper(), line=keys)
    references = runs[runs["algo"].isin(references_names)].assign(line=lambda f: f["algo"])
    panels = [a.upper() for a in ordered(learners["algo"], learning_algos())] or ["reference policies"]
    frame = pd.concat([learners, *(references.assign(panel=panel) for panel in panels)], ignore_index=True)
    lines = [
        mode + budget_suffix(b)
        for mode in ordered(learners["mode"], mode_order())
        for b in budget_order(budget[learners["mode"] == mode])
    ] + ordered(references["algo"], references_names)
    frame["panel"] = pd.Categorical(frame["panel"], categories=panels, ordered=True)
    frame["line"] = pd.Categorical(frame["line"], categories=lines, ordered=True)

    def label(panel: Any, line: Any) -> str:
        # Reference policies repeat in every algo's panel, under their own name.
        if line in references_names:
            return row_label(line, "baseline")
        return row_label(str(panel).lower(), *parts[line])

    return frame, label


def _sweep_frame(runs: pd.DataFrame, sweep: Sweep) -> pd.DataFrame:
    """Panel = algo and mode (as ``DDPG-E``), line = the swept value as a number."""
    frame = runs.assign(
        panel=[row_label(*am) for am in zip(runs["algo"], runs["mode"], budgets(runs), strict=True)],
        line=runs[f"param:{sweep.param}"].map(sweep.value),
    )
    frame["panel"] = pd.Categorical(frame["panel"], categories=sorted(set(frame["panel"])), ordered=True)
    return frame


def _select_sweep_runs(runs: pd.DataFrame, figure: str, report: Callable[[str], None]) -> pd.DataFrame:
    sweep = SWEEPS[figure]
    chosen = runs[runs["mode"].isin(sweep.modes)]
    if chosen.empty:
        raise CurvesError(
            f"{figure} plots runs in mode {'/'.join(sweep.modes)}; the selection has none "
            f"(train them with {sweep.preset})"
        )
    if len(chosen) < len(runs):
        report(
            f"{figure}: left out {len(runs) - len(chosen)} runs in other modes than {'/'.join(sweep.modes)}"
        )
    column = f"param:{sweep.param}"
    missing = len(chosen) if column not in chosen else int(chosen[column].isna().sum())
    if missing:
        raise CurvesError(
            f"{figure} needs the param {sweep.param}, which {missing} of the {len(chosen)} selected runs "
            f"lack; it is set by {sweep.preset}"
        )
    # Every run logs its whole config, so a selection that did not sweep the param still has it.
    if chosen[column].nunique() == 1:
        report(f"{figure}: every run has {sweep.param}={chosen[column].iloc[0]}; {sweep.preset} varies it")
    return chosen


def _pick_metric(runs: pd.DataFrame, metric: str | None) -> str | None:
    for key in [metric] if metric else KEY_METRICS:
        column = f"metric:{key}"
        if column in runs and runs[column].notna().any():
            return key
    return None


def write_figures(
    histories: HistorySource,
    runs: pd.DataFrame,
    *,
    experiment: str,
    figure: str,
    out_dir: Path,
    metric: str | None = None,
    x: str = "user_steps",
    report: Callable[[str], None] = print,
) -> list[Written]:
    """One PNG per env of ``runs`` (a ``load_runs`` frame); raises ``CurvesError`` when none
    can be drawn. Without ``metric``, each env shows the first of ``KEY_METRICS`` it has;
    ``x`` is one of ``X_AXES``."""
    if figure not in FIGURES:
        raise CurvesError(f"unknown figure {figure!r}; choose one of {', '.join(FIGURES)}")
    if x not in X_AXES:
        raise CurvesError(f"unknown x axis {x!r}; choose one of {', '.join(X_AXES)}")
    unfinished = runs[runs["status"] != "FINISHED"]
    if len(unfinished):
        counts = ", ".join(f"{s} {n}" for s, n in unfinished["status"].value_counts().sort_index().items())
        report(f"skipped {len(unfinished)} of {len(runs)} runs that are not FINISHED ({counts})")
    finished = runs[runs["status"] == "FINISHED"]
    if finished.empty:
        raise CurvesError(f"no FINISHED run in the selection of experiment {experiment!r}")
    sweep = SWEEPS.get(figure)
    if sweep is not None:
        finished = _select_sweep_runs(finished, figure, report)

    written = []
    for env in sorted(set(finished["env"])):
        env_runs = finished[finished["env"] == env]
        key = _pick_metric(env_runs, metric)
        if key is None:
            report(f"{env or 'no env'}: no FINISHED run has {metric or ' or '.join(KEY_METRICS)}")
            continue
        has_key = env_runs[env_runs[f"metric:{key}"].notna()]
        if len(has_key) < len(env_runs):
            report(f"{env or 'no env'}: left out {len(env_runs) - len(has_key)} runs without {key}")
        if x == "env_steps":
            has_key = _with_env_steps(has_key, env, report)
            if has_key.empty:
                continue
        # Against simulator cost, a figure of its own beside the user-step one.
        stem = "-".join(
            part for part in (experiment, figure, env, "env_steps" if x == "env_steps" else "") if part
        )
        path = Path(out_dir) / f"{stem}.png"
        title = f"{experiment} · {env}" if env else experiment
        _draw(histories, has_key, key, sweep, x, path, title)
        sweep_ids = tuple(sorted({s for s in has_key["sweep_id"] if s}))
        written.append(Written(path, env, key, len(has_key), sweep_ids))
    if not written:
        raise CurvesError(
            f"no FINISHED run of experiment {experiment!r} has {metric or ' or '.join(KEY_METRICS)}"
        )
    return written


def _draw(
    source: HistorySource, runs: pd.DataFrame, key: str, sweep: Sweep | None, x: str, path: Path, title: str
) -> None:
    """Fetches what one env's figure needs and draws it: Fig. 4's panels per algo, or a sweep's
    panels per algo and mode with the final values against the swept param."""
    histories = source(runs["run_id"], key)
    final = None
    if sweep is None:
        frame, label = _fig4_frame(runs)
    else:
        frame, label = _sweep_frame(runs, sweep), _sweep_label(sweep)
        final = (finals(frame, histories, "panel", "line"), sweep)
    if x == "env_steps":
        costs = source(runs["run_id"], ENV_STEPS_METRIC)
        on_cost = {r: env_step_history(histories[r], costs[r]) for r in runs["run_id"]}
        curves = aggregate_on_grid(frame, on_cost, "panel", "line")
    else:
        curves = aggregate(frame, histories, "panel", "line")
    plot_curves(curves, path, title=title, ylabel=key, label=label, final=final, x=x)


def _sweep_label(sweep: Sweep) -> Callable[[Any, Any], str]:
    return lambda _panel, line: sweep.label(line)


def _with_env_steps(runs: pd.DataFrame, env: str, report: Callable[[str], None]) -> pd.DataFrame:
    """The runs that logged ``perf/env_steps``: one without it (from before the trainer
    counted env steps) has no place on that axis, and each is named so it can be rerun."""
    has_cost = metric_column(runs, ENV_STEPS_METRIC).notna()
    for run in runs[~has_cost].itertuples():
        report(
            f"{env or 'no env'}: skipped run {run.run_id} ({run.algo}/{run.mode}, seed {run.seed}): "
            f"no {ENV_STEPS_METRIC} to put on the env-steps axis"
        )
    return runs[has_cost]


def plot_curves(
    curves: pd.DataFrame,
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    label: Callable[[Any, Any], str],
    final: tuple[pd.DataFrame, Sweep] | None = None,
    x: str = "user_steps",
) -> Path:
    """One panel per ``curves`` panel with a mean line and a ±std band per line; with ``final``
    (the ``finals`` frame and what was swept) one more panel of final mean ± std against the
    swept value. A line keeps its color across panels so that the panels read side by side.
    ``x`` says which column is the x axis: ``step`` (``aggregate``) for user-steps,
    ``env_steps`` (``aggregate_on_grid``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column = "env_steps" if x == "env_steps" else "step"
    panels = list(dict.fromkeys(curves["panel"]))
    colors = {line: f"C{i % 10}" for i, line in enumerate(dict.fromkeys(curves.sort_values("line")["line"]))}
    width = len(panels) + (final is not None)
    fig, axes = plt.subplots(1, max(1, width), figsize=(4.8 * max(1, width), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=False):
        for line, points in curves[curves["panel"] == panel].groupby("line", sort=True, observed=True):
            ax.plot(points[column], points["mean"], color=colors[line], label=label(panel, line))
            ax.fill_between(
                points[column],
                points["mean"] - points["std"],
                points["mean"] + points["std"],
                color=colors[line],
                alpha=0.2,
                linewidth=0,
            )
        ax.set_title(str(panel))
        ax.set_xlabel(X_AXES[x])
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if final is not None:
        _plot_finals(axes[0][-1], *final, ylabel=ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _plot_finals(ax: Axes, final: pd.DataFrame, sweep: Sweep, *, ylabel: str) -> None:
    for panel, points in final.groupby("panel", sort=True, observed=True):
        ax.errorbar(
            points["line"], points["mean"], yerr=points["std"], marker="o", capsize=4, label=str(panel)
        )
    ax.set_xscale(sweep.xscale)
    ax.minorticks_off()
    values = sorted(set(final["line"]))
    ax.set_xticks(values, [sweep.tick(v) for v in values])
    ax.set_xlabel(sweep.axis)
    ax.set_ylabel(f"final {ylabel}")
    ax.set_title("final value (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
