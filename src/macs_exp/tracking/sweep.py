"""Sweeps: one MLflow parent run per multirun, made before any job starts, and a summary at the end.

Hydra runs a callback's multirun hooks in the launching process and its job hooks wherever the
job runs (a joblib worker, a SLURM node, a Ray worker). The callback travels there pickled, after
``on_multirun_start``, so the sweep id and parent run made at the start reach every job whatever
the launcher. Creating the database and experiment here, once, is also what keeps parallel jobs
from racing to create a fresh SQLite store.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from macs_exp.metrics import KEY_METRICS
from macs_exp.schema import as_schema
from macs_exp.tracking.config import TrackingConfig
from macs_exp.tracking.mlflow_tracker import ensure_experiment, search_all, tracked_run, tracking_uri
from macs_exp.tracking.tags import GROUP_TAG, ROLE_RUN, ROLE_SWEEP

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


log = logging.getLogger("macs_exp")

_UNFINISHED = ("RUNNING", "SCHEDULED")


@dataclass(frozen=True)
class SweepContext:
    sweep_id: str
    # None with tracking.enabled=false.
    parent_run_id: str | None

    def job_tags(self, job_num: int, overrides: Sequence[str]) -> dict[str, str]:
        tags = {"sweep_id": self.sweep_id, "sweep_job": str(job_num), "sweep_overrides": " ".join(overrides)}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        return tags


_current: SweepContext | None = None
# The sweep this process launches (set by the callback before the sweeper runs), for a sweeper
# that records jobs it need not launch (``record_skipped``).
_launching: SweepContext | None = None


def current_sweep() -> SweepContext | None:
    """The sweep the job running in this process belongs to; None for a single run."""
    return _current


def launching_sweep() -> SweepContext | None:
    """The sweep this process launches; None outside a sweep's launching process."""
    return _launching


def record_failed_job(
    cfg: TrackingConfig,
    sweep: SweepContext,
    job_num: int,
    tags: Mapping[str, str],
    config_yaml: str,
    exc: BaseException,
) -> None:
    """Makes sure a job that failed before its run opened (a bad value, missing data) still
    leaves a FAILED run with its traceback, so the summary and the tables count it."""
    if not cfg.enabled or _job_runs(cfg, sweep.sweep_id, job_num):
        return
    try:
        with tracked_run(cfg, {}, tags, config_yaml):
            raise exc
    except type(exc):
        pass


# Set on a sweep's parent run, per job, to the seeds the results ledger already held: the job
# skipped them (macs_exp.tracking.ledger), and the summary lists them as SKIPPED.
SKIPPED_TAG_PREFIX = "ledger_skipped."
SKIPPED = "SKIPPED"


def record_skipped(cfg: TrackingConfig, tags: Mapping[str, str], seeds: Sequence[int]) -> None:
    """Notes on the sweep's parent run that this job skipped ``seeds``; nothing outside a sweep."""
    parent, job = tags.get("mlflow.parentRunId"), tags.get("sweep_job")
    if cfg.enabled and parent and job is not None:
        _client(cfg).set_tag(parent, f"{SKIPPED_TAG_PREFIX}{job}", ",".join(map(str, seeds)))


class JobLost(Exception):
    """A job's process died without a word (SIGKILL, the OOM killer)."""


def close_lost_job(
    cfg: TrackingConfig,
    sweep: SweepContext,
    job_num: int,
    tags: Mapping[str, str],
    config_yaml: str,
    why: str,
) -> None:
    """Closes the run of a job whose process died as FAILED, saying why; a job that died before
    opening its run gets a FAILED run of its own, so that it is counted like any failure."""
    if not cfg.enabled:
        return
    runs = _job_runs(cfg, sweep.sweep_id, job_num)
    if not runs:
        record_failed_job(cfg, sweep, job_num, tags, config_yaml, JobLost(f"the job's process was {why}"))
        return
    client = _client(cfg)
    for run in runs:
        if run.info.status in _UNFINISHED:
            client.set_tag(run.info.run_id, "failure", f"lost: the job's process was {why}")
            client.set_terminated(run.info.run_id, "FAILED")


def _client(cfg: TrackingConfig) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(cfg))


def _job_runs(cfg: TrackingConfig, sweep_id: str, job_num: int | None = None) -> list[Any]:
    client = _client(cfg)
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        return []
    query = f"tags.sweep_id = '{sweep_id}' and tags.role = '{ROLE_RUN}'"
    if job_num is not None:
        query += f" and tags.sweep_job = '{job_num}'"
    return list(search_all(client, experiment.experiment_id, query))


def _planned_jobs(config: DictConfig) -> list[list[str]] | None:
    """The override list of every job the basic sweeper (the app's packs seeds, see
    ``macs_exp.tracking.packing``) will launch (None for other sweepers, such as Optuna, that
    decide as they go)."""
    target = str(config.hydra.sweeper.get("_target_", ""))
    if not target.endswith(("BasicSweeper", "SeedPackingSweeper")):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from macs_exp.tracking.packing import plan_batches

    split = plan_batches if target.endswith("SeedPackingSweeper") else BasicSweeper.split_arguments
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in split(overrides, None) for job in batch]


class SweepCallback(Callback):
    """Registered in conf/config.yaml under ``hydra.callbacks``; does nothing for single runs."""

    def __init__(self) -> None:
        self.context: SweepContext | None = None
        self.tracking: TrackingConfig | None = None
        self.sweep_dir: str | None = None
        self.planned: list[list[str]] | None = None
        # The launching process; a forked worker inherits the callback but must not close the sweep.
        self._owner: int | None = None
        self._closed = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        tracking: TrackingConfig = as_schema(config.tracking, TrackingConfig)
        self.tracking = tracking
        self._owner = os.getpid()
        self.sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        self.planned = _planned_jobs(config)
        sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        parent = None
        if tracking.enabled:
            try:
                parent = self._open_parent(config, tracking, sweep_id)
            except Exception as err:
                # Hydra only warns about a callback's exception and would launch the jobs anyway,
                # each racing to create the store: stop here instead.
                log.error(
                    "sweep: cannot open the MLflow store %s (%s: %s); fix tracking.uri / tracking.dir, "
                    "or run with tracking.enabled=false",
                    tracking_uri(tracking),
                    type(err).__name__,
                    err,
                )
                raise SystemExit(2) from err
            atexit.register(self._close, aborted=True)
        self.context = SweepContext(sweep_id, parent)
        global _launching
        _launching = self.context
        planned = "" if self.planned is None else f", {len(self.planned)} jobs"
        log.info("sweep %s%s: MLflow parent run %s, outputs in %s", sweep_id, planned, parent, self.sweep_dir)

    def _open_parent(self, config: DictConfig, tracking: TrackingConfig, sweep_id: str) -> str:
        client = _client(tracking)
        experiment_id = ensure_experiment(tracking)
        tags = {
            "role": ROLE_SWEEP,
            "sweep_id": sweep_id,
            "sweep_dir": self.sweep_dir,
            "sweep_overrides": " ".join(config.hydra.overrides.task),
            "sweep_jobs_planned": "" if self.planned is None else str(len(self.planned)),
        }
        return str(client.create_run(experiment_id, run_name=f"sweep-{sweep_id}", tags=tags).info.run_id)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _current
        _current = self.context

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        global _current
        _current = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = self._close(aborted=False)
        if failed:
            log.error(
                "sweep %s: %d job(s) did not finish; their runs are marked in MLflow and listed above",
                self.context.sweep_id if self.context else "?",
                failed,
            )
            # Every job has run; the exit code tells scripts and CI that some failed.
            raise SystemExit(1)

    def _close(self, aborted: bool) -> int:
        """Writes the summary, closes the parent run and returns how many jobs did not finish.

        Also runs at exit when the sweep itself died (a launcher error, a killed worker pool), so
        that the parent run and any job left RUNNING are closed instead of staying open forever.
        """
        if self._closed or self.context is None or self.tracking is None or os.getpid() != self._owner:
            return 0
        if self.context.parent_run_id is None:
            return 0
        self._closed = True
        # After an abort, jobs a cluster launcher submitted may still be running: leave them open.
        rows = summarize(self.tracking, self.context, self.planned, close_lost=not aborted)
        table = format_summary(rows)
        failed = sum(row["status"] not in ("FINISHED", SKIPPED) for row in rows)
        skipped = sum(row["status"] == SKIPPED for row in rows)
        finished = len(rows) - failed - skipped
        headline = f"sweep {self.context.sweep_id}: {finished} of {len(rows)} jobs finished"
        if skipped:
            headline += f", {skipped} skipped (in the ledger)"
        if aborted:
            headline += " (the sweep itself stopped early)"
        log.info("%s\n%s", headline, table)
        client = _client(self.tracking)
        parent = self.context.parent_run_id
        if self.sweep_dir:
            path = Path(self.sweep_dir) / "summary.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# {headline}\n\n{table}\n")
        client.log_text(parent, f"# {headline}\n\n{table}\n", "summary.md")
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        client.set_tag(parent, "sweep_jobs", " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        client.set_terminated(parent, "FAILED" if failed or aborted else "FINISHED")
        return failed


def summarize(
    tracking: TrackingConfig, sweep: SweepContext, planned: list[list[str]] | None, close_lost: bool = True
) -> list[dict[str, str]]:
    """One row per job (per seed of a seed-parallel job, ``<job>/s<seed>``): its run's status and
    key metric, and every planned job that left no run at all as NOT STARTED. With ``close_lost``
    (every job has returned), a run still open was lost with its process (SIGKILL, the OOM
    killer): it is closed as FAILED and shown as LOST."""
    client = _client(tracking)
    by_job: dict[tuple[int, int], dict[str, str]] = {}
    for run in _job_runs(tracking, sweep.sweep_id):
        tags, status = run.data.tags, run.info.status
        if status in _UNFINISHED and close_lost:
            client.set_tag(run.info.run_id, "failure", "lost: its process ended without closing the run")
            client.set_terminated(run.info.run_id, "FAILED")
            status = "LOST"
        # A job's summary line shows its key metric, if it logged one.
        metric = next((k for k in KEY_METRICS if k in run.data.metrics), None)
        job = int(tags.get("sweep_job", -1))
        # The seeds of a seed-parallel job (macs_exp.trainer.parallel) are runs of their own.
        seed = int(tags.get("seed", -1)) if GROUP_TAG in tags else -1
        row = {
            "job": str(job) if seed < 0 else f"{job}/s{seed}",
            "status": status,
            "overrides": tags.get("sweep_overrides", ""),
            "metric": f"{metric}={run.data.metrics[metric]:.4g}" if metric else "",
            "run_id": run.info.run_id,
        }
        # A job has one run (per seed); keep the finished one if a rerun ever shares the number.
        if (job, seed) not in by_job or row["status"] == "FINISHED":
            by_job[(job, seed)] = row
    for job, seeds in _skipped_jobs(client, sweep).items():
        by_job[(job, -2)] = {
            "job": str(job),
            "status": SKIPPED,
            "overrides": " ".join(planned[job]) if planned and job < len(planned) else "",
            "metric": f"seeds {seeds} in the ledger",
            "run_id": "",
        }
    started = {job for job, _ in by_job}
    for num, overrides in enumerate(planned or []):
        if num in started:
            continue
        by_job.setdefault(
            (num, -1),
            {
                "job": str(num),
                "status": "NOT STARTED",
                "overrides": " ".join(overrides),
                "metric": "",
                "run_id": "",
            },
        )
    return [by_job[k] for k in sorted(by_job)]


def _skipped_jobs(client: MlflowClient, sweep: SweepContext) -> dict[int, str]:
    """Job number -> the seeds it skipped, from the parent run's tags (``record_skipped``)."""
    if sweep.parent_run_id is None:
        return {}
    tags = client.get_run(sweep.parent_run_id).data.tags
    return {
        int(key.removeprefix(SKIPPED_TAG_PREFIX)): value
        for key, value in tags.items()
        if key.startswith(SKIPPED_TAG_PREFIX)
    }


def format_summary(rows: list[dict[str, str]]) -> str:
    """A markdown table; the overrides column keeps only what differs between jobs."""
    tokens = [r["overrides"].split() for r in rows]
    shared = set.intersection(*map(set, tokens)) if len(rows) > 1 else set()
    rows = [
        {**r, "overrides": " ".join(t for t in toks if t not in shared)}
        for r, toks in zip(rows, tokens, strict=True)
    ]
    lines = ["| job | status | overrides | final | run |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['job']} | {r['status']} | {r['overrides']} | {r['metric']} | {r['run_id']} |" for r in rows
    ]
    return "\n".join(lines)
