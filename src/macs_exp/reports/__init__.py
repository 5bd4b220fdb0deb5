"""Reading finished experiments back out of MLflow: Table I and the paper's figures."""

from macs_exp.reports.runs import ROLE_RUN, ROLE_SWEEP, load_runs, load_sweeps, open_client

__all__ = ["ROLE_RUN", "ROLE_SWEEP", "load_runs", "load_sweeps", "open_client"]
