"""The simulator cost of the MACS runs of an experiment: the budget that makes a baseline
cost-matched.

MACS spends env steps a user-step count does not show (counterfactual queries, stage 2). A
baseline run with ``trainer.budget=env_steps`` and ``trainer.total_steps`` set to this mean takes
as many env steps as the MACS runs did, which is the comparison that asks whether MACS helps
beyond its extra simulator calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from macs_exp.reports.runs import ENV_STEPS_METRIC, data_dirs, metric_column, protocols

MACS_MODES = ("expert", "joint")


def mean_env_steps(
    runs: pd.DataFrame,
    modes: Sequence[str] = MACS_MODES,
    algo: str | None = None,
    env: str | None = None,
    *,
    protocol: str | None = None,
    data_dir: str | None = None,
) -> int:
    """The mean final ``perf/env_steps`` of the FINISHED runs of ``runs`` (a ``load_runs``
    frame) in ``modes`` (and of ``algo``, ``env``, ``protocol`` and ``data_dir``, when given),
    rounded half up to a whole budget. An experiment over several datasets and protocols (table1)
    needs one budget per ``env``, ``env.candidates`` (a run without it: ``catalog``) and folder,
    since Table I never compares runs across them.

    Raises ``LookupError`` when no such run logged the metric: a budget of 0 or NaN would launch
    baselines that train nothing."""
    runs = runs.assign(protocol=protocols(runs), data_dir=data_dirs(runs))
    chosen = runs[(runs["status"] == "FINISHED") & runs["mode"].isin(modes)]
    wanted = (("algo", algo), ("env", env), ("protocol", protocol), ("data_dir", data_dir))
    for column, value in wanted:
        if value is not None:
            chosen = chosen[chosen[column] == value]
    steps = metric_column(chosen, ENV_STEPS_METRIC).dropna()
    if steps.empty:
        where = (
            f"on {env}" if env else None,
            f"under env.candidates={protocol}" if protocol else None,
            f"from {data_dir}" if data_dir else None,
        )
        which = " ".join(v for v in (algo, "runs", *where) if v)
        raise LookupError(
            f"no FINISHED {which} in mode {'/'.join(modes)} logged {ENV_STEPS_METRIC} "
            f"({len(chosen)} FINISHED without it)"
        )
    return math.floor(float(steps.mean()) + 0.5)
