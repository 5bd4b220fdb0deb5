"""macs-exp's sweeper as a Hydra plug-in: ``hydra/sweeper=basic`` becomes the seed-packing sweeper.

Hydra instantiates a sweeper only if its class is defined in a module under ``hydra_plugins``
(``Plugins._instantiate`` refuses any other ``_target_``) and finds those modules by scanning that
namespace package, so the class is defined here; its plan is ``macs_exp.tracking.packing``'s. The
scan re-executes Hydra's own plug-in modules first, then this one, so the ``BasicSweeper`` it
extends is always the class that module currently holds (its ``__init__`` calls
``super(BasicSweeper, self)``, which fails on a subclass of an older copy).

It takes the place of the ``basic`` option rather than being an option of its own, because
nothing else selects it and still lets conf/search/*.yaml choose Optuna: the app's primary config
would have to say ``override hydra/sweeper: ...`` (or set ``hydra.sweeper._target_``), and the
primary config's choice beats the ``override /hydra/sweeper: optuna`` of a preset it loads (the
``_target_`` would land on Optuna's config). Registered after Hydra's, this entry replaces theirs.
That holds for any Hydra app in an environment where macs-exp is installed; for them nothing
changes, since packing needs jobs with integer ``seed`` and ``trainer.parallel_seeds`` > 1
overrides, which only this app's config has.
"""

# No ``from __future__ import annotations``: the scanner runs this module before it is in
# sys.modules, where ``dataclass`` would look up string annotations.
import logging
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, open_dict

from macs_exp.tracking import packing

log = logging.getLogger(__name__)


class SeedPackingSweeper(BasicSweeper):
    """The basic sweeper, with a seed sweep under ``trainer.parallel_seeds=K`` run in packs of K:
    only the step that turns the parsed overrides into batches of jobs changes."""

    @staticmethod
    def split_arguments(overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        return packing.plan_batches(overrides, max_batch_size)

    def sweep(self, arguments: list[str]) -> Any:
        """Launches nothing when the results ledger (``tracking.ledger``) already holds every run
        of every job: each job is recorded as skipped in the summary instead. A rerun of a whole
        study (``make paper``) then costs a config composition per job, not a process."""
        assert self.hydra_context is not None and self.config is not None
        params = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = [job for batch in self.split_arguments(parser.parse_overrides(params), None) for job in batch]
        configs = [self._job_config(job) for job in jobs]
        if not jobs or any(c.tracking.get("ledger") is None for c in configs):
            return super().sweep(arguments)
        from macs_exp.schema import as_schema
        from macs_exp.tracking import ledger
        from macs_exp.tracking.config import TrackingConfig
        from macs_exp.tracking.sweep import launching_sweep, record_skipped
        from macs_exp.trainer.parallel import recorded_seeds

        known: dict[str, dict[str, list[ledger.Entry]]] = {}
        outcome = []
        for config in configs:
            book = str(config.tracking.ledger)
            if book not in known:
                known[book] = ledger.recorded(book)
            todo, done = recorded_seeds(config, book, known[book])
            if todo:
                return super().sweep(arguments)
            outcome.append(done)
        sweep = launching_sweep()
        if sweep is not None and sweep.parent_run_id:
            for num, (config, done) in enumerate(zip(configs, outcome, strict=True)):
                tags = {"mlflow.parentRunId": sweep.parent_run_id, "sweep_job": str(num)}
                record_skipped(as_schema(config.tracking, TrackingConfig), tags, done)
        log.info("sweep: every run of its %d jobs is in the ledger; none launched", len(jobs))
        return []

    def _job_config(self, job: list[str]) -> DictConfig:
        """A job's config as its task function receives it (without the ``hydra`` node)."""
        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        with open_dict(config):
            del config["hydra"]
        return config


@dataclass
class SeedPackingSweeperConf(BasicSweeperConf):
    # The basic sweeper's keys (max_batch_size, params): the same sweeps, with seeds packed.
    _target_: str = f"{__name__}.SeedPackingSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=SeedPackingSweeperConf)
