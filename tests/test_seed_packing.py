"""Seed packing: a sweep over ``seed`` with ``trainer.parallel_seeds=K`` launches jobs of K seeds.

The sweeper runs through Hydra's own machinery (config loader, plug-in registry, ``sweep``) with a
launcher that only records what it is asked to launch, so no job trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, RunMode

from macs_exp.app import CONF_DIR, compose_config
from macs_exp.config import to_config
from macs_exp.tracking.packing import pack_seed_jobs
from macs_exp.trainer.seeds import seed_list

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class RecordingLauncher:
    """Stands in for the launcher: keeps each ``launch`` call's jobs and first job number."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[list[str]], int]] = []

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        self.calls.append(([list(job) for job in job_overrides], initial_job_idx))
        return [JobReturn(status=JobStatus.COMPLETED) for _ in job_overrides]

    @property
    def jobs(self) -> list[list[str]]:
        return [job for batch, _ in self.calls for job in batch]


def _launch(tmp_path: Path, *overrides: str, validate: bool = False) -> RecordingLauncher:
    """What ``python -m macs_exp -m <overrides>`` would launch: the multirun config as Hydra
    composes it, the sweeper the plug-in registry makes from it, and its ``sweep`` of the task
    overrides (``validate``: also compose every job, as Hydra does before launching)."""
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    cfg = loader.load_configuration(
        "config", [*overrides, f"hydra.sweep.dir={tmp_path}"], run_mode=RunMode.MULTIRUN
    )
    sweeper = Plugins.instance().instantiate_sweeper(
        hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks()),
        task_function=lambda _: None,
        config=cfg,
    )
    launcher = RecordingLauncher()
    sweeper.launcher = launcher  # type: ignore[attr-defined]
    if not validate:
        sweeper.validate_batch_is_legal = lambda batch: None  # type: ignore[method-assign]
    sweeper.sweep(arguments=list(cfg.hydra.overrides.task))
    return launcher


def _value(job: list[str], key: str) -> str:
    return next(item.split("=", 1)[1] for item in job if item.split("=", 1)[0] == key)


def _without(job: list[str], *keys: str) -> list[str]:
    return [item for item in job if item.split("=", 1)[0] not in keys]


def test_the_app_sweeps_with_the_seed_packing_sweeper(tmp_path: Path) -> None:
    for choice in ([], ["hydra/sweeper=basic"]):
        loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
        cfg = loader.load_configuration("config", choice, run_mode=RunMode.MULTIRUN)
        assert cfg.hydra.sweeper._target_ == "hydra_plugins.macs_exp_sweeper.SeedPackingSweeper"
    assert _launch(tmp_path, "seed=1,2").jobs == [["seed=1"], ["seed=2"]]


def test_table1_with_five_parallel_seeds_is_twenty_jobs_of_five_seeds(tmp_path: Path) -> None:
    launcher = _launch(tmp_path, "+experiment=table1", "trainer.parallel_seeds=5")
    jobs = launcher.jobs
    assert len(jobs) == 20 and [idx for _, idx in launcher.calls] == [0]
    for job in jobs:
        packed = (_value(job, "seed"), _value(job, "seeds"), _value(job, "trainer.parallel_seeds"))
        assert packed == ("0", "[0,1,2,3,4]", "5")
    # One job per (algo, mode), in the basic sweeper's order.
    basic = _launch(tmp_path, "+experiment=table1", f"hydra.sweeper._target_={BASIC}").jobs
    cells = [_without(job, "seed") for job in basic if _value(job, "seed") == "0"]
    assert [_without(job, "seed", "seeds") for job in jobs] == [
        [*c, "trainer.parallel_seeds=5"] for c in cells
    ]


def test_without_parallel_seeds_the_jobs_are_the_basic_sweepers(tmp_path: Path) -> None:
    packing = _launch(tmp_path, "+experiment=table1")
    basic = _launch(tmp_path, "+experiment=table1", f"hydra.sweeper._target_={BASIC}")
    assert len(packing.jobs) == 100
    assert packing.calls == basic.calls
    # Nor without a seed sweep: seed=3 with parallel_seeds=5 already is one job of seeds 3-7.
    single = ["seed=3", "trainer.parallel_seeds=5", "algo=ddpg,sac"]
    assert (
        _launch(tmp_path, *single).calls
        == _launch(tmp_path, *single, f"hydra.sweeper._target_={BASIC}").calls
    )


def test_a_last_shorter_pack_gets_its_own_size(tmp_path: Path) -> None:
    jobs = _launch(
        tmp_path, "seed=0,1,2,3,4", "trainer.parallel_seeds=2", "algo=ddpg", "mode=baseline", validate=True
    ).jobs
    assert [(_value(j, "seeds"), _value(j, "trainer.parallel_seeds"), _value(j, "seed")) for j in jobs] == [
        ("[0,1]", "2", "0"),
        ("[2,3]", "2", "2"),
        ("[4]", "1", "4"),
    ]


def test_seeds_outermost_keeps_every_row_before_the_later_seeds(tmp_path: Path) -> None:
    """fig4 sweeps seed outermost, so that a sweep cut short has every row at fewer seeds; packs
    keep that: every (algo, mode) gets its first pack before any gets its second."""
    jobs = _launch(tmp_path, "+experiment=fig4", "trainer.parallel_seeds=2").jobs
    assert len(jobs) == 15 * 3
    assert [_value(j, "seeds") for j in jobs] == ["[0,1]"] * 15 + ["[2,3]"] * 15 + ["[4]"] * 15
    rows = [(_value(j, "algo"), _value(j, "mode")) for j in jobs]
    assert rows[:15] == rows[15:30] == rows[30:] and len(set(rows)) == 15
    assert len(_launch(tmp_path, "+experiment=fig4", "trainer.parallel_seeds=5").jobs) == 15


def test_packs_are_cut_into_batches_of_max_batch_size(tmp_path: Path) -> None:
    launcher = _launch(
        tmp_path, "+experiment=table1", "trainer.parallel_seeds=5", "hydra.sweeper.max_batch_size=8"
    )
    assert [(len(batch), idx) for batch, idx in launcher.calls] == [(8, 0), (8, 8), (4, 16)]


def test_only_jobs_with_parallel_seeds_above_one_are_packed() -> None:
    jobs = [[f"seed={s}", f"trainer.parallel_seeds={k}"] for s in range(3) for k in (1, 2)]
    assert pack_seed_jobs(jobs) == [
        ["seed=0", "trainer.parallel_seeds=1"],
        ["seed=0", "seeds=[0,1]", "trainer.parallel_seeds=2"],
        ["seed=1", "trainer.parallel_seeds=1"],
        ["seed=2", "trainer.parallel_seeds=1"],
        ["seed=2", "seeds=[2]", "trainer.parallel_seeds=1"],
    ]
    # An explicit seeds list is the user's: left alone.
    explicit = [[f"seed={s}", "seeds=[7,8]", "trainer.parallel_seeds=2"] for s in range(2)]
    assert pack_seed_jobs(explicit) == explicit


@pytest.mark.parametrize("parallel", [2, 3])
def test_every_packed_job_is_a_valid_config_of_its_seeds(tmp_path: Path, parallel: int) -> None:
    jobs = _launch(
        tmp_path, "seed=0,1,2,3,4", f"trainer.parallel_seeds={parallel}", "algo=ddpg,sac", "mode=baseline"
    ).jobs
    seen: list[int] = []
    for job in jobs:
        cfg = compose_config(job)
        to_config(cfg)  # raises if seeds and trainer.parallel_seeds disagree
        assert seed_list(cfg) == [int(s) for s in _value(job, "seeds").strip("[]").split(",")]
        assert cfg.seed == seed_list(cfg)[0] and cfg.algo.name == _value(job, "algo")
        seen += seed_list(cfg)
    assert sorted(seen) == sorted([*range(5)] * 2)
