from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from macs_exp.agents import Transitions
from macs_exp.trainer.process import configure_torch

REPO = Path(__file__).resolve().parents[1]

# Small budgets that still exercise warm-up, updates, logging windows and evaluations.
TINY = [
    "trainer.total_steps=400",
    "trainer.eval_every=200",
    "trainer.eval_episodes=16",
    "trainer.log_every=100",
    "trainer.progress=none",
    "algo.learning_starts=100",
    "algo.batch_size=32",
    "algo.buffer_size=10000",
]


# Small budgets that still run stage 2 (a zero threshold is reached once 3 episodes end).
TINY_MACS = [
    "macs.stage2_steps=40",
    "macs.threshold_frac=0",
    "macs.threshold_window=3",
    "macs.algo.learning_starts=20",
    "macs.algo.batch_size=16",
    "macs.algo.buffer_size=10000",
    "expert.total_steps=200",
    "expert.algo.batch_size=32",
    "expert.algo.buffer_size=10000",
]

# Small CTRL fits that still run the warm-up fit (at 100), a refit (at 300) and their gates in a
# 400-step run.
TINY_CTRL = [
    "ctrl.pretrain_steps=20",
    "ctrl.fit_steps=20",
    "ctrl.batch_size=16",
    "ctrl.net_arch=[32]",
    "ctrl.gate_pairs=24",
    "ctrl.warmup_frac=0.25",
    "ctrl.refit_frac=0.5",
]


def transitions(
    obs: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    next_obs: torch.Tensor,
    terminated: torch.Tensor,
) -> Transitions:
    """A batch of transitions none of which was truncated."""
    return Transitions(
        obs, actions, rewards, next_obs, terminated, torch.zeros_like(terminated, dtype=torch.bool)
    )


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python scripts/<name> <args>`` from the repository root, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    # What every training process sets where it starts (the CLI, a sweep job).
    configure_torch(1)


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    return [*TINY, f"tracking.dir={tmp_path / 'outputs'}"]


class MlflowStore:
    """An MLflow store filled with known numbers, in the shape the trainer and sweeps write."""

    def __init__(self, root: Path) -> None:
        from mlflow.tracking import MlflowClient

        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=(self.root / "mlartifacts").as_uri())

    def sweep(self, experiment: str, sweep_id: str) -> str:
        run = self.client.create_run(
            self.experiment(experiment),
            run_name=f"sweep-{sweep_id}",
            tags={"role": "sweep", "sweep_id": sweep_id},
        )
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def run(
        self,
        experiment: str,
        *,
        algo: str,
        mode: str,
        env: str,
        seed: int,
        metrics: dict[str, float | list[tuple[int, float]]] | None = None,
        params: dict[str, str] | None = None,
        status: str = "FINISHED",
        sweep_id: str | None = None,
        role: str = "run",
    ) -> str:
        """A run whose metric is either one final value or a list of ``(step, value)`` points."""
        from mlflow.entities import Metric, Param

        tags = {"role": role, "algo": algo, "mode": mode, "env": env, "seed": str(seed)}
        if sweep_id:
            tags["sweep_id"] = sweep_id
        run_id = self.client.create_run(self.experiment(experiment), tags=tags).info.run_id
        points = []
        for key, value in (metrics or {}).items():
            series = value if isinstance(value, list) else [(0, value)]
            points += [Metric(key, float(v), 0, step) for step, v in series]
        self.client.log_batch(
            run_id, metrics=points, params=[Param(k, str(v)) for k, v in (params or {}).items()]
        )
        if status != "RUNNING":
            self.client.set_terminated(run_id, status)
        return run_id


@pytest.fixture
def mlflow_store(tmp_path: Path) -> MlflowStore:
    return MlflowStore(tmp_path / "store")
