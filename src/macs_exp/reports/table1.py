"""The paper's Table I (every method on every dataset) from the runs of an experiment.

A table built from a sweep must not look complete when it is not: every cell says how many of
its expected seeds finished, and a cell without any finished seed says why (failed, still
running or never started) instead of showing a number. Only the latest FINISHED run of each
(algo, mode, budget, env, seed) counts, so rerunning a seed replaces its earlier result.

Runs trained under different ``trainer.budget`` are different experiments and never share a
row: baselines bounded by env steps form the cost-matched row ``DDPG (=cost)``, which the -E/-J
rows are tested against as well as against the plain ``DDPG``. Likewise runs of another offline
protocol (``env.candidates``) or data folder (``env.data_dir``) never share a column: each
(env, protocol, folder) is a column of its own, headed e.g. ``ml100k (rated) Precision``; the
protocol is named even when the experiment has only one, and a folder only when the env and
protocol have several (by its last path component, e.g. ``ml100k (catalog, ml-100k-v2)``).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from scipy.stats import ttest_ind

from macs_exp.reports.runs import (
    BUDGET_KEY,
    ENV_STEPS,
    ENV_STEPS_METRIC,
    PROTOCOL_KEY,
    REPLAY_KEY,
    USER_STEPS,
    budget_order,
    budgets,
    data_dirs,
    learning_algos,
    metric_column,
    mode_order,
    ordered,
    protocol_order,
    protocols,
    reference_algos,
    row_label,
)

ENV_ORDER = ("ml100k", "ml1m", "bookcrossing", "douban_book")
FAILED_STATUSES = ("FAILED", "KILLED")

CSV_COLUMNS = (
    "row",
    "algo",
    "mode",
    "env",
    "metric",
    "mean",
    "std",
    "n",
    "expected",
    "failed",
    "running",
    "status",
    "mark",
    "improvement_pct",
    "p_value",
    # Added after the columns above, which other tools read by name and position.
    "budget",
    "env_steps",
    "improvement_cost_pct",
    "p_value_cost",
    # The column a cell belongs to: its env.candidates ("" off rating envs), env.data_dir, header.
    "protocol",
    "data_dir",
    "column",
)
# What a cell's runs share besides algo, mode and budget: its column's env, protocol and folder.
COLUMN_KEYS = ("env", "protocol", "data_dir")
# Params that differ between the runs of one cell by design: the seed, where a run is tracked
# (tracking.run_name, ...), Hydra's own settings, and paths (a data or cache dir on another
# machine). Any other difference means the cell averages different experiments.
PER_RUN_PARAMS = ("seed",)
PER_RUN_PREFIXES = ("tracking.", "hydra.")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    decimals: int


RATING_METRICS = (
    Metric("test/recall", "Recall", 4),
    Metric("test/precision", "Precision", 4),
    Metric("test/accuracy", "Accuracy", 4),
)
CTR = Metric("eval/ctr", "CTR", 4)
REWARD = Metric("eval/episode_reward", "Reward", 2)
METRICS = {m.key: m for m in (*RATING_METRICS, CTR, REWARD)}


def _metrics_for(runs: pd.DataFrame) -> tuple[Metric, ...]:
    def logged(key: str) -> bool:
        column = f"metric:{key}"
        return column in runs and bool(runs[column].notna().any())

    if logged("test/precision"):
        return RATING_METRICS
    if logged(CTR.key):
        return (CTR,)
    return (REWARD,)


@dataclass(frozen=True)
class Column:
    """One (env, protocol, data folder) of the table, and its header (without the metric)."""

    env: str
    protocol: str
    data_dir: str
    label: str

    def select(self, frame: pd.DataFrame) -> pd.Series:
        """Which rows of ``frame`` (runs, or their outcomes) belong to this column."""
        return (
            (frame["env"] == self.env)
            & (frame["protocol"] == self.protocol)
            & (frame["data_dir"] == self.data_dir)
        )


def _table_columns(frame: pd.DataFrame) -> list[Column]:
    """The columns of the runs in ``frame``: envs in the paper's order, then protocols, then folders."""
    columns = []
    for env in ordered(frame["env"], ENV_ORDER):
        env_runs = frame[frame["env"] == env]
        for protocol in protocol_order(env_runs["protocol"]):
            folders = sorted(set(env_runs.loc[env_runs["protocol"] == protocol, "data_dir"]))
            names = _folder_names(folders)
            for folder in folders:
                parts = [part for part in (protocol, names[folder]) if part]
                columns.append(
                    Column(env, protocol, folder, env + (f" ({', '.join(parts)})" if parts else ""))
                )
    return columns


def _folder_names(folders: Sequence[str]) -> dict[str, str]:
    """How a header names each folder of one env and protocol: not at all when it is the only one,
    else by its last path component, or its whole path where two folders share that component."""
    if len(folders) < 2:
        return dict.fromkeys(folders, "")
    last = {folder: PurePosixPath(folder).name or folder for folder in folders}
    shared = Counter(last.values())
    return {folder: last[folder] if shared[last[folder]] == 1 else folder for folder in folders}


def _latest_per_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (algo, mode, budget, env, protocol, data folder, seed) with its outcome: the
    latest FINISHED run if there is one, else ``failed`` if any attempt failed or was killed,
    else ``running``."""
    keys = ["algo", "mode", "budget", *COLUMN_KEYS, "seed"]
    ordered = frame.sort_values(["start_time", "run_id"], na_position="first")
    finished = ordered[ordered["status"] == "FINISHED"].groupby(keys, sort=False).tail(1)
    finished = finished.assign(outcome="finished")
    rest = ordered[~ordered.set_index(keys).index.isin(finished.set_index(keys).index)]
    failed_any = rest.groupby(keys)["status"].agg(lambda s: bool(s.isin(FAILED_STATUSES).any()))
    unfinished = failed_any.map({True: "failed", False: "running"}).rename("outcome").reset_index()
    return pd.concat([finished, unfinished], ignore_index=True)


def _grid(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Every (algo, mode, budget) row expected (the user-steps budget of the paper), plus any
    observed outside that expectation so that nothing present in MLflow is left out; a row of
    another budget comes right after its user-steps row."""
    references = reference_algos()
    learning = frame[~frame["algo"].isin(references)]
    algos = ordered(learning["algo"], learning_algos())
    modes = ordered(learning["mode"], mode_order())
    expected = {(a, m, USER_STEPS) for a in algos for m in modes}
    expected |= {(a, "baseline", USER_STEPS) for a in frame.loc[frame["algo"].isin(references), "algo"]}
    expected |= set(zip(frame["algo"], frame["mode"], frame["budget"], strict=True))
    algo_order = algos + references
    modes_seen = ordered([m for _, m, _ in expected], mode_order())
    budgets_seen = budget_order(b for _, _, b in expected)
    return sorted(
        expected,
        key=lambda amb: (algo_order.index(amb[0]), modes_seen.index(amb[1]), budgets_seen.index(amb[2])),
    )


def build_table(frame: pd.DataFrame, report: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One record per cell (row × column × metric) in table order: the ``CSV_COLUMNS`` and
    ``values``, the per-seed numbers the t-tests need.

    ``n`` counts the expected seeds (every seed seen in the column) whose latest FINISHED run
    logged the metric; ``failed`` and ``running`` count seeds without a FINISHED run. A seed
    in none of these is missing, including a finished run that never logged the metric.
    ``report`` (default: stderr) gets one warning per row and column whose runs differ in config.
    """
    warn = report or (lambda text: print(f"warning: {text}", file=sys.stderr))
    frame = frame.assign(budget=budgets(frame), protocol=protocols(frame), data_dir=data_dirs(frame))
    outcomes = _latest_per_seed(frame)
    rows = _grid(frame)
    records = []
    for column in _table_columns(frame):
        expected = len(set(frame.loc[column.select(frame), "seed"]))
        metrics = _metrics_for(frame[frame["env"] == column.env])
        in_column = outcomes[column.select(outcomes)]
        for algo, mode, budget in rows:
            seeds = in_column[
                (in_column["algo"] == algo) & (in_column["mode"] == mode) & (in_column["budget"] == budget)
            ]
            label = row_label(algo, mode, budget)
            differing = _differing_params(seeds[seeds["outcome"] == "finished"])
            if differing:
                warn(f"{label} on {column.label} averages runs whose config differs: {differing}")
            cell = {"row": label, "algo": algo, "mode": mode, "budget": budget, "env": column.env}
            cell |= {"protocol": column.protocol, "data_dir": column.data_dir, "column": column.label}
            records += [{**cell, **_stats(seeds, metric, expected)} for metric in metrics]
    table = pd.DataFrame(records)
    table["mark"] = _marks(table)
    table[["improvement_pct", "p_value"]] = _improvements(table, USER_STEPS)
    table[["improvement_cost_pct", "p_value_cost"]] = _improvements(table, ENV_STEPS)
    return table


def _stats(seeds: pd.DataFrame, metric: Metric, expected: int) -> dict[str, object]:
    """One cell's numbers from its seeds' outcomes (``_latest_per_seed`` rows)."""
    done = seeds[seeds["outcome"] == "finished"]
    column = f"metric:{metric.key}"
    values = done[column].dropna().to_numpy(float) if column in done else np.empty(0)
    env_steps = metric_column(done, ENV_STEPS_METRIC).dropna()
    failed = int((seeds["outcome"] == "failed").sum())
    running = int((seeds["outcome"] == "running").sum())
    return {
        "metric": metric.key,
        "mean": values.mean() if values.size else math.nan,
        "std": values.std(ddof=1) if values.size > 1 else math.nan,
        "n": int(values.size),
        "expected": expected,
        "failed": failed,
        "running": running,
        "status": _status(int(values.size), expected, failed, running),
        "env_steps": float(env_steps.mean()) if len(env_steps) else math.nan,
        "values": values,
    }


def _differing_params(runs: pd.DataFrame) -> str:
    """``key=value (k runs), value (k runs)`` for every config param, bookkeeping aside, whose
    value differs between ``runs``; ``""`` when they all ran the same config. The keys a cell is
    split by are skipped: within a cell they agree, up to how older runs spell a default (a
    missing env.candidates is catalog)."""
    parts = []
    for column in sorted(c for c in runs.columns if c.startswith("param:")):
        key = column.removeprefix("param:")
        if (
            key in PER_RUN_PARAMS
            or key in (BUDGET_KEY, REPLAY_KEY, PROTOCOL_KEY)
            or key.startswith(PER_RUN_PREFIXES)
            or _is_path(key)
        ):
            continue
        values = runs[column].fillna("<unset>").astype(str)
        if values.nunique() > 1:
            counts = values.value_counts().sort_index()
            parts.append(f"{key}=" + ", ".join(f"{v} ({k} run{'s' * (k > 1)})" for v, k in counts.items()))
    return "; ".join(parts)


def _is_path(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last == "dir" or last.endswith("_dir")


def _status(n: int, expected: int, failed: int, running: int) -> str:
    if n and n >= expected:
        return "complete"
    if n:
        return "partial"
    if failed:
        return "failed"
    return "running" if running else "missing"


def _marks(table: pd.DataFrame) -> pd.Series:
    """Per column, ``best`` for the highest mean and ``second`` for the next one down (every
    metric here is higher-is-better); equal means share a mark."""
    marks = pd.Series("", index=table.index)
    for _, cells in table[table["n"] > 0].groupby(["column", "metric"], sort=False):
        means = cells["mean"]
        best = means.max()
        is_best = means.map(lambda m, b=best: math.isclose(m, b, rel_tol=1e-9, abs_tol=1e-12))
        marks[is_best[is_best].index] = "best"
        rest = means[~is_best]
        if not rest.empty:
            second = rest.max()
            is_second = rest.map(lambda m, s=second: math.isclose(m, s, rel_tol=1e-9, abs_tol=1e-12))
            marks[is_second[is_second].index] = "second"
    return marks


def _improvements(table: pd.DataFrame, budget: str) -> pd.DataFrame:
    """Each variant's change against its own algo's baseline of ``budget`` in the same column,
    with a Welch t-test so that a gain within seed noise is visible as such."""
    is_base = (table["mode"] == "baseline") & (table["budget"] == budget)
    baseline = table[is_base].set_index(["algo", "column", "metric"])
    out = pd.DataFrame(math.nan, index=table.index, columns=["improvement", "p"])
    for i, cell in table[(table["mode"] != "baseline") & (table["n"] > 0)].iterrows():
        key = (cell["algo"], cell["column"], cell["metric"])
        if key not in baseline.index or baseline.loc[key, "n"] == 0:
            continue
        base = baseline.loc[key]
        if base["mean"] != 0:
            out.loc[i, "improvement"] = (cell["mean"] - base["mean"]) / abs(base["mean"]) * 100
        if cell["n"] >= 2 and base["n"] >= 2:
            out.loc[i, "p"] = float(ttest_ind(cell["values"], base["values"], equal_var=False).pvalue)
    return out


def _columns(table: pd.DataFrame) -> list[tuple[str, Metric]]:
    """(column header, metric) of every table column, in order."""
    pairs = dict.fromkeys(zip(table["column"], table["metric"], strict=True))
    return [(column, METRICS[key]) for column, key in pairs]


def _cells(table: pd.DataFrame) -> dict[tuple[str, str, str], pd.Series]:
    return {(c["row"], c["column"], c["metric"]): c for _, c in table.iterrows()}


def _fmt(x: float, decimals: int) -> str:
    return "–" if math.isnan(x) else f"{x:.{decimals}f}"


def _holes(cell: pd.Series) -> list[str]:
    missing = cell["expected"] - cell["n"] - cell["failed"] - cell["running"]
    counts = (("failed", cell["failed"]), ("running", cell["running"]), ("missing", missing))
    return [f"{k} {name}" for name, k in counts if k > 0]


def _empty_text(cell: pd.Series) -> str:
    parts = [f"{name} ({k})" for name, k in (("failed", cell["failed"]), ("running", cell["running"])) if k]
    return ", ".join(parts) or "missing"


def cell_text(cell: pd.Series) -> str:
    """The markdown text of one cell, e.g. ``**0.0531 ± 0.0040** (n=4/5, 1 failed) +12.3% (p=0.041)``."""
    if cell["n"] == 0:
        return _empty_text(cell)
    decimals = METRICS[cell["metric"]].decimals
    core = f"{_fmt(cell['mean'], decimals)} ± {_fmt(cell['std'], decimals)}"
    core = {"best": f"**{core}**", "second": f"{core}*"}.get(cell["mark"], core)
    if cell["status"] == "complete":
        count = f"(n={cell['n']})"
    else:
        count = f"(n={cell['n']}/{cell['expected']}, {', '.join(_holes(cell))})"
    text = f"{core} {count}"
    if cell["mode"] != "baseline":
        text += " " + _change_text(cell["improvement_pct"], cell["p_value"])
        if _has_cost_comparison(cell):
            text += "; =cost " + _change_text(cell["improvement_cost_pct"], cell["p_value_cost"])
    return text


def _change_text(improvement: float, p: float) -> str:
    return f"{'–' if math.isnan(improvement) else f'{improvement:+.1f}%'} ({_p_text(p)})"


def _has_cost_comparison(cell: pd.Series) -> bool:
    return not (math.isnan(cell["improvement_cost_pct"]) and math.isnan(cell["p_value_cost"]))


def _p_text(p: float) -> str:
    if math.isnan(p):
        return "p=–"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def to_markdown(table: pd.DataFrame, title: str = "Table I") -> str:
    """The table as markdown. Columns ``<column> env_steps`` (each row's mean final
    ``perf/env_steps``) follow the metric columns, and only for columns whose runs logged it, so
    that a table of runs from before the trainer counted env steps reads as it always did."""
    columns = _columns(table)
    cells = _cells(table)
    env_steps = table.groupby(["row", "column"], sort=False)["env_steps"].first()
    cost_envs = [
        column
        for column in dict.fromkeys(table["column"])
        if table.loc[table["column"] == column, "env_steps"].notna().any()
    ]
    header = [
        "Method",
        *(f"{env} {metric.label}" for env, metric in columns),
        *(f"{env} env_steps" for env in cost_envs),
    ]
    lines = [
        f"## {title}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + [":---:"] * (len(columns) + len(cost_envs))) + "|",
    ]
    for row in dict.fromkeys(table["row"]):
        texts = [cell_text(cells[(row, env, metric.key)]) for env, metric in columns]
        texts += [_fmt(env_steps[(row, env)], 0) for env in cost_envs]
        lines.append("| " + " | ".join([row, *texts]) + " |")
    lines += [
        "",
        "mean ± sample std over seeds; **bold** best, * second best per column; -E/-J/-RM rows add "
        "the change against the same algorithm's baseline and a Welch t-test p-value.",
    ]
    if table.apply(_has_cost_comparison, axis=1).any():
        lines.append(
            "(=cost) rows ran on a budget of env steps (trainer.budget=env_steps): a cost-matched "
            "baseline takes as many as the MACS runs did; `=cost` after a change compares against it."
        )
    return "\n".join(lines)


def to_csv(table: pd.DataFrame) -> str:
    return table.loc[:, list(CSV_COLUMNS)].to_csv(index=False)


def _tex(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text


def _tex_cell(cell: pd.Series) -> str:
    if cell["n"] == 0:
        return "--"
    decimals = METRICS[cell["metric"]].decimals
    std = "--" if math.isnan(cell["std"]) else f"{cell['std']:.{decimals}f}"
    text = f"{cell['mean']:.{decimals}f} $\\pm$ {std}"
    text = {"best": f"\\textbf{{{text}}}", "second": f"{text}$^{{*}}$"}.get(cell["mark"], text)
    if cell["status"] != "complete":
        text += f" {{\\scriptsize ({cell['n']}/{cell['expected']})}}"
    return text


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs tabular, one rule-separated block per algorithm and one for the reference
    policies; a partial cell carries its finished/expected seed count."""
    columns = _columns(table)
    cells = _cells(table)
    envs = list(dict.fromkeys(env for env, _ in columns))
    widths = [sum(1 for e, _ in columns if e == env) for env in envs]
    lines = [f"\\begin{{tabular}}{{l{'c' * len(columns)}}}", "\\toprule"]
    lines.append(
        "Method & "
        + " & ".join(f"\\multicolumn{{{w}}}{{c}}{{{_tex(env)}}}" for env, w in zip(envs, widths, strict=True))
        + " \\\\"
    )
    start = 2
    rules = []
    for w in widths:
        rules.append(f"\\cmidrule(lr){{{start}-{start + w - 1}}}")
        start += w
    lines.append(" ".join(rules))
    lines.append(" & " + " & ".join(_tex(metric.label) for _, metric in columns) + " \\\\")
    lines.append("\\midrule")
    previous = None
    for row, algo in dict.fromkeys(zip(table["row"], table["algo"], strict=True)):
        group = "reference" if algo in reference_algos() else algo
        if previous is not None and group != previous:
            lines.append("\\midrule")
        previous = group
        texts = [_tex_cell(cells[(row, env, metric.key)]) for env, metric in columns]
        lines.append(" & ".join([_tex(row), *texts]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def output_stem(experiment: str, sweep_ids: Sequence[str] | None) -> str:
    return experiment + (f"-{'+'.join(sweep_ids)}" if sweep_ids else "")


def write_tables(table: pd.DataFrame, out_dir: Path, stem: str, title: str) -> list[Path]:
    """Writes ``<stem>.md``, ``.csv`` and ``.tex`` and returns their paths in that order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = {
        ".md": to_markdown(table, title) + "\n\n" + summary_line(table) + "\n",
        ".csv": to_csv(table),
        ".tex": to_latex(table),
    }
    paths = []
    for suffix, text in texts.items():
        path = out_dir / f"{stem}{suffix}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def summary_line(table: pd.DataFrame) -> str:
    counts = table["status"].value_counts()
    names = ("complete", "partial", "failed", "running", "missing")
    return "cells: " + ", ".join(f"{int(counts.get(name, 0))} {name}" for name in names)
