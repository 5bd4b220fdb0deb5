"""The scripts' output lines are contracts that other tools parse; check them at tiny budgets."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, TINY
from kg_files import write_ml100k

# Each runs a script end to end in a subprocess (the benchmark: minutes).
pytestmark = pytest.mark.slow


def run_script(*args: str, env: dict[str, str] | None = None) -> list[str]:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def test_check_pendulum_prints_its_result_line_last() -> None:
    lines = run_script("scripts/check_pendulum.py", "--algo", "td3", "--steps", "400", "--seed", "0")
    match = re.fullmatch(r"pendulum td3 mean_return=(-?\d+\.\d)", lines[-1])
    assert match and -2000 < float(match.group(1)) < 0


def test_check_pendulum_with_seeds_prints_each_seed_then_their_mean() -> None:
    lines = run_script("scripts/check_pendulum.py", "--algo", "td3", "--steps", "400", "--seeds", "0-1")
    seeds = [re.fullmatch(r"pendulum td3 seed=(\d) mean_return=(-?\d+\.\d)", line) for line in lines[-3:-1]]
    assert [m.group(1) for m in seeds if m] == ["0", "1"]
    values = [float(m.group(2)) for m in seeds if m]
    mean = re.fullmatch(r"pendulum td3 mean_return=(-?\d+\.\d)", lines[-1])
    assert mean and abs(float(mean.group(1)) - sum(values) / 2) <= 0.1


def test_bench_prints_one_parseable_line_per_figure(tmp_path) -> None:
    # Tiny MACS settings so that stage 2 runs within the short joint-mode timing, and a small
    # replay buffer for both trainers (SB3 allocates all of it up front).
    macs = ["macs.threshold_frac=0", "macs.threshold_window=3", "macs.stage2_steps=40"]
    small = ["algo.buffer_size=10000", "algo.batch_size=32"]
    # A tiny ML-100K with side files: the preprocessing and PGPR sections run on it.
    write_ml100k(tmp_path / "ml-100k")
    lines = run_script(
        "scripts/bench_throughput.py",
        "--steps",
        "100",
        "--macs-steps",
        "200",
        "--data-root",
        str(tmp_path),
        *macs,
        *small,
        # SB3's out-of-the-box worker would take torch's default threads beside the other test
        # worker; the figures' values are not checked here, only their lines.
        env={"OMP_NUM_THREADS": "1"},
    )
    figures = {}
    for line in lines:
        match = re.fullmatch(r"bench (\S+) (\S+) (\S+)", line)
        assert match, line
        figures[match.group(1)] = (float(match.group(2)), match.group(3))
    expected = {"vtb_batched_speedup_n256", "vtb_batched_n256_steps_per_s", "vtb_single_steps_per_s"}
    for algo in ("ddpg", "sac", "td3"):
        expected |= {f"trainer_{algo}_steps_per_s", f"sb3_{algo}_steps_per_s"}
        expected |= {f"trainer_speedup_vs_sb3_{algo}", f"macs_joint_overhead_{algo}"}
        expected |= {f"trainer_seed_parallel_k5_{algo}", f"seed_parallel_speedup_k5_{algo}"}
        expected |= {f"seed_parallel_single_{algo}_steps_per_s", f"seed_parallel_speedup_k5_joint_{algo}"}
    expected |= {"rating_env_n1", "rating_env_n256"}
    expected |= {"tpgr_eval_ml1m_all_users_s", "tpgr_train_step_64x16_s", "tpgr_update_64x16_s"}
    expected |= {"pgpr_beam_64_users_s", "pgpr_beam_all_test_users_s", "pgpr_walk_ms_per_step"}
    assert expected <= set(figures)
    assert figures["vtb_batched_speedup_n256"][1] == figures["macs_joint_overhead_ddpg"][1] == "ratio"
    assert figures["macs_stage2_runs_ddpg"][0] >= 1
    assert all(value > 0 for value, _ in figures.values())


def test_bench_checkpoint_reports_every_checkpoint() -> None:
    lines = run_script(
        "scripts/bench_checkpoint.py",
        *TINY,
        "trainer.checkpoint_every=100",
        "mode=baseline",
        "tracking.enabled=false",
    )
    sizes = [
        re.fullmatch(r"checkpoint at +(\d+) user-steps: +(\S+) MiB written in (\S+) s", line)
        for line in lines[:3]
    ]
    assert [int(m.group(1)) for m in sizes if m] == [100, 200, 300]
    # The buffer fills as the run goes: each checkpoint is larger than the one before.
    assert float(sizes[0].group(2)) < float(sizes[1].group(2)) < float(sizes[2].group(2))  # type: ignore[union-attr]
    assert re.fullmatch(r"run: \d+ s, of which checkpoints \S+ s \(\S+%\)", lines[3])
    assert re.fullmatch(r"loading the last: \S+ s", lines[4])
