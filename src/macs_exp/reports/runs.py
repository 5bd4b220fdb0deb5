"""The runs of an experiment as a pandas frame, the one shape every report starts from.

Every run the trainer opens carries the tags ``role`` (``run`` for a training job, ``expert``
for an expert trained on its behalf, ``sweep`` for a sweep's parent run), ``algo``, ``mode``,
``env``, ``seed`` and, inside a sweep, ``sweep_id``. Reports select on these tags, never on
run names.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from macs_exp import plugins
from macs_exp.envs.config import CANDIDATES
from macs_exp.tracking import ledger
from macs_exp.tracking.mlflow_tracker import default_tracking_uri, search_all
from macs_exp.tracking.tags import ROLE_RUN, ROLE_SWEEP

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


# Columns of load_runs, before the metric:<key> and param:<key> columns.
RUN_COLUMNS = ("run_id", "status", "sweep_id", "algo", "mode", "env", "seed", "start_time", "end_time")
SWEEP_COLUMNS = ("run_id", "status", "sweep_id", "start_time", "end_time")

# What ``trainer.total_steps`` bounds: the user-steps of the paper, or every env step the run
# takes (real steps, MACS's counterfactual queries and stage 2), which the trainer logs
# cumulatively as ``perf/env_steps``.
BUDGET_KEY = "trainer.budget"
USER_STEPS = "user_steps"
ENV_STEPS = "env_steps"
BUDGETS = (USER_STEPS, ENV_STEPS)
ENV_STEPS_METRIC = "perf/env_steps"
COST_SUFFIX = " (=cost)"
# MACS runs under another stage-2 replay than the pseudo-code's are rows of their own too:
# their budget is written "<budget>/<replay>" (e.g. user_steps/eq9), shown as "DDPG-J (eq9)".
REPLAY_KEY = "macs.replay"
DEFAULT_REPLAY = "algorithm2"
# What a rating env may recommend (env.candidates): the offline protocol. Runs of rating envs from
# before the param existed served the whole catalogue.
PROTOCOL_KEY = "env.candidates"
DEFAULT_PROTOCOL = "catalog"
# Where a rating env read its dataset: runs of two folders are two datasets.
DATA_DIR_KEY = "env.data_dir"
# Logged only by runs on a rating dataset (the Table I metrics of the test split).
RATING_METRIC = "test/precision"
# Logged by every run in which pi_c exists (expert and joint), never by the others.
MACS_MARKER_METRIC = "macs/stage2_runs"


def open_client(tracking_uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client: MlflowClient, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise LookupError(
            f"no MLflow experiment named {experiment!r} in {client.tracking_uri}; it has {names}. "
            "Pass --experiment with one of them, or --tracking-uri for another store"
        )
    return found.experiment_id


def load_runs(
    client: MlflowClient,
    experiment: str,
    sweep_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per training run (``role=run``) of ``experiment``, optionally only from the
    given sweeps: the ``RUN_COLUMNS``, then ``metric:<key>`` (the last logged value of each
    metric) and ``param:<key>`` (every flattened config value) columns.

    Runs of every status are returned; the caller decides what a FAILED or a still-RUNNING run
    means. ``seed`` is an int, times are pandas timestamps (UTC), a missing sweep is ``""``.
    """
    rows = []
    for run in search_all(client, _experiment_id(client, experiment), f"tags.role = '{ROLE_RUN}'"):
        tags = run.data.tags
        sweep_id = tags.get("sweep_id", "")
        if sweep_ids is not None and sweep_id not in sweep_ids:
            continue
        row = {
            "run_id": run.info.run_id,
            "status": run.info.status,
            "sweep_id": sweep_id,
            "algo": tags.get("algo", ""),
            "mode": tags.get("mode", ""),
            "env": tags.get("env", ""),
            "seed": int(tags.get("seed", -1)),
            "start_time": _time(run.info.start_time),
            "end_time": _time(run.info.end_time),
        }
        row.update({f"metric:{k}": v for k, v in run.data.metrics.items()})
        row.update({f"param:{k}": v for k, v in run.data.params.items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else list(RUN_COLUMNS))
    return frame.sort_values(["start_time", "run_id"], ignore_index=True) if rows else frame


def ledger_runs(path: str | Path, experiment: str | None = None) -> pd.DataFrame:
    """The rows of a results ledger (``macs_exp.tracking.ledger``) as a ``load_runs`` frame of
    FINISHED runs (of ``experiment`` when given): what the results page and the cost of a
    cost-matched baseline are computed from when no MLflow store holds the runs."""
    rows = []
    for entry in ledger.read(path):
        if experiment is not None and entry.experiment != experiment:
            continue
        end = pd.Timestamp(entry.finished_at)
        row: dict[str, object] = {
            # A run tracked without MLflow has no run id; its config hash names it as well.
            "run_id": entry.run_id or entry.config_hash,
            "status": "FINISHED",
            "sweep_id": "",
            "algo": entry.algo,
            "mode": entry.mode,
            "env": entry.env,
            "seed": entry.seed,
            "start_time": end - pd.Timedelta(seconds=entry.wall_time_s),
            "end_time": end,
            "experiment": entry.experiment,
            "config_hash": entry.config_hash,
            "commit": entry.commit,
            "wall_time_s": entry.wall_time_s,
            "same_as": entry.same_as,
        }
        row.update({f"metric:{k}": v for k, v in entry.metrics.items()})
        row.update({f"param:{k}": v for k, v in entry.params.items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else list(RUN_COLUMNS))
    return frame.sort_values(["start_time", "run_id"], ignore_index=True) if rows else frame


def load_selection(client: MlflowClient, experiment: str, sweep_ids: Sequence[str] | None) -> pd.DataFrame:
    """``load_runs``, but an empty selection is an error too: a table of nothing but holes
    would only hide a wrong ``--experiment`` or ``--sweep-id``."""
    frame = load_runs(client, experiment, sweep_ids)
    if frame.empty:
        where = f"sweeps {list(sweep_ids)}" if sweep_ids else "any sweep or outside one"
        known = sorted(set(load_sweeps(client, experiment)["sweep_id"]))
        raise LookupError(
            f"experiment {experiment!r} in {client.tracking_uri} has no training runs (tag role=run) "
            f"in {where}; its sweeps are {known}"
        )
    return frame


def load_sweeps(client: MlflowClient, experiment: str) -> pd.DataFrame:
    """The sweeps' parent runs (``role=sweep``) of ``experiment``, oldest first."""
    rows = [
        {
            "run_id": run.info.run_id,
            "status": run.info.status,
            "sweep_id": run.data.tags.get("sweep_id", ""),
            "start_time": _time(run.info.start_time),
            "end_time": _time(run.info.end_time),
        }
        for run in search_all(client, _experiment_id(client, experiment), f"tags.role = '{ROLE_SWEEP}'")
    ]
    frame = pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
    return frame.sort_values(["start_time", "run_id"], ignore_index=True)


# How reports name and order what they show, as the plug-ins declare it: the paper's rows are
# DDPG, DDPG-E, DDPG-J, ..., then the reference policies.


def learning_algos() -> list[str]:
    """The agents that learn, in their rows' order."""
    return [p.name for p in plugins.in_order(plugins.AGENTS) if p.schema.learns]


def reference_algos() -> list[str]:
    """Fixed policies the learners are compared against (run in mode baseline only)."""
    return [p.name for p in plugins.in_order(plugins.AGENTS) if not p.schema.learns]


def mode_order() -> list[str]:
    return [p.name for p in plugins.in_order(plugins.MODES)]


def row_label(algo: str, mode: str, budget: str = USER_STEPS) -> str:
    """``DDPG-E`` for ddpg in expert mode, ``Popular`` for a reference policy; a mode no plug-in
    declares (a run of an older version) is shown as ``-<MODE>``. A run whose ``budget`` is not
    counted in user-steps is a different experiment and says so: ``DDPG (=cost)``."""
    name = algo.title() if algo in reference_algos() else algo.upper()
    known = plugins.MODES.get(mode)
    return name + (known.suffix if known is not None else f"-{mode.upper()}") + budget_suffix(budget)


def budget_suffix(budget: str) -> str:
    """``""`` for the user-steps budget, `` (=cost)`` for env steps (the cost-matched
    baseline), `` (<budget>)`` for a budget this version does not know; then `` (<replay>)``
    for a MACS run under another replay (``user_steps/eq9``)."""
    base, _, replay = budget.partition("/")
    suffix = "" if base == USER_STEPS else COST_SUFFIX if base == ENV_STEPS else f" ({base})"
    return suffix + (f" ({replay})" if replay else "")


def metric_column(frame: pd.DataFrame, key: str) -> pd.Series:
    """Each run's last logged ``key``, NaN for a run (or a whole selection) that never logged it."""
    column = f"metric:{key}"
    return frame[column] if column in frame else pd.Series(float("nan"), index=frame.index)


def budgets(frame: pd.DataFrame) -> pd.Series:
    """Each run's ``trainer.budget`` (runs from before the param existed counted user-steps),
    with ``/<replay>`` appended for a MACS run whose ``macs.replay`` is not the default."""
    column = f"param:{BUDGET_KEY}"
    if column not in frame:
        budget = pd.Series(USER_STEPS, index=frame.index, dtype=object)
    else:
        budget = frame[column].fillna(USER_STEPS).astype(str)
    replay_column, marker = f"param:{REPLAY_KEY}", f"metric:{MACS_MARKER_METRIC}"
    if replay_column not in frame or marker not in frame:
        return budget
    replay = frame[replay_column].fillna(DEFAULT_REPLAY).astype(str)
    other = frame[marker].notna() & (replay != DEFAULT_REPLAY)
    return budget.where(~other, budget + "/" + replay)


def protocols(frame: pd.DataFrame) -> pd.Series:
    """Each run's ``env.candidates``: ``catalog`` where a run of a rating env lacks the param (older
    versions had no other protocol), ``""`` for the runs of envs that are no rating dataset."""
    given = _param(frame, PROTOCOL_KEY)
    rating = given.notna() | _param(frame, DATA_DIR_KEY).notna() | metric_column(frame, RATING_METRIC).notna()
    rating_envs = set(frame.loc[rating, "env"])
    return given.fillna(DEFAULT_PROTOCOL).astype(str).where(frame["env"].isin(rating_envs), "")


def data_dirs(frame: pd.DataFrame) -> pd.Series:
    """Each run's ``env.data_dir``, ``""`` where it has none (no rating env)."""
    return _param(frame, DATA_DIR_KEY).fillna("").astype(str)


def protocol_order(values: Iterable[str]) -> list[str]:
    """The protocols present, in ``env.candidates``'s order (``""``, no protocol, first)."""
    return ordered(values, ("", *CANDIDATES))


def _param(frame: pd.DataFrame, key: str) -> pd.Series:
    column = f"param:{key}"
    return frame[column] if column in frame else pd.Series(None, index=frame.index, dtype=object)


def budget_order(values: Iterable[str]) -> list[str]:
    """The budgets present, the paper's user-steps first, then the cost-matched one."""
    return ordered(values, BUDGETS)


def ordered(values: Iterable[str], first: Sequence[str]) -> list[str]:
    """The values present, ``first`` in its own order, then the rest alphabetically."""
    present = set(values)
    return [v for v in first if v in present] + sorted(present - set(first))


def _time(millis: int | None) -> pd.Timestamp:
    return pd.Timestamp(millis, unit="ms", tz="UTC") if millis else pd.NaT


def add_store_args(parser: argparse.ArgumentParser) -> None:
    """``--experiment`` and ``--tracking-uri``: which experiment of which store a script reads."""
    parser.add_argument("--experiment", required=True, help="MLflow experiment (a preset's name)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store; default: the one `python -m macs_exp` writes to (conf/tracking)",
    )


def client_for(args: argparse.Namespace) -> MlflowClient:
    """The client of ``--tracking-uri``, else of the store the trainer writes to."""
    return open_client(args.tracking_uri or default_tracking_uri())


def add_selection_args(parser: argparse.ArgumentParser) -> None:
    """The arguments every report script takes to say which runs it reads."""
    add_store_args(parser)
    parser.add_argument(
        "--sweep-id",
        action="append",
        dest="sweep_ids",
        metavar="ID",
        help="only runs of this sweep (repeatable); default: every run of the experiment",
    )
    parser.add_argument(
        "--no-log", action="store_true", help="do not log the outputs as artifacts of the sweeps' parent runs"
    )


def log_to_sweeps(
    client: MlflowClient,
    experiment: str,
    sweep_ids: Iterable[str],
    paths: Iterable[Path],
    artifact_path: str,
) -> list[str]:
    """Logs ``paths`` as artifacts of the parent run of each sweep in ``sweep_ids``; returns
    the parent run ids written to (runs outside any sweep have no parent to log to)."""
    wanted = {s for s in sweep_ids if s}
    sweeps = load_sweeps(client, experiment)
    parents = list(sweeps.loc[sweeps["sweep_id"].isin(wanted), "run_id"])
    files = list(paths)
    for run_id in parents:
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path)
    return parents
