"""One job of a sweep, run in a child process of its own.

A job killed outright (SIGKILL, the kernel's OOM killer) takes its process with it. Run inside a
joblib worker it would take the worker too, and joblib then abandons every job still queued. In a
child only the child dies: the worker records the run as lost and the sweep goes on. Children are
forked from a fork server that imported the heavy modules once, so a job starts in milliseconds
and inherits no MLflow connection or thread pool from the worker.
"""

from __future__ import annotations

import logging
import logging.config
import multiprocessing
import signal
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from omegaconf import DictConfig, OmegaConf

from macs_exp.config import to_config
from macs_exp.schema import UserError, as_schema
from macs_exp.tracking.config import TrackingConfig
from macs_exp.tracking.sweep import SweepContext, close_lost_job, record_failed_job
from macs_exp.trainer.process import configure_torch
from macs_exp.trainer.signals import sigterm_raises

log = logging.getLogger("macs_exp")

_context: Any = None


def _fork_server() -> Any:
    global _context
    if _context is None:
        # A child re-applies its parent's start method; joblib's workers report loky's own,
        # which plain multiprocessing cannot restore.
        if multiprocessing.get_start_method(allow_none=True) not in (
            None,
            *multiprocessing.get_all_start_methods(),
        ):
            multiprocessing.set_start_method("forkserver", force=True)
        _context = multiprocessing.get_context("forkserver")
        # macs_exp.app registers the config resolvers (${macs_asset:...}) the job config uses; the
        # rest is what every job imports (about 2.5 s that children then skip).
        _context.set_forkserver_preload(
            [
                "macs_exp.app",
                "macs_exp.trainer.run",
                "mlflow.tracking",
                "mlflow.entities",
                "matplotlib.pyplot",
            ]
        )
    return _context


def run_sweep_job(
    cfg: DictConfig,
    output_dir: str,
    sweep: SweepContext,
    job_num: int,
    tags: Mapping[str, str],
    logging_config: dict[str, Any] | None,
) -> float | None:
    """Runs one job in a child and returns its key metric, or None when it failed. A failure is
    recorded (a FAILED, KILLED or lost run), never raised: one job must not stop the sweep."""
    ctx = _fork_server()
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_child,
        args=(sender, cfg, output_dir, sweep, job_num, dict(tags), logging_config),
        name=f"macs_exp-job-{job_num}",
    )
    child.start()
    sender.close()
    try:
        with sigterm_raises():
            outcome = receiver.recv()
    except EOFError:
        outcome = None
    except BaseException:
        # SIGTERM or Ctrl-C reached this process: stop the child (which records its run KILLED)
        # rather than leave it training as an orphan, then stop as asked.
        child.terminate()
        child.join()
        raise
    child.join()
    if outcome is not None:
        return outcome[1] if outcome[0] == "ok" else None
    # The child died without a word: killed by a signal it could not catch.
    why = (
        f"killed by {signal.Signals(-child.exitcode).name}"
        if child.exitcode is not None and child.exitcode < 0
        else f"exited with status {child.exitcode}"
    )
    log.error("job %d %s (out of memory?); its run is closed as FAILED and the sweep goes on", job_num, why)
    from macs_exp.trainer.run import run_tags

    tracking: TrackingConfig = as_schema(cfg.tracking, TrackingConfig)
    close_lost_job(tracking, sweep, job_num, {**run_tags(cfg), **tags}, OmegaConf.to_yaml(cfg), why)
    return None


def _child(
    sender: Connection,
    cfg: DictConfig,
    output_dir: str,
    sweep: SweepContext,
    job_num: int,
    tags: dict[str, str],
    logging_config: dict[str, Any] | None,
) -> None:
    if logging_config:
        logging.config.dictConfig(logging_config)
    from macs_exp.trainer.parallel import key_value, run_seeds
    from macs_exp.trainer.run import run_tags

    try:
        configure_torch(to_config(cfg).trainer.torch_threads)
        with sigterm_raises():
            results = run_seeds(cfg, output_dir, tags=tags)
    except Exception as exc:
        if isinstance(exc, UserError):
            # The message names the key or file and the fix; a traceback would only bury it.
            log.error("job %d failed: %s", job_num, exc)
        else:
            log.exception("job %d failed", job_num)
        tracking: TrackingConfig = as_schema(cfg.tracking, TrackingConfig)
        all_tags = {**run_tags(cfg), **tags}
        record_failed_job(tracking, sweep, job_num, all_tags, OmegaConf.to_yaml(cfg), exc)
        sender.send(("failed", None))
        return
    sender.send(("ok", key_value(results)))
