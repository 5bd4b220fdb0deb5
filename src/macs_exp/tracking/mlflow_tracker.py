"""MLflow tracking with batched writes and a run that records its own failure.

Metrics are buffered and sent with ``log_batch`` (one request per flush instead of one per
value): with SQLite each request is a transaction, and per-value logging would cost more
than the training step it measures.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from macs_exp.schema import ResumeError
from macs_exp.tracking.config import TrackingConfig

# log_batch accepts at most 1000 metrics, 100 params and 100 tags per request.
_MAX_METRICS = 1000
_MAX_PARAMS = 100
_MAX_TAGS = 100

# The experiment tag by which MLflow 3's UI tells model training ("custom_model_development",
# the runs table and charts) from GenAI apps and agents ("genai_development", traces). The 3.17
# UI reads it only when its sidebar switch (GenAI / Model training) is turned off; as shipped,
# with the switch, it opens the view the switch last chose (README, "Comparing runs in the UI").
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


class Terminated(Exception):
    """The process was asked to stop (SIGTERM: ``kill``, a SLURM time limit or preemption).

    An ``Exception`` rather than a ``BaseException`` so that, in a sweep, only the job it hit
    ends: the run is recorded KILLED and the launcher goes on with the other jobs.
    """


class Tracker(Protocol):
    run_id: str | None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def flush(self) -> None: ...


class NullTracker:
    """Used with ``tracking.enabled=false``: every call is accepted and dropped."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def flush(self) -> None:
        pass


def tracking_uri(cfg: TrackingConfig) -> str:
    return _uri(cfg.uri, cfg.dir)


def _uri(uri: str | None, folder: str) -> str:
    return uri or f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def default_tracking_uri() -> str:
    """The store ``python -m macs_exp`` logs to from this directory with the shipped tracking
    option, read from its YAML: reports find it without composing the app."""
    from omegaconf import DictConfig, OmegaConf

    from macs_exp.paths import CONF_DIR

    conf = OmegaConf.load(CONF_DIR / "tracking" / "mlflow.yaml")
    assert isinstance(conf, DictConfig)
    return _uri(conf.get("uri"), str(conf.get("dir")))


def ensure_experiment(cfg: TrackingConfig) -> str:
    """Creates the database and experiment if needed and returns the experiment id.

    The experiment is marked as a model-training one (``EXPERIMENT_KIND``), also when it exists
    without the mark (made by an older version, or by hand). Safe to call from several
    processes: a lost creation race falls back to a lookup.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if not cfg.uri:
        Path(cfg.dir).mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=tracking_uri(cfg))
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        artifacts = None if cfg.uri else (Path(cfg.dir).resolve() / "mlartifacts").as_uri()
        try:
            return client.create_experiment(
                cfg.experiment, artifact_location=artifacts, tags={EXPERIMENT_KIND: MODEL_TRAINING}
            )
        except MlflowException:
            experiment = client.get_experiment_by_name(cfg.experiment)
            if experiment is None:
                raise
    if EXPERIMENT_KIND not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return experiment.experiment_id


class MlflowTracker:
    """One MLflow run: a new one, or with ``resume_run_id`` an existing one that a resumed run
    continues. A resumed run replays the steps after its checkpoint, some of whose metrics the
    stopped process may already have sent: each (metric, step) point is sent only as many times
    as the store does not hold it yet, so the history ends as an uninterrupted run's would."""

    def __init__(
        self, cfg: TrackingConfig, tags: Mapping[str, str], resume_run_id: str | None = None
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.cfg = cfg
        self.client = MlflowClient(tracking_uri=tracking_uri(cfg))
        self._logged: Counter[tuple[str, int]] = Counter()
        if resume_run_id is None:
            # The run's name comes with its tags (``mlflow.runName``, set by ``run_tags``).
            run = self.client.create_run(ensure_experiment(cfg), tags=dict(tags))
            self.run_id: str | None = run.info.run_id
        else:
            self.run_id = resume_run_id
            self._logged = self._logged_points(resume_run_id)
            self.client.update_run(resume_run_id, status="RUNNING")
            self.set_tags(tags)
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    def _logged_points(self, run_id: str) -> Counter[tuple[str, int]]:
        """How often the store holds each (metric, step) of ``run_id``."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as err:
            raise ResumeError(
                f"MLflow run {run_id} is not in {tracking_uri(self.cfg)}: resume with the tracking.* "
                f"settings the run was started with"
            ) from err
        return Counter(
            (key, point.step)
            for key in run.data.metrics
            for point in self.client.get_metric_history(run_id, key)
        )

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(self._id, params=items[i : i + _MAX_PARAMS])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, len(items), _MAX_TAGS):
            self.client.log_batch(self._id, tags=items[i : i + _MAX_TAGS])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if self._logged[key, step]:
                self._logged[key, step] -= 1
            else:
                self._pending.append(Metric(key, float(value), now, step))
        if time.monotonic() - self._last_flush >= self.cfg.flush_every_s:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), _MAX_METRICS):
            self.client.log_batch(self._id, metrics=pending[i : i + _MAX_METRICS])
        self._last_flush = time.monotonic()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self._id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self._id, text, artifact_file)

    def end(self, status: str) -> None:
        self.client.set_terminated(self._id, status=status)

    @property
    def _id(self) -> str:
        assert self.run_id is not None
        return self.run_id


@contextlib.contextmanager
def tracked_run(
    cfg: TrackingConfig,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    config_yaml: str,
    resume_run_id: str | None = None,
) -> Iterator[Tracker]:
    """One MLflow run around a block: FINISHED on success; on an exception the buffered
    metrics are flushed, the traceback is stored as ``traceback.txt`` and the run is marked
    FAILED (KILLED for Ctrl-C and SIGTERM) before the exception propagates. With
    ``resume_run_id`` the block continues that run, whose params and config are already logged."""
    if not cfg.enabled:
        yield NullTracker()
        return
    tracker = MlflowTracker(cfg, tags, resume_run_id)
    try:
        if resume_run_id is None:
            tracker.log_params(params)
            tracker.log_text(config_yaml, "config.yaml")
        yield tracker
    except BaseException as exc:
        with contextlib.suppress(Exception):
            tracker.flush()
        with contextlib.suppress(Exception):
            tracker.log_text("".join(traceback.format_exception(exc)), "traceback.txt")
        tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt | Terminated) else "FAILED")
        raise
    tracker.flush()
    tracker.end("FINISHED")


def search_all(client: Any, experiment_id: str, filter_string: str) -> Iterator[Any]:
    """Every run matching ``filter_string``, across MLflow's result pages."""
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=10_000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}``, the form MLflow params take."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat
