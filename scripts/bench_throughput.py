"""Throughput figures (a script, not a test: timings belong in notes, not in assertions).

    python scripts/bench_throughput.py [--steps 3000] [--skip-sb3] [overrides ...]

Overrides apply to both trainers, e.g. ``algo.batch_size=64`` for the settings of the SB3
reference runs in the project's issue 2.

Prints one line per figure, ``bench <name> <value> <unit>``:
- VirtualTaobao user-steps/s: the single env, and the batched env at N=1 and N=256;
- trainer user-steps/s for DDPG, SAC and TD3 on VirtualTaobao with the default (paper's)
  settings, one user at a time and one gradient step per env step, next to
  stable-baselines3 with the same hyperparameters and network sizes, twice:
  ``sb3_<algo>`` as SB3 runs out of the box (its own process, torch's default threads), and
  ``sb3_tuned_<algo>`` in our process with our settings (``--threads`` torch threads,
  subnormals flushed to zero), which isolates the difference in the training loops.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from macs_exp.app import compose_config
from macs_exp.envs.virtual_taobao import VirtualTaobaoEnv, VirtualTaobaoVecEnv
from macs_exp.trainer import run_experiment

ALGOS = ("ddpg", "sac", "td3")


def emit(name: str, value: float, unit: str) -> None:
    print(f"bench {name} {value:.4g} {unit}", flush=True)


def single_env_rate(steps: int) -> float:
    env = VirtualTaobaoEnv()
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 27)).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, _, _ = env.step(a)
        if terminated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vec_env_rate(n: int, vec_steps: int) -> float:
    env = VirtualTaobaoVecEnv(num_envs=n)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (8, n, 27)).astype(np.float32)
    start = time.perf_counter()
    for i in range(vec_steps):
        env.step(actions[i % 8])
    return n * vec_steps / (time.perf_counter() - start)


def ours_rate(algo: str, steps: int, threads: int, extra: list[str]) -> float:
    cfg = compose_config(
        [
            f"algo={algo}",
            *extra,
            f"trainer.total_steps={steps}",
            f"trainer.eval_every={steps}",
            "trainer.eval_episodes=1",
            f"trainer.log_every={steps // 4}",
            "trainer.progress=none",
            f"trainer.torch_threads={threads}",
            "tracking.enabled=false",
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = run_experiment(cfg, tmp)
    # The first window holds the warm-up (random actions, no updates): leave it out.
    rates = [v for _, v in result.history["perf/steps_per_s"][1:]]
    return float(np.mean(rates))


def sb3_rate(algo: str, steps: int, extra: list[str]) -> float:
    import stable_baselines3 as sb3
    from stable_baselines3.common.noise import NormalActionNoise

    cfg = compose_config([f"algo={algo}", *extra]).algo
    kwargs = dict(
        learning_rate=cfg.learning_rate,
        buffer_size=cfg.buffer_size,
        learning_starts=cfg.learning_starts,
        batch_size=cfg.batch_size,
        tau=cfg.tau,
        gamma=cfg.gamma,
        train_freq=cfg.train_freq,
        gradient_steps=cfg.gradient_steps,
        policy_kwargs={"net_arch": list(cfg.net_arch)},
        device="cpu",
        seed=0,
        verbose=0,
    )
    if algo in ("ddpg", "td3"):
        kwargs["action_noise"] = NormalActionNoise(np.zeros(27), cfg.action_noise * np.ones(27))
    if algo == "td3":
        kwargs.update(
            policy_delay=cfg.policy_delay,
            target_policy_noise=cfg.target_policy_noise,
            target_noise_clip=cfg.target_noise_clip,
        )
    model = getattr(sb3, algo.upper())("MlpPolicy", VirtualTaobaoEnv(), **kwargs)
    model.learn(total_timesteps=cfg.learning_starts)  # warm-up outside the timing
    start = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def sb3_out_of_the_box(algo: str, steps: int, extra: list[str]) -> float:
    """SB3 in a fresh process, with none of this process's torch settings."""
    out = subprocess.run(
        [sys.executable, __file__, "--sb3-worker", algo, "--steps", str(steps), *extra],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3000, help="user-steps per trainer measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for our trainer and tuned SB3")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--sb3-worker", choices=ALGOS, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides for both, e.g. algo.batch_size=64")
    args = parser.parse_args()
    if args.sb3_worker:
        print(sb3_rate(args.sb3_worker, args.steps, args.overrides))
        return
    torch.set_num_threads(args.threads)

    single = single_env_rate(5000)
    emit("vtb_single_steps_per_s", single, "steps/s")
    emit("vtb_single_ms_per_step", 1000.0 / single, "ms")
    for n, vec_steps in ((1, 5000), (256, 300)):
        rate = vec_env_rate(n, vec_steps)
        emit(f"vtb_batched_n{n}_steps_per_s", rate, "steps/s")
        emit(f"vtb_batched_speedup_n{n}", rate / single, "ratio")

    for algo in ALGOS:
        ours = ours_rate(algo, args.steps, args.threads, args.overrides)
        emit(f"trainer_{algo}_steps_per_s", ours, "steps/s")
        if args.skip_sb3:
            continue
        theirs = sb3_out_of_the_box(algo, args.steps, args.overrides)
        emit(f"sb3_{algo}_steps_per_s", theirs, "steps/s")
        emit(f"trainer_speedup_vs_sb3_{algo}", ours / theirs, "ratio")
        # run_experiment already set this process's threads and subnormal flushing.
        tuned = sb3_rate(algo, args.steps, args.overrides)
        emit(f"sb3_tuned_{algo}_steps_per_s", tuned, "steps/s")
        emit(f"trainer_speedup_vs_sb3_tuned_{algo}", ours / tuned, "ratio")


if __name__ == "__main__":
    main()
