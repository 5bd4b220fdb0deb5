"""The Hydra application behind ``python -m macs_exp`` and the ``macs-exp`` script."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from macs_exp.config import (
    ALGO_SCHEMAS,
    MODE_SCHEMAS,
    Config,
    DataConfig,
    EnvConfig,
    ExpertConfig,
    MacsConfig,
    RatingEnvConfig,
    TrackingConfig,
    TrainerConfig,
)
from macs_exp.tracking.mlflow_tracker import Terminated
from macs_exp.tracking.sweep import current_sweep, record_failed_job

log = logging.getLogger("macs_exp")

# The YAML groups live in the repository's top-level conf/ (src layout: two levels up).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
ASSETS_DIR = Path(__file__).resolve().parent / "data" / "assets"


def register_configs() -> None:
    """Exposes the schemas to the YAML defaults lists as ``/schema/<group>/<name>``.

    They live outside the real groups so that ``algo=...`` offers only runnable options.
    """
    cs = ConfigStore.instance()
    cs.store(group="schema", name="config", node=Config)
    for name, schema in ALGO_SCHEMAS.items():
        cs.store(group="schema/algo", name=name, node=schema)
    for name, schema in MODE_SCHEMAS.items():
        cs.store(group="schema/mode", name=name, node=schema)
    cs.store(group="schema/env", name="env", node=EnvConfig)
    cs.store(group="schema/env", name="rating", node=RatingEnvConfig)
    cs.store(group="schema/macs", name="macs", node=MacsConfig)
    cs.store(group="schema/expert", name="expert", node=ExpertConfig)
    cs.store(group="schema/data", name="data", node=DataConfig)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)
    cs.store(group="schema/tracking", name="tracking", node=TrackingConfig)


def register_resolvers() -> None:
    """``${macs_asset:NAME}``: a data folder shipped inside the package (e.g. the tiny rating
    dataset), wherever the package is installed."""
    if not OmegaConf.has_resolver("macs_asset"):
        OmegaConf.register_new_resolver("macs_asset", lambda name: str(ASSETS_DIR / name))


register_configs()
register_resolvers()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turns SIGTERM into ``Terminated`` while a run trains, so that a killed job (``kill``, a
    SLURM time limit) is recorded KILLED with its traceback instead of staying RUNNING forever."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from macs_exp.trainer.run import run_experiment, run_tags

    hydra_cfg = HydraConfig.get()
    sweep = current_sweep()
    tags = sweep.job_tags(hydra_cfg.job.num, hydra_cfg.overrides.task) if sweep else {}
    try:
        with _sigterm_raises():
            result = run_experiment(cfg, hydra_cfg.runtime.output_dir, tags)
    except Exception as exc:
        if sweep is None:
            raise
        # In a sweep one job's failure is recorded, not raised: the others go on, and the
        # sweep's summary (and exit code) reports it.
        log.exception("job %d (%s) failed", hydra_cfg.job.num, " ".join(hydra_cfg.overrides.task))
        tracking: TrackingConfig = OmegaConf.to_object(cfg.tracking)  # type: ignore[assignment]
        record_failed_job(
            tracking, sweep, hydra_cfg.job.num, {**run_tags(cfg), **tags}, OmegaConf.to_yaml(cfg), exc
        )
        # No value: Optuna records the trial as FAILED (a NaN would make it abort the study).
        return None
    # Returned for Hydra sweepers (e.g. Optuna) that optimise the key metric.
    return result.final_eval.get(result.key_metric)


def main() -> None:
    _main()


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The config ``python -m macs_exp <overrides>`` would run, for scripts and tests."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])
