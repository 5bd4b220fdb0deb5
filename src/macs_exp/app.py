"""The Hydra application behind ``python -m macs_exp`` and the ``macs-exp`` script."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from macs_exp.config import register_schemas, to_config
from macs_exp.paths import ASSETS_DIR, CONF_DIR
from macs_exp.schema import UserError
from macs_exp.tracking.sweep import current_sweep


def register_resolvers() -> None:
    """``${macs_asset:NAME}``: a data folder shipped inside the package (e.g. the tiny rating
    dataset), wherever the package is installed."""
    if not OmegaConf.has_resolver("macs_asset"):
        OmegaConf.register_new_resolver("macs_asset", lambda name: str(ASSETS_DIR / name))


register_schemas()
register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from macs_exp.trainer.job import run_sweep_job
    from macs_exp.trainer.parallel import key_value, run_seeds
    from macs_exp.trainer.process import configure_torch
    from macs_exp.trainer.signals import sigterm_raises

    hydra_cfg = HydraConfig.get()
    sweep = current_sweep()
    if sweep is not None:
        # In a sweep one job's failure is recorded, not raised: the others go on, and the
        # sweep's summary (and exit code) reports it. Optuna counts the missing value as a failed
        # trial (a NaN would make it abort the study).
        logging_config = OmegaConf.to_container(hydra_cfg.job_logging, resolve=True)
        return run_sweep_job(
            cfg,
            hydra_cfg.runtime.output_dir,
            sweep,
            hydra_cfg.job.num,
            sweep.job_tags(hydra_cfg.job.num, hydra_cfg.overrides.task),
            {str(k): v for k, v in logging_config.items()} if isinstance(logging_config, dict) else None,
        )
    try:
        configure_torch(to_config(cfg).trainer.torch_threads)
        with sigterm_raises():
            results = run_seeds(cfg, hydra_cfg.runtime.output_dir)
    except UserError as err:
        # A mistake the user can fix: the message says which and how; a traceback would bury it.
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    # Returned for Hydra sweepers (e.g. Optuna) that optimise the key metric (mean over seeds).
    return key_value(results)


def main() -> None:
    _main()


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The config ``python -m macs_exp <overrides>`` would run, for scripts and tests."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])
