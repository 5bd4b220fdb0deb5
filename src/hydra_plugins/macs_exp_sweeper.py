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
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override

from macs_exp.tracking import packing


class SeedPackingSweeper(BasicSweeper):
    """The basic sweeper, with a seed sweep under ``trainer.parallel_seeds=K`` run in packs of K:
    only the step that turns the parsed overrides into batches of jobs changes."""

    @staticmethod
    def split_arguments(overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        return packing.plan_batches(overrides, max_batch_size)


@dataclass
class SeedPackingSweeperConf(BasicSweeperConf):
    # The basic sweeper's keys (max_batch_size, params): the same sweeps, with seeds packed.
    _target_: str = f"{__name__}.SeedPackingSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=SeedPackingSweeperConf)
