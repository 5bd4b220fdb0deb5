"""Checkpoints and ``trainer.resume``: a run killed at any point and resumed ends with the
metric history of the same run left alone."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, TINY, TINY_CTRL, TINY_MACS
from kg_files import write_ml100k
from macs_exp.app import compose_config
from macs_exp.schema import ResumeError
from macs_exp.trainer.checkpoint import CHECKPOINT_FILE, pack, unpack
from macs_exp.trainer.run import run_experiment

# On PYTHONPATH, it turns a sweep into a preempted SLURM job (see its docstring).
PREEMPT = REPO / "tests" / "fixtures" / "preempt"
# Wall-clock metrics, which no two runs share.
TIMED = ("perf/steps_per_s", "perf/stage2_s")

# Runs the app with the trainer patched to send itself a signal (once) when a vector step has taken
# the run to (or past) a user-step, or after the n-th window of a stage 2: a kill at a point
# the test chooses, with no timing involved.
_KILLER = """
import os, signal, sys
from macs_exp.macs import synthesis
from macs_exp.trainer import trainer
where, at, sig = sys.argv[1], int(sys.argv[2]), getattr(signal, sys.argv[3])
if where == "step":
    original = trainer.Trainer._iteration
    fired = []
    def patched(self, loop, window, result):
        window = yield from original(self, loop, window, result)
        if loop.steps >= at and not fired:
            fired.append(loop.steps)
            os.kill(os.getpid(), sig)
        return window
    trainer.Trainer._iteration = patched
else:
    original = synthesis.Synthesizer._close_window
    calls = [0]
    def patched(self, window, joint):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), sig)
        return original(self, window, joint)
    synthesis.Synthesizer._close_window = patched
sys.argv = ["macs_exp", *sys.argv[4:]]
from macs_exp.app import main
main()
"""


# The rating env under its candidate protocol with knn items, for recommender and pi_c alike:
# its snapshots hold the episodes' candidates, its agents the item catalogue.
RATED = [
    "env=tiny_ratings",
    "env.candidates=rated",
    "algo.action_mapping=knn",
    "macs.algo.action_mapping=knn",
]
TPGR_RATED = ["algo=tpgr", "algo.batch_episodes=4", "env=tiny_ratings", "env.candidates=rated"]
# PGPR on a tiny dataset with side files, written where {kg_data} stands.
PGPR_CTRL = [
    "algo=pgpr",
    "algo.batch_size=8",
    "algo.hidden=[32,16]",
    "algo.context_dim=8",
    "kg.transe_epochs=3",
    "kg.transe_dim=16",
    "env=ml100k",
    "env.data_dir={kg_data}",
    "data.cache_dir={kg_data}/cache",
    *TINY_CTRL,
]


def overrides(mode: str, tmp_path: Path, env: list[str] | None = None) -> list[str]:
    env = env or ["env=virtual_taobao"]
    # TINY's algo keys are the off-policy agents'; another algo comes with its own settings.
    other_algo = any(o.startswith("algo=") for o in env)
    return [
        *(o for o in TINY if not (other_algo and o.startswith("algo."))),
        *TINY_MACS,
        f"mode={mode}",
        *env,
        "trainer.checkpoint_every=200",
        f"tracking.dir={tmp_path / 'outputs'}",
        f"expert.cache_dir={tmp_path / 'experts'}",
        # Every metric reaches the store at once, so that a kill leaves some logged after the
        # last checkpoint, which the resumed run must not log twice.
        "tracking.flush_every_s=0",
    ]


def launch(args: list[str], kill: tuple[str, int, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", _KILLER, *map(str, kill)] if kill else [sys.executable, "-m", "macs_exp"]
    return subprocess.run(
        [*command, *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


def histories(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
        if key not in TIMED
    }


def runs_by_dir(client: MlflowClient, folder: Path):
    return [
        r
        for r in client.search_runs([client.get_experiment_by_name("macs").experiment_id])
        if r.data.tags.get("run_dir") == str(folder.resolve())
    ]


_REFERENCES: dict[tuple[str, tuple[str, ...]], dict[str, list[tuple[int, float]]]] = {}


def reference(mode: str, tmp_path: Path, env: list[str] | None) -> dict[str, list[tuple[int, float]]]:
    """The history of the run never stopped, made once per mode and env for the whole module
    (where it is tracked does not change its numbers)."""
    key = (mode, tuple(env or ()))
    if key not in _REFERENCES:
        result = run_experiment(compose_config(overrides(mode, tmp_path, env)), tmp_path / "reference")
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
        assert result.run_id is not None
        _REFERENCES[key] = histories(client, result.run_id)
    return _REFERENCES[key]


def kill_and_resume(
    mode: str, tmp_path: Path, kill: tuple[str, int, str], env: list[str] | None, by_run_id: bool
) -> tuple[MlflowClient, str]:
    folder = tmp_path / "stopped"
    args = [*overrides(mode, tmp_path, env), f"hydra.run.dir={folder}"]
    stopped = launch(args, kill)
    assert stopped.returncode != 0, stopped.stderr[-2000:]
    assert (folder / CHECKPOINT_FILE).is_file(), stopped.stderr[-2000:]
    target = torch.load(folder / CHECKPOINT_FILE, weights_only=True)["run_id"] if by_run_id else folder
    resumed = launch([*args[:-1], f"hydra.run.dir={tmp_path / 'resume'}", f"trainer.resume={target}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = runs_by_dir(client, folder)
    assert run.info.status == "FINISHED"
    assert not (folder / CHECKPOINT_FILE).exists(), "a finished run keeps no checkpoint"
    return client, run.info.run_id


@pytest.mark.parametrize(
    ("mode", "kill", "env", "by_run_id"),
    [
        # SIGKILL after the checkpoint at 200 and the metrics logged at 300, which the resumed run
        # logs again.
        pytest.param("baseline", ("step", 350, "SIGKILL"), None, False, marks=pytest.mark.slow),
        pytest.param("expert", ("step", 350, "SIGKILL"), None, True, marks=pytest.mark.slow),
        # In joint mode, inside the third stage 2 (four windows each; the third starts after
        # the checkpoint at 200).
        pytest.param("joint", ("stage2", 10, "SIGKILL"), None, False, marks=pytest.mark.slow),
        pytest.param("joint", ("step", 350, "SIGKILL"), RATED, False, marks=pytest.mark.slow),
        pytest.param("random_mask", ("step", 350, "SIGKILL"), None, True, marks=pytest.mark.slow),
        # CTRL on the rating env: after the checkpoint at 200, the refit at 300 and its gate.
        pytest.param(
            "ctrl", ("step", 350, "SIGKILL"), ["env=tiny_ratings", *TINY_CTRL], False, marks=pytest.mark.slow
        ),
        # TPGR-J: episodes still running, with their counterfactual twins, at the checkpoint.
        pytest.param(
            "joint",
            ("step", 350, "SIGKILL"),
            TPGR_RATED,
            False,
            marks=pytest.mark.slow,
            id="tpgr-joint-rated",
        ),
        # PGPR-CTRL: walks of the update being gathered, and CTRL's drawn walks, at the checkpoint.
        pytest.param(
            "ctrl", ("step", 350, "SIGKILL"), PGPR_CTRL, False, marks=pytest.mark.slow, id="pgpr-ctrl"
        ),
    ],
)
def test_killed_and_resumed_run_has_the_uninterrupted_history(
    mode: str, kill: tuple[str, int, str], env: list[str] | None, by_run_id: bool, tmp_path: Path
) -> None:
    if env is not None and any("{kg_data}" in o for o in env):
        folder = write_ml100k(tmp_path / "kg_data")
        env = [o.replace("{kg_data}", str(folder)) for o in env]
    expected = reference(mode, tmp_path, env)
    client, run_id = kill_and_resume(mode, tmp_path, kill, env, by_run_id)
    assert histories(client, run_id) == expected
    if kill[0] == "stage2":
        assert expected["macs/stage2_runs"][-1][1] >= 3, "the kill must fall in a later stage 2"


def test_sigterm_writes_a_checkpoint_at_the_step_and_marks_the_run_killed(tmp_path: Path) -> None:
    folder = tmp_path / "stopped"
    stopped = launch([*overrides("baseline", tmp_path), f"hydra.run.dir={folder}"], ("step", 130, "SIGTERM"))
    assert stopped.returncode != 0
    assert "received SIGTERM: stopped at user-step" in stopped.stderr
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)
    # VirtualTaobao steps one user at a time: it stopped at the step SIGTERM came in.
    assert state["loop"]["steps"] == 130
    assert state["agent"]["buffer"]["rows"].shape[0] == 130
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = runs_by_dir(client, folder)
    assert run.info.status == "KILLED"


@pytest.mark.slow
def test_resume_refuses_another_config_naming_the_keys(tmp_path: Path) -> None:
    folder = tmp_path / "stopped"
    args = [*overrides("baseline", tmp_path), f"hydra.run.dir={folder}"]
    assert launch(args, ("step", 250, "SIGKILL")).returncode != 0
    changed = [*args[:-1], "algo.learning_rate=0.5", "trainer.total_steps=600", f"trainer.resume={folder}"]
    with pytest.raises(ResumeError, match=r"algo\.learning_rate \(checkpoint 0\.001, now 0\.5\)") as err:
        run_experiment(compose_config(changed), tmp_path / "elsewhere")
    changes = str(err.value).split(". Resume with")[0]
    assert "total_steps" not in changes, "the budget may change"
    assert "trainer.total_steps=400" in str(err.value), "the run's own overrides, to copy"


@pytest.mark.slow
def test_auto_resumes_a_folder_with_a_checkpoint_and_starts_afresh_elsewhere(tmp_path: Path) -> None:
    """``trainer.resume=auto`` (a requeued job rerun in its own folder) continues that folder's
    run; in a folder without a checkpoint it is a fresh start."""
    folder = tmp_path / "job"
    args = [*overrides("baseline", tmp_path), "trainer.resume=auto", f"hydra.run.dir={folder}"]
    assert launch(args, ("step", 250, "SIGTERM")).returncode != 0
    stopped_id = torch.load(folder / CHECKPOINT_FILE, weights_only=True)["run_id"]
    result = run_experiment(compose_config(args[:-1]), folder)
    assert result.run_id == stopped_id
    fresh = run_experiment(compose_config(args[:-1]), tmp_path / "other")
    assert fresh.run_id != stopped_id and fresh.steps == 400


@pytest.mark.slow
def test_a_finished_run_has_nothing_to_resume(tmp_path: Path) -> None:
    args = overrides("baseline", tmp_path)
    run_experiment(compose_config(args), tmp_path / "done")
    with pytest.raises(ResumeError, match="finished"):
        run_experiment(compose_config([*args, f"trainer.resume={tmp_path / 'done'}"]), tmp_path / "again")


@pytest.mark.slow
def test_a_preempted_sweep_job_resumes_when_relaunched(tmp_path: Path) -> None:
    """What a SLURM requeue does, without SLURM: the sweep's process is told to exit (submitit's
    SIGUSR2 handler, after requeueing), which stops the job's run at a checkpoint (SIGTERM to its
    child); the same job launched again in its folder (``trainer.resume=auto``, the default)
    continues that run and ends with the uninterrupted history."""
    expected = reference("baseline", tmp_path, None)
    sweep = [
        sys.executable,
        "-m",
        "macs_exp",
        "-m",
        *overrides("baseline", tmp_path),
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    preempt = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PREEMPT), os.environ.get("PYTHONPATH", "")])}
    stopped = subprocess.run(
        sweep,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**preempt, "MACS_TEST_PREEMPT_AT": "250"},
    )
    assert stopped.returncode != 0
    (job,) = (tmp_path / "sweep").glob("0_*")
    assert torch.load(job / CHECKPOINT_FILE, weights_only=True)["loop"]["steps"] == 250
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = runs_by_dir(client, job)
    assert run.info.status == "KILLED"
    relaunched = subprocess.run(sweep, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert relaunched.returncode == 0, relaunched.stderr[-3000:]
    (run,) = runs_by_dir(client, job)
    assert run.info.status == "FINISHED"
    assert histories(client, run.info.run_id) == expected


class _Pool(NamedTuple):
    rows: torch.Tensor
    counts: torch.Tensor


@dataclass(frozen=True)
class _EnvState:
    users: torch.Tensor
    scores: np.ndarray
    step: int
    pool: _Pool
    rated: _Pool | None
    blocks: tuple[torch.Tensor, ...]


def test_pack_and_unpack_round_trip_an_env_state_through_a_weights_only_file(tmp_path: Path) -> None:
    state = _EnvState(
        torch.arange(3),
        np.array([0.5, 1.5], dtype=np.float32),
        7,
        _Pool(torch.ones(2, 2), torch.zeros(2, dtype=torch.long)),
        None,
        (torch.tensor([1]), torch.tensor([2, 3])),
    )
    torch.save(pack(state), tmp_path / "state.pt")
    template = dataclasses.replace(state, users=torch.zeros(3, dtype=torch.long), step=0)
    restored = unpack(template, torch.load(tmp_path / "state.pt", weights_only=True))
    assert isinstance(restored, _EnvState) and isinstance(restored.pool, _Pool)
    assert isinstance(restored.scores, np.ndarray) and restored.scores.dtype == np.float32
    assert restored.step == 7 and restored.rated is None and isinstance(restored.blocks, tuple)
    assert torch.equal(restored.users, state.users)
    assert all(torch.equal(a, b) for a, b in zip(restored.blocks, state.blocks, strict=True))
    assert np.array_equal(restored.scores, state.scores) and torch.equal(restored.pool.rows, state.pool.rows)
    with pytest.raises(TypeError, match="object cannot be saved"):
        pack({"env": object()})


@pytest.mark.slow
def test_a_seed_parallel_group_stopped_by_sigterm_resumes_each_seed(tmp_path: Path) -> None:
    """SIGTERM stops every seed of a group at the same step, each with its checkpoint; the group
    rerun with ``trainer.resume=<its folder>`` ends with each seed's uninterrupted history."""
    from macs_exp.trainer.parallel import run_seeds

    args = [*overrides("joint", tmp_path), "seeds=[0,1]"]
    expected = {}
    for result in run_seeds(compose_config(args), tmp_path / "reference"):
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
        assert result.run_id is not None
        expected[result.run_id] = histories(client, result.run_id)
    folder = tmp_path / "stopped"
    stopped = launch([*args, f"hydra.run.dir={folder}"], ("step", 250, "SIGTERM"))
    assert stopped.returncode != 0
    steps = [
        torch.load(folder / f"seed_{s}" / CHECKPOINT_FILE, weights_only=True)["loop"]["steps"] for s in (0, 1)
    ]
    assert steps == [250, 250]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    assert [r.info.status for s in (0, 1) for r in runs_by_dir(client, folder / f"seed_{s}")] == [
        "KILLED"
    ] * 2
    resumed = launch([*args, f"hydra.run.dir={tmp_path / 'again'}", f"trainer.resume={folder}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = [histories(client, runs_by_dir(client, folder / f"seed_{s}")[0].info.run_id) for s in (0, 1)]
    assert got == list(expected.values())
