"""Checkpoints and ``trainer.resume``: a run killed at any point and resumed ends with the
metric history of the same run left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, TINY, TINY_MACS
from macs_exp.app import compose_config
from macs_exp.schema import ResumeError
from macs_exp.trainer.checkpoint import CHECKPOINT_FILE
from macs_exp.trainer.run import run_experiment

# Wall-clock metrics, which no two runs share.
TIMED = ("perf/steps_per_s", "perf/stage2_s")

# Runs the app with the trainer patched to send itself a signal once a vector step has taken
# the run to (or past) a user-step, or after the n-th window of a stage 2: a kill at a point
# the test chooses, with no timing involved.
_KILLER = """
import os, signal, sys
from macs_exp.macs import synthesis
from macs_exp.trainer import trainer
where, at, sig = sys.argv[1], int(sys.argv[2]), getattr(signal, sys.argv[3])
if where == "step":
    original = trainer.Trainer._iteration
    def patched(self, loop, window, result):
        window = original(self, loop, window, result)
        if loop.steps >= at:
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


def overrides(mode: str, tmp_path: Path) -> list[str]:
    return [
        *TINY,
        *TINY_MACS,
        f"mode={mode}",
        "env=virtual_taobao",
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


def reference(mode: str, tmp_path: Path) -> dict[str, list[tuple[int, float]]]:
    """The history of the run never stopped."""
    result = run_experiment(compose_config(overrides(mode, tmp_path)), tmp_path / "reference")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    assert result.run_id is not None
    return histories(client, result.run_id)


def kill_and_resume(mode: str, tmp_path: Path, kill: tuple[str, int, str]) -> tuple[MlflowClient, str]:
    folder = tmp_path / "stopped"
    args = [*overrides(mode, tmp_path), f"hydra.run.dir={folder}"]
    stopped = launch(args, kill)
    assert stopped.returncode != 0, stopped.stderr[-2000:]
    assert (folder / CHECKPOINT_FILE).is_file(), stopped.stderr[-2000:]
    resumed = launch([*args[:-1], f"hydra.run.dir={tmp_path / 'resume'}", f"trainer.resume={folder}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = runs_by_dir(client, folder)
    assert run.info.status == "FINISHED"
    assert not (folder / CHECKPOINT_FILE).exists(), "a finished run keeps no checkpoint"
    return client, run.info.run_id


@pytest.mark.parametrize(
    ("mode", "kill"),
    [
        # SIGKILL after the checkpoint at 200 and the metrics logged at 300, which the resumed run
        # logs again.
        ("baseline", ("step", 350, "SIGKILL")),
        pytest.param("expert", ("step", 350, "SIGKILL"), marks=pytest.mark.slow),
        # In joint mode, inside the third stage 2 (four windows each; the third starts after
        # the checkpoint at 200).
        pytest.param("joint", ("stage2", 10, "SIGKILL"), marks=pytest.mark.slow),
        # SIGTERM: the run writes a checkpoint at the end of its step and stops.
        pytest.param("joint", ("step", 330, "SIGTERM"), marks=pytest.mark.slow),
    ],
)
def test_killed_and_resumed_run_has_the_uninterrupted_history(
    mode: str, kill: tuple[str, int, str], tmp_path: Path
) -> None:
    expected = reference(mode, tmp_path)
    client, run_id = kill_and_resume(mode, tmp_path, kill)
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
