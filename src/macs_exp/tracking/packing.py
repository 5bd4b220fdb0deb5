"""Packs a sweep's seeds into seed-parallel jobs.

``trainer.parallel_seeds=K`` trains K seeds in one process, which pays off most in a sweep over
``seed``: ``-m +experiment=table1 trainer.parallel_seeds=5`` should be 20 jobs of five seeds, not
100 jobs of one. Hydra's basic sweeper knows nothing of that, so the app's sweeper plans the
basic sweeper's jobs and then merges those that differ only in ``seed`` into packs of up to K
(``seed=<first> seeds=[...] trainer.parallel_seeds=<pack size>``, so each job obeys the config's
rule that ``seeds`` has ``trainer.parallel_seeds`` entries). Any other sweep is left exactly as the
basic sweeper plans it.

The sweeper class is ``hydra_plugins.macs_exp_sweeper.SeedPackingSweeper`` (the app's
``hydra/sweeper=basic``): Hydra instantiates only sweepers defined under ``hydra_plugins``, and
its plug-in scan re-executes Hydra's basic sweeper module, so a subclass made here, against the
class of an earlier import, could fail in ``BasicSweeper.__init__``. Here is the plan it follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override

SEED = "seed"
SEEDS = "seeds"
PARALLEL_SEEDS = "trainer.parallel_seeds"


def _key(item: str) -> str:
    """The config key of a job's ``key=value`` override, without the ``+``/``++`` that add it
    (a ``~`` deletion keeps its ``~``, so it never passes for the key it deletes)."""
    return item.split("=", 1)[0].lstrip("+")


def _int_value(item: str) -> int | None:
    try:
        return int(item.split("=", 1)[1])
    except (IndexError, ValueError):
        return None


@dataclass
class _Pack:
    """Jobs equal in every override but ``seed``: the first one's overrides, where its seed and
    parallel_seeds overrides sit in it, and the seeds gathered so far."""

    job: list[str]
    seed_at: int
    parallel_at: int
    seeds: list[int] = field(default_factory=list)

    def overrides(self) -> list[str]:
        job = list(self.job)
        prefix = self.job[self.parallel_at].split("=", 1)[0]
        job[self.parallel_at] = f"{prefix}={len(self.seeds)}"
        job[self.seed_at] = f"{self.job[self.seed_at].split('=', 1)[0]}={self.seeds[0]}"
        job.insert(self.seed_at + 1, f"{SEEDS}=[{','.join(map(str, self.seeds))}]")
        return job


def _packable(job: list[str]) -> tuple[int, int, int, int] | None:
    """``(seed position, seed, parallel_seeds position, K)`` of a job that may join a pack: an
    integer seed, K > 1 and no ``seeds`` of its own (an explicit list is the user's choice)."""
    keys = [_key(item) for item in job]
    if SEEDS in keys or SEED not in keys or PARALLEL_SEEDS not in keys:
        return None
    seed_at, parallel_at = keys.index(SEED), keys.index(PARALLEL_SEEDS)
    seed, parallel = _int_value(job[seed_at]), _int_value(job[parallel_at])
    if seed is None or parallel is None or parallel <= 1:
        return None
    return seed_at, seed, parallel_at, parallel


def pack_seed_jobs(jobs: list[list[str]]) -> list[list[str]]:
    """The jobs with those equal but for their seed merged into packs of up to K seeds.

    A pack takes the place of its first job, so the order stays the basic sweeper's: seeds
    outermost (fig4) still gives every row at the first seeds before any row at the later ones.
    Without a seed that varies between jobs the list is returned unchanged: ``seed=0
    trainer.parallel_seeds=5`` alone already means seeds 0-4 in one job.
    """
    packable = [_packable(job) for job in jobs]
    if len({p[1] for p in packable if p is not None}) < 2:
        return [list(job) for job in jobs]
    planned: list[list[str] | _Pack] = []
    open_packs: dict[tuple[str, ...], _Pack] = {}
    for job, found in zip(jobs, packable, strict=True):
        if found is None:
            planned.append(list(job))
            continue
        seed_at, seed, parallel_at, parallel = found
        group = (*job[:seed_at], *job[seed_at + 1 :])
        pack = open_packs.get(group)
        # A seed listed twice runs twice, as with the basic sweeper, not twice in one job.
        if pack is None or len(pack.seeds) == parallel or seed in pack.seeds:
            pack = open_packs[group] = _Pack(list(job), seed_at, parallel_at)
            planned.append(pack)
        pack.seeds.append(seed)
    return [entry.overrides() if isinstance(entry, _Pack) else entry for entry in planned]


def plan_batches(overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
    """``BasicSweeper.split_arguments`` with the seeds packed: the seed-packing sweeper's plan.

    The basic sweeper has merged ``hydra.sweeper.params`` with the command line; its product puts
    a plain override such as ``trainer.parallel_seeds=5`` in every job, which is what packing
    reads. The packs are then cut into batches of ``max_batch_size`` as the basic sweeper cuts
    its jobs; with nothing to pack, its batches are returned as they are.
    """
    batches = BasicSweeper.split_arguments(overrides, max_batch_size)
    jobs = [job for batch in batches for job in batch]
    packed = pack_seed_jobs(jobs)
    if packed == jobs:
        return batches
    return list(BasicSweeper.split_overrides_to_chunks(packed, max_batch_size))
