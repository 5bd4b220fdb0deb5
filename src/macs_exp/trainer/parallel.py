"""Seed-parallel training: the seeds of one configuration in one process.

Each seed runs exactly the code of a single run (``macs_exp.trainer.run.experiment``), with its
own config (``seed_config``), folder (``<output dir>/seed_<seed>``), env, evaluation, mode,
checkpoints and MLflow run; the runs differ from single runs only by the tags that link them
(``seed_group``, ``seed_group_seeds``). The runs are generators that stop whenever their agent's
updates are due; this module advances them in lockstep, one vector step each, and then updates
all their agents at once through a ``macs_exp.agents.stack`` learner (one batched step for a
seed stack of off-policy agents).

A seed whose run raises (a NaN loss, a crash) is recorded FAILED by its own run, as a single
run would be, and leaves the group; the others go on. SIGTERM stops every seed, each after
writing its checkpoint, so that the group resumes as a single run does (``trainer.resume=auto``
in the same folder, or ``trainer.resume=<the group's folder>``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from macs_exp.agents import Agent
from macs_exp.agents.stack import seed_learner
from macs_exp.config import to_config
from macs_exp.schema import UserError
from macs_exp.tracking import ledger
from macs_exp.tracking.mlflow_tracker import Terminated
from macs_exp.tracking.sweep import record_skipped
from macs_exp.tracking.tags import GROUP_SEEDS_TAG, GROUP_TAG
from macs_exp.trainer.result import TrainResult
from macs_exp.trainer.run import experiment, run_experiment
from macs_exp.trainer.seeds import seed_config, seed_folder, seed_list
from macs_exp.trainer.trainer import Training

log = logging.getLogger("macs_exp")


class SeedsFailed(Exception):
    """Some seeds of a seed-parallel run failed (each is recorded FAILED with its traceback)."""


def run_seeds(
    cfg: DictConfig, output_dir: str | Path, *, tags: Mapping[str, str] | None = None
) -> list[TrainResult]:
    """Trains every seed ``cfg`` names (``seeds``, or ``trainer.parallel_seeds`` from ``seed``):
    a single seed as a plain run, several in one seed-parallel group. Raises ``SeedsFailed``
    after the others finished if any seed failed."""
    config = to_config(cfg)  # bad values (trainer.parallel_seeds=0, repeated seeds) fail here, by name
    seeds = seed_list(cfg)
    todo = seeds
    if config.tracking.ledger is not None:
        todo, done = recorded_seeds(cfg, config.tracking.ledger)
        if done:
            log.info(
                "seed(s) %s: already in the ledger %s, skipped",
                ",".join(map(str, done)),
                config.tracking.ledger,
            )
            record_skipped(config.tracking, tags or {}, done)
    if not todo:
        return []
    if cfg.seeds is None and seeds == [int(cfg.seed)]:
        return [run_experiment(cfg, output_dir, tags=tags)]
    if len(todo) == 1 and len(seeds) > 1:
        # What the ledger left of a group: one single run.
        return [run_experiment(seed_config(cfg, todo[0]), output_dir, tags=tags)]
    seeds = todo
    group = {GROUP_TAG: uuid.uuid4().hex[:12], GROUP_SEEDS_TAG: ",".join(map(str, seeds))}
    runs = [
        experiment(
            seed_config(cfg, seed), Path(output_dir) / seed_folder(seed), tags={**(tags or {}), **group}
        )
        for seed in seeds
    ]
    outcome = SeedGroup(seeds, runs).run()
    failed = {seed: err for seed, err in zip(seeds, outcome, strict=True) if isinstance(err, Exception)}
    if failed:
        why = "; ".join(f"seed {seed}: {type(err).__name__}: {err}" for seed, err in failed.items())
        raise SeedsFailed(f"{len(failed)} of {len(seeds)} seeds failed ({why})")
    return [r for r in outcome if isinstance(r, TrainResult)]


def recorded_seeds(
    cfg: DictConfig, book: str, rows: dict[str, list[ledger.Entry]] | None = None
) -> tuple[list[int], list[int]]:
    """The seeds ``cfg`` trains split into those the ledger ``book`` lacks and those whose
    single-run config it holds (skipped: a sweep's summary lists them as such). A run another
    experiment recorded counts for this one too, and gets its row here (``ledger.adopt``)."""
    known = ledger.recorded(book) if rows is None else rows
    todo, done = [], []
    for seed in seed_list(cfg):
        one = seed_config(cfg, seed)
        if ledger.config_hash(one) in known:
            ledger.adopt(book, one, known)
            done.append(seed)
        else:
            todo.append(seed)
    return todo, done


def key_value(results: list[TrainResult]) -> float | None:
    """The mean over seeds of each run's final key metric (what a sweeper optimises)."""
    values = [r.final_eval[r.key_metric] for r in results if r.key_metric in r.final_eval]
    return sum(values) / len(values) if values else None


@dataclass
class SeedGroup:
    """The runs of a seed-parallel group, advanced in lockstep (module doc)."""

    seeds: list[int]
    runs: list[Training]
    outcome: list[TrainResult | Exception | None] = field(init=False)
    # The agent each running seed yielded at its last stop: its updates are due.
    waiting: dict[int, Agent] = field(default_factory=dict)
    # Set when a seed was stopped by SIGTERM: raised once every seed has stopped.
    stopped: Terminated | None = None

    def __post_init__(self) -> None:
        self.outcome = [None] * len(self.runs)

    def run(self) -> list[TrainResult | Exception | None]:
        try:
            self._lockstep()
        except BaseException:
            # Ctrl-C, a second SIGTERM, a mistake every seed shares: no seed is left running.
            self._stop_all()
            raise
        if self.stopped is not None:
            raise self.stopped
        return self.outcome

    def _lockstep(self) -> None:
        for k, training in enumerate(self.runs):
            self._advance(k, training.__next__)
        if not self.waiting:
            return
        # Stacked once: every seed that reached training has built its agent.
        members = sorted(self.waiting)
        learner = seed_learner([self.waiting[k] for k in members])
        index = {k: i for i, k in enumerate(members)}
        while self.waiting:
            live = sorted(self.waiting)
            updates = learner.learn([index[k] for k in live])
            for k in live:
                result = updates[index[k]]
                training = self.runs[k]
                if isinstance(result, Exception):
                    self._advance(k, functools.partial(training.throw, result))
                else:
                    self._advance(k, functools.partial(training.send, result))

    def _advance(self, k: int, step: Callable[[], Agent]) -> None:
        """Runs seed ``k`` to its next stop; records its result when it ends."""
        try:
            self.waiting[k] = step()
        except StopIteration as stop:
            self.waiting.pop(k, None)
            self.outcome[k] = stop.value
        except Terminated as stop:
            # Asked to stop (SIGTERM): this seed wrote its checkpoint; the others write theirs
            # when their loops see the same request, at this vector step or the next.
            self.waiting.pop(k, None)
            self.outcome[k] = stop
            self.stopped = stop
        except UserError:
            # A mistake in the config or the data is every seed's: stop (``run``), say it once.
            self.waiting.pop(k, None)
            raise
        except Exception as err:
            self.waiting.pop(k, None)
            self.outcome[k] = err
            log.error(
                "seed %d failed (%s: %s); the other seeds go on", self.seeds[k], type(err).__name__, err
            )

    def _stop_all(self) -> None:
        """Ends every seed still running (each run records it KILLED)."""
        for k in list(self.waiting):
            self.waiting.pop(k)
            with contextlib.suppress(Exception):
                self.runs[k].throw(Terminated("another seed of the group stopped the group"))
        for training in self.runs:
            training.close()
