"""The schema of the ``tracking`` group: where and how runs are recorded."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from macs_exp.schema import Schema


@dataclass
class TrackingConfig(Schema):
    enabled: bool = MISSING
    experiment: str = MISSING
    # Local tracking root, relative to the launch directory: the SQLite database
    # (<dir>/mlflow.db) and the artifacts (<dir>/mlartifacts) live here.
    dir: str = MISSING
    # Overrides the tracking URI (e.g. a remote server); null means sqlite:///<dir>/mlflow.db.
    uri: str | None = MISSING
    # The MLflow run's name; null means <algo>-<mode>-<env>-s<seed> (macs_exp.trainer.run.run_name).
    run_name: str | None = MISSING
    # Buffered metrics are sent in one batch at least this often.
    flush_every_s: float = MISSING
    # A results ledger (macs_exp.tracking.ledger), relative to the launch directory: a run whose
    # config it holds is skipped, and a finished run adds its row. Null: no ledger.
    ledger: str | None = MISSING
