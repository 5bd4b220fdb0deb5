"""Seed-parallel training: the seeds of one configuration in one process.

Each seed runs exactly the code of a single run (``macs_exp.trainer.run.experiment``), with its
own config (``seed_config``), folder (``<output dir>/seed_<seed>``), env, evaluation, mode,
checkpoints and MLflow run; the runs differ from single runs only by the tags that link them
(``seed_group``, ``seed_group_seeds``). The runs are generators that stop whenever their agent's
updates are due; this module advances them in lockstep, one vector step each, and then updates
all their agents at once through a ``macs_exp.agents.stack`` learner (one batched step for a
seed stack of off-policy agents).

A seed whose run raises (a NaN loss, a crash) is recorded FAILED by its own run, as a single
run would be, and leaves the group; the others go on. SIGTERM stops every seed.
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
from macs_exp.agents.stack import Learner, seed_learner
from macs_exp.schema import UserError
from macs_exp.tracking.mlflow_tracker import Terminated
from macs_exp.trainer.result import TrainResult
from macs_exp.trainer.run import experiment, run_experiment
from macs_exp.trainer.seeds import seed_config, seed_list
from macs_exp.trainer.trainer import Training

log = logging.getLogger("macs_exp")

# The tags that link the runs of one seed-parallel process: an id of the group, and its seeds.
GROUP_TAG = "seed_group"
GROUP_SEEDS_TAG = "seed_group_seeds"


class SeedsFailed(Exception):
    """Some seeds of a seed-parallel run failed (each is recorded FAILED with its traceback)."""


def run_seeds(
    cfg: DictConfig, output_dir: str | Path, *, tags: Mapping[str, str] | None = None
) -> list[TrainResult]:
    """Trains every seed ``cfg`` names (``seeds``, or ``trainer.parallel_seeds`` from ``seed``):
    a single seed as a plain run, several in one seed-parallel group. Raises ``SeedsFailed``
    after the others finished if any seed failed."""
    seeds = seed_list(cfg)
    if cfg.seeds is None and len(seeds) == 1:
        return [run_experiment(cfg, output_dir, tags=tags)]
    group = {GROUP_TAG: uuid.uuid4().hex[:12], GROUP_SEEDS_TAG: ",".join(map(str, seeds))}
    runs = [
        experiment(seed_config(cfg, seed), Path(output_dir) / f"seed_{seed}", tags={**(tags or {}), **group})
        for seed in seeds
    ]
    outcome = SeedGroup(seeds, runs).run()
    failed = {seed: err for seed, err in zip(seeds, outcome, strict=True) if isinstance(err, Exception)}
    if failed:
        why = "; ".join(f"seed {seed}: {type(err).__name__}: {err}" for seed, err in failed.items())
        raise SeedsFailed(f"{len(failed)} of {len(seeds)} seeds failed ({why})")
    return [r for r in outcome if isinstance(r, TrainResult)]


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

    def __post_init__(self) -> None:
        self.outcome = [None] * len(self.runs)

    def run(self) -> list[TrainResult | Exception | None]:
        for k, training in enumerate(self.runs):
            self._advance(k, training.__next__)
        learner: Learner | None = None
        members: list[int] = sorted(self.waiting)
        while self.waiting:
            if learner is None:
                # Stacked once every seed that reached training has built its agent.
                learner = seed_learner([self.waiting[k] for k in members])
            live = sorted(self.waiting)
            index = {k: i for i, k in enumerate(members)}
            updates = learner.learn([index[k] for k in live])
            for k in live:
                result = updates[index[k]]
                training = self.runs[k]
                if isinstance(result, Exception):
                    self._advance(k, functools.partial(training.throw, result))
                else:
                    self._advance(k, functools.partial(training.send, result))
        return self.outcome

    def _advance(self, k: int, step: Callable[[], Agent]) -> None:
        """Runs seed ``k`` to its next stop; records its result when it ends."""
        try:
            self.waiting[k] = step()
        except StopIteration as stop:
            self.waiting.pop(k, None)
            self.outcome[k] = stop.value
        except Terminated:
            self._stop_all(k)
            raise
        except UserError:
            # A mistake in the config or the data is every seed's: stop, and say it once.
            self._stop_all(k)
            raise
        except Exception as err:
            self.waiting.pop(k, None)
            self.outcome[k] = err
            log.error(
                "seed %d failed (%s: %s); the other seeds go on", self.seeds[k], type(err).__name__, err
            )

    def _stop_all(self, k: int) -> None:
        """Ends every other seed's run as this one ended (its run records it KILLED or FAILED)."""
        self.waiting.pop(k, None)
        for j in list(self.waiting):
            self.waiting.pop(j)
            with contextlib.suppress(StopIteration, Exception):
                self.runs[j].throw(Terminated(f"seed {self.seeds[k]} of the group stopped"))
        for training in self.runs:
            training.close()
