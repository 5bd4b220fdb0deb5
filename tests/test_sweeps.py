"""Multirun sweeps end to end: the parent run, failures and kills, Optuna, and the launcher and
preset configs."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from conftest import REPO, TINY, run_script
from macs_exp.app import CONF_DIR, compose_config
from macs_exp.tracking import ledger
from macs_exp.tracking.config import TrackingConfig
from macs_exp.tracking.sweep import SweepContext, _planned_jobs, close_lost_job, format_summary, summarize
from macs_exp.trainer.run import run_tags

# tests/gate: VirtualTaobao with a gate at which a test can hold a run, to signal it mid-run.
GATE = Path(__file__).resolve().parent / "gate"
# The env step (counted over all of a process's envs) at which a gated run stops: past the 100
# steps of warm-up (TINY's algo.learning_starts), so the agent is training.
STOP_AT = 150

# Jobs small enough for a sweep test (the kill test holds its jobs at the gate: they need not be long).
SWEEP_BUDGET = [
    *TINY,
    "trainer.total_steps=600",
    "trainer.eval_every=500",
    "trainer.progress=none",
    "macs.stage2_steps=40",
    "macs.threshold_frac=0",
    "macs.algo.learning_starts=20",
    "macs.algo.batch_size=16",
]


def _env(*, gated: bool = False) -> dict[str, str]:
    """The subprocesses' environment: this worktree's package, and for ``gated`` runs the gated
    env's directory (registered at start-up in every process of the run, see tests/gate)."""
    paths = [REPO / "src", *([GATE] if gated else [])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}


def _gated(gate: Path) -> list[str]:
    """Overrides that run VirtualTaobao behind the gate at ``gate`` (made here, and held): every
    process stops at its ``STOP_AT``-th env step until the test lets it go."""
    gate.mkdir()
    (gate / "hold").touch()
    return [
        "env.id=Test/GatedVirtualTaobao-v0",
        f"+env.kwargs.gate_dir={gate}",
        f"+env.kwargs.stop_at={STOP_AT}",
    ]


def _sweep(tmp_path: Path, *overrides: str, gated: bool = False) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "macs_exp",
        "-m",
        *SWEEP_BUDGET,
        f"tracking.dir={tmp_path / 'outputs'}",
        "tracking.experiment=sweeptest",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"expert.cache_dir={tmp_path / 'experts'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *overrides,
    ]
    return subprocess.Popen(
        args, cwd=tmp_path, env=_env(gated=gated), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _client(tmp_path: Path):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")


def _tracking(store) -> TrackingConfig:  # type: ignore[no-untyped-def]
    return TrackingConfig(
        enabled=True, experiment="exp", dir=str(store.root), uri=store.uri, run_name=None, ledger=None
    )


# RUNNING runs that have logged their params (so they are inside the run's error handling):
# (run id, sweep_job or None, pid).
_RUNNING_SQL = """
SELECT r.run_uuid, job.value, pid.value FROM runs r
JOIN tags pid ON pid.run_uuid = r.run_uuid AND pid.key = 'pid'
LEFT JOIN tags job ON job.run_uuid = r.run_uuid AND job.key = 'sweep_job'
WHERE r.status = 'RUNNING' AND EXISTS (SELECT 1 FROM params p WHERE p.run_uuid = r.run_uuid)
"""


def _running(tmp_path: Path) -> list[tuple[str, str | None, str]]:
    """Read straight from SQLite, read-only: an MLflow client would create or migrate the store
    while the sweep is creating it, and corrupt it."""
    db = tmp_path / "outputs" / "mlflow.db"
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return con.execute(_RUNNING_SQL).fetchall()
    except sqlite3.Error:
        return []


def _stopped(tmp_path: Path, gate: Path, answered: set[str]) -> list[tuple[str, str, str | None, int]]:
    """The processes stopped at the gate that the test has not answered yet, with their runs:
    (stop, run id, sweep_job or None, pid) for each ``stopped-<stop>`` marker, ``<stop>`` being
    ``<pid>-<token>``. A run opens before its env steps, so every stopped process has one; one
    the read has not seen yet (the store was busy) is listed on a later call."""
    runs = {int(pid): (run_id, job) for run_id, job, pid in _running(tmp_path)}
    stopped = []
    for marker in sorted(gate.glob("stopped-*")):
        stop = marker.name.removeprefix("stopped-")
        pid = int(stop.split("-")[0])
        if stop not in answered and pid in runs:
            stopped.append((stop, *runs[pid], pid))
    return stopped


def _runs(tmp_path: Path, role: str) -> list:  # type: ignore[type-arg]
    client = _client(tmp_path)
    experiment = client.get_experiment_by_name("sweeptest")
    return list(client.search_runs([experiment.experiment_id], f"tags.role = '{role}'", max_results=100))


@pytest.mark.slow
def test_killed_jobs_are_recorded_and_the_others_finish(tmp_path: Path) -> None:
    """Six jobs on two joblib workers. Job 1 is killed outright (SIGKILL, as the OOM killer does)
    and job 3 is sent SIGTERM, both while they train. The SIGKILLed run is closed as FAILED and
    lost, the SIGTERMed one is KILLED with its traceback; the worker pool survives, so every other
    job, including those queued after the kills, finishes. The sweep's summary lists both, it
    exits 1, and Table I shows the holes.

    Every job stops at the gate mid-run; the test signals jobs 1 and 3 there and lets the others
    go on, so the signals land while they train whatever the timing."""
    gate = tmp_path / "gate"
    proc = _sweep(
        tmp_path,
        "mode=baseline,joint",
        "seed=0,1,2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *_gated(gate),
        gated=True,
    )
    signals = {"1": signal.SIGKILL, "3": signal.SIGTERM}
    killed: dict[str, str] = {}
    answered: set[str] = set()
    deadline = time.monotonic() + 240
    while len(killed) < len(signals) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        for stop, run_id, job, pid in _stopped(tmp_path, gate, answered):
            if job in signals:
                os.kill(pid, signals[job])
                killed[job] = run_id
            else:
                (gate / f"go-{stop}").touch()
            answered.add(stop)
    # Open the gate: a job stopped since the last look goes on, and the jobs to come pass through.
    (gate / "hold").unlink()
    out, _ = proc.communicate(timeout=300)
    assert set(killed) == {"1", "3"}, out
    assert proc.returncode == 1, out

    runs = {r.data.tags["sweep_job"]: r for r in _runs(tmp_path, "run")}
    assert {k: r.info.status for k, r in runs.items()} == {
        "0": "FINISHED",
        "1": "FAILED",
        "2": "FINISHED",
        "3": "KILLED",
        "4": "FINISHED",
        "5": "FINISHED",
    }
    assert runs["1"].data.tags["failure"] == "lost: the job's process was killed by SIGKILL"
    # Named like single runs, the lost and killed ones too.
    names = [f"ddpg-{mode}-virtual_taobao-s{seed}" for mode in ("baseline", "joint") for seed in range(3)]
    assert [runs[str(job)].info.run_name for job in range(6)] == names
    client = _client(tmp_path)
    trace = Path(client.download_artifacts(killed["3"], "traceback.txt", str(tmp_path / "dl"))).read_text()
    assert "Terminated: received SIGTERM" in trace
    # Every job is nested under the one parent run of the sweep, which records the failures.
    (parent,) = _runs(tmp_path, "sweep")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {parent.info.run_id}
    assert {r.data.tags["sweep_id"] for r in runs.values()} == {parent.data.tags["sweep_id"]}
    assert parent.info.status == "FAILED"
    assert parent.data.tags["sweep_jobs"] == "FAILED=1 FINISHED=4 KILLED=1"
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "4 of 6 jobs finished" in summary
    assert "| 1 | FAILED | mode=baseline seed=1 |" in summary
    assert "| 3 | KILLED | mode=joint seed=0 |" in summary

    table = run_script(
        "table1.py",
        "--experiment",
        "sweeptest",
        "--tracking-uri",
        client.tracking_uri,
        "--out-dir",
        str(tmp_path / "tables"),
    )
    assert table.returncode == 0, table.stderr
    with (tmp_path / "tables" / "sweeptest.csv").open() as f:
        cells = {(row["row"], row["metric"]): row for row in csv.DictReader(f)}
    for row in ("DDPG", "DDPG-J"):
        cell = cells[(row, "eval/ctr")]
        assert (cell["n"], cell["expected"], cell["failed"], cell["status"]) == ("2", "3", "1", "partial")
    assert "(n=2/3, 1 failed)" in table.stdout


@pytest.mark.slow
def test_a_job_that_fails_before_training_still_leaves_a_failed_run(tmp_path: Path) -> None:
    """A job whose data is missing fails before its run would open; in a sweep it is still
    recorded (FAILED, with the fix in its traceback) and listed, and the other job finishes."""
    proc = _sweep(tmp_path, "env=synthetic,ml100k", "mode=baseline", "trainer.total_steps=400")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    runs = {r.data.tags["env"]: r for r in _runs(tmp_path, "run")}
    assert runs["synthetic"].info.status == "FINISHED"
    failed = runs["ml100k"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["sweep_job"] == "1"
    trace = Path(
        _client(tmp_path).download_artifacts(failed.info.run_id, "traceback.txt", str(tmp_path / "dl"))
    ).read_text()
    assert "scripts/download_data.py ml100k" in trace
    assert "| 1 | FAILED | env=ml100k" in (tmp_path / "sweep" / "summary.md").read_text()


def test_summary_closes_lost_runs_and_lists_jobs_that_never_started(mlflow_store) -> None:  # type: ignore[no-untyped-def]
    """A job killed with SIGKILL leaves its run RUNNING; once the sweep is over the summary
    closes it as FAILED ("lost"), and planned jobs without any run are listed as NOT STARTED."""
    parent = mlflow_store.sweep("exp", "sw")
    common = {"algo": "ddpg", "mode": "baseline", "env": "virtual_taobao", "sweep_id": "sw"}
    done = mlflow_store.run("exp", seed=0, metrics={"eval/ctr": 0.25}, **common)
    lost = mlflow_store.run("exp", seed=1, status="RUNNING", **common)
    for job, run_id in enumerate((done, lost)):
        mlflow_store.client.set_tag(run_id, "sweep_job", str(job))
    tracking = _tracking(mlflow_store)
    planned = [["seed=0"], ["seed=1"], ["seed=2"]]
    # After an abort, a cluster job may still be running: it is reported, not closed.
    aborted = summarize(tracking, SweepContext("sw", parent), planned, close_lost=False)
    assert [r["status"] for r in aborted] == ["FINISHED", "RUNNING", "NOT STARTED"]
    assert mlflow_store.client.get_run(lost).info.status == "RUNNING"
    rows = summarize(tracking, SweepContext("sw", parent), planned)
    assert [(r["job"], r["status"], r["metric"]) for r in rows] == [
        ("0", "FINISHED", "eval/ctr=0.25"),
        ("1", "LOST", ""),
        ("2", "NOT STARTED", ""),
    ]
    assert rows[2]["overrides"] == "seed=2"
    assert mlflow_store.client.get_run(lost).info.status == "FAILED"
    assert "| 2 | NOT STARTED | seed=2 |" in format_summary(rows)


@pytest.mark.slow
def test_optuna_search_runs_in_memory_and_tracks_every_trial(tmp_path: Path) -> None:
    proc = _sweep(
        tmp_path,
        "+search=lr",
        "env=tiny_ratings",
        "trainer.total_steps=300",
        "trainer.eval_every=300",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    runs = _runs(tmp_path, "run")
    assert len(runs) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    # Each trial's learning rates are the sampled ones, inside the search space.
    rates = [float(r.data.params["algo.learning_rate"]) for r in runs]
    assert all(1e-4 <= x <= 1e-2 for x in rates) and rates[0] != rates[1]
    best = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(r.data.metrics["test/precision"] for r in runs))


PRESET_JOBS = {
    "smoke": 24,
    "table1": 100,
    "fig4": 75,
    "fig5_hidden": 15,
    "fig6_threshold": 20,
}


def _hydra_config(overrides: list[str]):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(("preset", "jobs"), PRESET_JOBS.items())
def test_presets_compose_and_plan_their_grid(preset: str, jobs: int) -> None:
    cfg = _hydra_config([f"+experiment={preset}"])
    assert cfg.tracking.experiment == preset
    planned = _planned_jobs(cfg)
    assert planned is not None and len(planned) == jobs
    # Every swept value composes (a typo in a preset fails here, not hours into a sweep); one
    # job per new value covers them all.
    seen: set[str] = set()
    for job in planned:
        if set(job) <= seen:
            continue
        seen |= set(job)
        assert compose_config(job).tracking.experiment == preset


def test_preset_grids_are_the_papers() -> None:
    table1 = _planned_jobs(_hydra_config(["+experiment=table1", "env=ml1m"]))
    assert table1 is not None
    assert {tuple(sorted(j)) for j in table1} >= {
        ("+experiment=table1", "algo=sac", "env=ml1m", "mode=expert", "seed=4")
    }
    fig5 = compose_config(["+experiment=fig5_hidden", "macs.algo.net_arch=[64,64]"])
    assert (fig5.algo.name, fig5.mode.name, fig5.env.name) == ("ddpg", "expert", "virtual_taobao")
    assert list(fig5.macs.algo.net_arch) == [64, 64]
    fig6 = _hydra_config(["+experiment=fig6_threshold"])
    assert fig6.hydra.sweeper.params["macs.threshold_frac"] == "0.2,0.4,0.6,0.8"
    assert compose_config(["+experiment=fig6_threshold"]).mode.name == "joint"
    # The command line still chooses: a reference sweep into the Table I experiment.
    cfg = _hydra_config(["+experiment=table1"])
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["+experiment=table1", "algo=random,popular", "mode=baseline"]
    reference = _planned_jobs(cfg)
    assert reference is not None and len(reference) == 10
    assert {o for job in reference for o in job if o.startswith(("algo=", "mode="))} == {
        "algo=random",
        "algo=popular",
        "mode=baseline",
    }


@pytest.mark.parametrize("search", ["lr", "hidden", "threshold"])
def test_search_configs_use_optuna_in_memory(search: str) -> None:
    cfg = _hydra_config([f"+search={search}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.storage is None
    assert sweeper.direction == "maximize"
    assert sweeper.params
    # The swept keys exist in the job config.
    job = compose_config([f"+search={search}"])
    for key in sweeper.params:
        assert OmegaConf.select(job, key) is not None, key


def test_a_requeued_slurm_job_reruns_itself_and_resumes_its_folder() -> None:
    """A preempted or timed-out SLURM job is requeued by submitit through the launcher's
    ``checkpoint``, which resubmits the same job with the same arguments: the same overrides,
    hence the same folder, where ``trainer.resume=auto`` (the default) finds its checkpoint
    (tests/test_resume.py stops and relaunches such a job)."""
    from hydra.utils import instantiate

    cfg = _hydra_config(["hydra/launcher=slurm"])
    launcher = instantiate(cfg.hydra.launcher)
    requeued = launcher.checkpoint(["seed=3"], "outputs/multirun/x", 4, 0, "hydra.sweep.dir")
    assert requeued.function is launcher
    assert requeued.args == (["seed=3"], "outputs/multirun/x", 4, 0, "hydra.sweep.dir")
    assert compose_config(["hydra/launcher=slurm"]).trainer.resume == "auto"


def test_launcher_configs_compose() -> None:
    slurm = _hydra_config(["hydra/launcher=slurm"]).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.cpus_per_task, slurm.timeout_min, slurm.array_parallelism) == (1, 240, 256)
    joblib = _hydra_config(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]).hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher") and joblib.n_jobs == 2
    local = _hydra_config(["hydra/launcher=ray_local"]).hydra.launcher
    assert local._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert local.ray.remote.num_cpus == 1 and local.ray.init.address is None
    os.environ["RAY_ADDRESS"] = "ray://head:10001"
    try:
        cluster = _hydra_config(["hydra/launcher=ray_cluster"]).hydra.launcher
        assert cluster.ray.init.address == "ray://head:10001"
    finally:
        del os.environ["RAY_ADDRESS"]


def test_sweep_callback_is_registered() -> None:
    callbacks = _hydra_config([]).hydra.callbacks
    assert callbacks.sweep._target_ == "macs_exp.tracking.sweep.SweepCallback"


def test_job_tags_nest_under_the_parent() -> None:
    tags = SweepContext("sw-1", "parent123").job_tags(3, ["algo=sac", "seed=2"])
    assert tags == {
        "sweep_id": "sw-1",
        "sweep_job": "3",
        "sweep_overrides": "algo=sac seed=2",
        "mlflow.parentRunId": "parent123",
    }
    assert "mlflow.parentRunId" not in SweepContext("sw-1", None).job_tags(0, [])


def test_a_job_lost_before_its_run_opened_still_leaves_a_failed_run(mlflow_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tracking = _tracking(mlflow_store)
    sweep = SweepContext("sw", mlflow_store.sweep("exp", "sw"))
    # The tags the job's worker passes (macs_exp.trainer.job), the run's name among them.
    tags = run_tags(compose_config(["algo=sac", "mode=joint", "env=synthetic", "seed=4"]))
    close_lost_job(
        tracking, sweep, 7, {**tags, **sweep.job_tags(7, ["seed=4"])}, "seed: 4\n", "killed by SIGKILL"
    )
    (run,) = mlflow_store.client.search_runs([mlflow_store.experiment("exp")], "tags.role = 'run'")
    assert run.info.status == "FAILED"
    assert run.info.run_name == "sac-joint-synthetic-s4"
    assert (run.data.tags["sweep_job"], run.data.tags["seed"]) == ("7", "4")
    trace = Path(mlflow_store.client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path)))
    assert "JobLost: the job's process was killed by SIGKILL" in trace.read_text()


@pytest.mark.slow
def test_parallel_expert_jobs_train_one_expert_and_share_it(tmp_path: Path) -> None:
    proc = _sweep(
        tmp_path,
        "mode=expert",
        "seed=0,1",
        "trainer.total_steps=400",
        "expert.total_steps=600",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    (expert,) = _runs(tmp_path, "expert")
    jobs = _runs(tmp_path, "run")
    assert len(jobs) == 2
    # Both ran at once; the second waited on the lock and reused what the first trained.
    assert {r.data.tags["expert_run_id"] for r in jobs} == {expert.info.run_id}
    assert sorted(r.data.tags["expert_cached"] for r in jobs) == ["false", "true"]
    assert len(list((tmp_path / "experts").glob("*/expert.pt"))) == 1


@pytest.mark.slow
def test_sigterm_ends_a_single_run_as_killed(tmp_path: Path) -> None:
    """SIGTERM, sent while the run is held at the gate mid-training, asks it to stop: once the
    gate lets its step finish, the run writes a checkpoint and ends KILLED."""
    gate = tmp_path / "gate"
    args = [
        sys.executable,
        "-m",
        "macs_exp",
        *TINY,
        f"tracking.dir={tmp_path / 'outputs'}",
        "tracking.experiment=sweeptest",
        f"hydra.run.dir={tmp_path / 'run'}",
        "mode=baseline",
        *_gated(gate),
    ]
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=_env(gated=True), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    stopped: list[tuple[str, str, str | None, int]] = []
    while not stopped and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        stopped = _stopped(tmp_path, gate, set())
    assert stopped, proc.communicate()[0]
    ((stop, run_id, _, pid),) = stopped
    assert pid == proc.pid
    proc.send_signal(signal.SIGTERM)
    (gate / f"go-{stop}").touch()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Terminated: received SIGTERM: stopped at user-step" in out
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert _client(tmp_path).get_run(run_id).info.status == "KILLED"


@pytest.mark.slow
def test_a_sweep_without_a_usable_store_stops_before_any_job(tmp_path: Path) -> None:
    """Hydra only warns when a callback raises; the sweep must not launch jobs that would each
    race to create the store."""
    (tmp_path / "file").write_text("")
    proc = _sweep(tmp_path, "seed=0,1", f"tracking.uri=sqlite:///{tmp_path / 'file' / 'mlflow.db'}")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "cannot open the MLflow store" in out and "tracking.enabled=false" in out
    assert not list((tmp_path / "sweep").glob("*/config.yaml"))


@pytest.mark.slow
def test_a_seed_sweep_runs_in_seed_parallel_packs(tmp_path: Path) -> None:
    """``seed=0,1,2 trainer.parallel_seeds=2``: two jobs (seeds 0-1, then 2), three runs nested
    under the sweep, linked in pairs by their group tag, and one summary row per seed."""
    proc = _sweep(
        tmp_path, "seed=0,1,2", "trainer.parallel_seeds=2", "mode=baseline", "trainer.total_steps=300"
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "2 jobs" in out
    runs = {r.data.tags["seed"]: r for r in _runs(tmp_path, "run")}
    assert sorted(runs) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert [runs[s].data.tags["sweep_job"] for s in "012"] == ["0", "0", "1"]
    assert (
        runs["0"].data.tags["seed_group"]
        == runs["1"].data.tags["seed_group"]
        != runs["2"].data.tags["seed_group"]
    )
    assert runs["2"].data.params["seed"] == "2"
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "3 of 3 jobs finished" in summary
    for row in ("| 0/s0 | FINISHED", "| 0/s1 | FINISHED", "| 1/s2 | FINISHED"):
        assert row in summary


@pytest.mark.slow
def test_a_sweep_skips_the_runs_its_ledger_holds(tmp_path: Path) -> None:
    """With tracking.ledger, a rerun of a sweep trains only what the ledger lacks: a pack whose
    seeds are all there is skipped, one with a new seed trains that seed alone, and the summary
    lists the skipped ones without counting them as failed."""
    book = tmp_path / "runs.csv"
    args = ("trainer.parallel_seeds=2", "mode=baseline", "trainer.total_steps=300", f"tracking.ledger={book}")
    first = _sweep(tmp_path, "seed=0,1,2", *args)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert [e.seed for e in sorted(ledger.read(book), key=lambda e: e.seed)] == [0, 1, 2]

    again = _sweep(tmp_path, "seed=0,1,2,3", *args)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert sorted(e.seed for e in ledger.read(book)) == [0, 1, 2, 3]
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "1 of 3 jobs finished, 2 skipped (in the ledger)" in summary
    assert "| 0 | SKIPPED |" in summary and "seeds 0,1 in the ledger" in summary
    assert "| 1 | SKIPPED |" in summary and "seeds 2 in the ledger" in summary
    assert "| 1 | FINISHED |" in summary

    # Everything recorded: no job is launched, and the summary still accounts for each.
    last = _sweep(tmp_path, "seed=0,1,2,3", *args)
    out, _ = last.communicate(timeout=300)
    assert last.returncode == 0, out
    assert "none launched" in out
    assert "Launching 2 jobs" not in out
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "0 of 2 jobs finished, 2 skipped (in the ledger)" in summary
    assert len(ledger.read(book)) == 4
