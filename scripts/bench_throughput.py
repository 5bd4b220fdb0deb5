"""Throughput figures (a script, not a test: timings belong in notes, not in assertions).

    python scripts/bench_throughput.py [--steps 3000] [--skip-sb3] [overrides ...]

Overrides apply to both trainers, e.g. ``algo.batch_size=64`` for the settings of the SB3
reference runs in the project's issue 2.

Prints one line per figure, ``bench <name> <value> <unit>``:
- VirtualTaobao user-steps/s: the single env, and the batched env at N=1 and N=256;
- TPGR on ML-1M-sized data: seconds for a greedy evaluation of every test user, and for one
  training step (collection and update) of 64 users x 16 episodes (``tpgr_*``);
- trainer user-steps/s for DDPG, SAC and TD3 on VirtualTaobao with the default (paper's)
  settings, one user at a time and one gradient step per env step, next to
  stable-baselines3 with the same hyperparameters and network sizes, twice:
  ``sb3_<algo>`` as SB3 runs out of the box (its own process, torch's default threads), and
  ``sb3_tuned_<algo>`` in our process with our settings (``--threads`` torch threads,
  subnormals flushed to zero), which isolates the difference in the training loops;
- seed-parallel training (section ``seeds``), measured beside the single-seed figures of the
  same run: ``trainer_seed_parallel_k5_<algo>``, user-steps/s summed over 5 seeds trained in one
  process, and ``seed_parallel_speedup_k5_<algo>``, that over one single-seed run's
  (``seed_parallel_single_<algo>_steps_per_s``, measured just before it); for joint
  mode, ``seed_parallel_speedup_k5_joint_<algo>``, five single runs' wall time over the group's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from macs_exp.agents import ItemSpace, Transitions, make_agent
from macs_exp.app import compose_config
from macs_exp.config import to_config
from macs_exp.data.dataset import RatingData
from macs_exp.envs.rating import RatingVecEnv
from macs_exp.envs.virtual_taobao import VirtualTaobaoEnv, VirtualTaobaoVecEnv
from macs_exp.trainer.parallel import run_seeds
from macs_exp.trainer.process import configure_torch
from macs_exp.trainer.result import TrainResult
from macs_exp.trainer.trainer import evaluate

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
    """User-steps/s of training, summed over the seeds when ``extra`` asks for several."""
    cfg = compose_config(
        [
            f"algo={algo}",
            "mode=baseline",
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
        results = run_seeds(cfg, tmp)
    # The first window holds the warm-up (random actions, no updates): leave it out. The seeds
    # of a group share each window's wall time, so their rates add up.
    return sum(float(np.mean([v for _, v in r.history["perf/steps_per_s"][1:]])) for r in results)


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


def synthetic_rating_data(n_users: int, n_items: int, feature_dim: int, seed: int) -> RatingData:
    """Random ratings of ML-1M's shape (users rate 20 to 300 items, 1-5 stars): the env's cost
    depends on the sizes only. Features are random factors plus a popularity coordinate in [0, 1]."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(20, 301, n_users)
    items = np.concatenate([rng.permutation(n_items)[:c] for c in counts])
    ratings = rng.integers(1, 6, items.size).astype(np.float32)
    test_counts = counts // 5
    train_counts = counts - test_counts
    is_test = np.arange(items.size) - np.repeat(np.cumsum(counts) - counts, counts) >= np.repeat(
        train_counts, counts
    )
    popularity = np.bincount(items[~is_test], minlength=n_items)
    features = np.concatenate(
        (rng.normal(0.0, 0.3, (n_items, feature_dim - 1)), (popularity / popularity.max())[:, None]), axis=1
    ).astype(np.float32)
    return RatingData(
        name="synthetic",
        n_users=n_users,
        n_items=n_items,
        item_features=features,
        train_indptr=np.concatenate(([0], np.cumsum(train_counts))),
        train_items=items[~is_test],
        train_ratings=ratings[~is_test],
        test_indptr=np.concatenate(([0], np.cumsum(test_counts))),
        test_items=items[is_test],
        test_ratings=ratings[is_test],
        positive_threshold=4.0,
        rating_min=1.0,
        rating_max=5.0,
    )


def bench_rating_env() -> None:
    """MACS/Rating-v0 user-steps/s on ML-1M-sized synthetic data (6040 users, 3706 items, 33 features)."""
    data = synthetic_rating_data(6040, 3706, 33, seed=0)
    for n, vec_steps in ((1, 5000), (256, 400)):
        env = RatingVecEnv(num_envs=n, data=data)
        env.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-1, 1, (8, n, 33)).astype(np.float32)
        for i in range(20):  # warm-up
            env.step(actions[i % 8])
        start = time.perf_counter()
        for i in range(vec_steps):
            env.step(actions[i % 8])
        emit(f"rating_env_n{n}", n * vec_steps / (time.perf_counter() - start), "user-steps/s")


def bench_preprocessing(data_root: Path) -> None:
    """Rating-data preprocessing, cold and from the cache, on the shared ML-100k and rebuilt ML-1M.

    ``data_root`` holds the shared copies (ml-100k/, ml-1m/); each cache starts empty.
    """
    from macs_exp.data import load_rating_data

    cases = {"ml100k": ("ml-100k", ["env=ml100k"]), "ml1m": ("ml-1m", ["env=ml1m", "env.format=table"])}
    for name, (folder, overrides) in cases.items():
        data_dir = data_root / folder
        if not data_dir.is_dir():
            print(f"note: preprocessing {name} skipped, no data at {data_dir}", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as cache_dir:
            cfg = compose_config([*overrides, f"env.data_dir={data_dir}", f"data.cache_dir={cache_dir}"])
            for phase in ("cold", "cached"):
                start = time.perf_counter()
                load_rating_data(cfg.env, cfg.data)
                emit(f"preprocess_{name}_{phase}_s", time.perf_counter() - start, "s")


def run_wall_time(
    algo: str, mode: str, steps: int, threads: int, extra: list[str]
) -> tuple[float, dict[str, list[tuple[int, float]]]]:
    cfg = compose_config(
        [
            f"algo={algo}",
            f"mode={mode}",
            *extra,
            f"trainer.total_steps={steps}",
            f"trainer.eval_every={steps}",
            "trainer.eval_episodes=1",
            "trainer.progress=none",
            f"trainer.torch_threads={threads}",
            "tracking.enabled=false",
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        results: list[TrainResult] = run_seeds(cfg, tmp)
        return time.perf_counter() - start, results[0].history


def bench_seed_parallel(steps: int, threads: int, extra: list[str], macs_steps: int) -> None:
    """Five seeds in one process against one single-seed run, measured here one after the other."""
    for algo in ALGOS:
        single = ours_rate(algo, steps, threads, extra)
        group = ours_rate(algo, steps, threads, [*extra, "trainer.parallel_seeds=5"])
        emit(f"seed_parallel_single_{algo}_steps_per_s", single, "steps/s")
        emit(f"trainer_seed_parallel_k5_{algo}", group, "steps/s")
        emit(f"seed_parallel_speedup_k5_{algo}", group / single, "ratio")
    for algo in ALGOS:
        single_s, _ = run_wall_time(algo, "joint", macs_steps, threads, extra)
        group_s, _ = run_wall_time(algo, "joint", macs_steps, threads, [*extra, "trainer.parallel_seeds=5"])
        emit(f"trainer_seed_parallel_k5_joint_{algo}", 5 * macs_steps / group_s, "steps/s")
        emit(f"seed_parallel_speedup_k5_joint_{algo}", 5 * single_s / group_s, "ratio")


def bench_macs_overhead(algo: str, steps: int, threads: int, extra: list[str]) -> None:
    """Joint mode's wall time over baseline's at equal user-steps, stage-2 runs included."""
    baseline, _ = run_wall_time(algo, "baseline", steps, threads, extra)
    joint, history = run_wall_time(algo, "joint", steps, threads, extra)
    stage2 = sum(v for _, v in history.get("perf/stage2_s", []))
    runs = int(history["macs/stage2_runs"][-1][1]) if "macs/stage2_runs" in history else 0
    emit(f"macs_stage2_runs_{algo}", runs, "runs")
    emit(f"macs_stage2_share_{algo}", stage2 / joint, "ratio")
    emit(f"macs_joint_overhead_{algo}", joint / baseline, "ratio")


def bench_tpgr() -> None:
    """TPGR at its defaults on ML-1M-sized synthetic data (6040 users, 3706 items, a 61-ary tree):
    the greedy evaluation of every test user, and one training step of 64 users x 16 episodes,
    i.e. 1024 episodes collected side by side (the env draws its users at random, so these are
    1024 random users) and the REINFORCE update on them."""
    data = synthetic_rating_data(6040, 3706, 33, seed=0)
    algo = to_config(compose_config(["algo=tpgr", "env=ml1m"])).algo
    test_env = RatingVecEnv(None, data, split="test")
    items = ItemSpace(test_env.item_features())
    agent = make_agent(algo, test_env.single_observation_space, test_env.single_action_space, "cpu", 0, items)
    start = time.perf_counter()
    evaluate(agent, test_env, seed=0, items_per_page=None)
    emit("tpgr_eval_ml1m_all_users_s", time.perf_counter() - start, "s")
    train_env = RatingVecEnv(64 * 16, data)
    obs = torch.as_tensor(train_env.reset(seed=0)[0])
    start = time.perf_counter()
    for _ in range(10):
        actions = agent.explore(obs, train_env.allowed_items())
        next_obs, rewards, terminated, truncated, _ = train_env.step(actions.numpy())
        agent.observe(
            Transitions(
                obs,
                actions,
                torch.as_tensor(rewards),
                torch.as_tensor(next_obs),
                torch.as_tensor(terminated),
                torch.as_tensor(truncated),
            )
        )
        obs = torch.as_tensor(next_obs)
    collected = time.perf_counter() - start
    start = time.perf_counter()
    updates = agent.learn()
    updated = time.perf_counter() - start
    assert updates, "1024 finished episodes make a batch"
    emit("tpgr_collect_64x16_s", collected, "s")
    emit("tpgr_update_64x16_s", updated, "s")
    emit("tpgr_train_step_64x16_s", collected + updated, "s")


def bench_pgpr(data_root: Path) -> None:
    """PGPR at its defaults on ML-100k (``data_root``/ml-100k, its graph and TransE trained into
    a fresh cache first): upstream's beam search for 64 test users at once and for every test
    user (one step of an evaluation), and one sampled training walk for one user, as the
    trainer steps it (``env.num_envs=1``)."""
    data_dir = data_root / "ml-100k"
    if not data_dir.is_dir():
        print(f"note: pgpr skipped, no data at {data_dir}", file=sys.stderr)
        return
    from macs_exp.trainer.run import knowledge_graph, rating_data

    with tempfile.TemporaryDirectory() as cache_dir:
        config = to_config(
            compose_config(
                ["algo=pgpr", "env=ml100k", f"env.data_dir={data_dir}", f"data.cache_dir={cache_dir}"]
            )
        )
        data = rating_data(config)
        assert data is not None
        start = time.perf_counter()
        graph = knowledge_graph(config, data)
        emit("pgpr_graph_and_transe_ml100k_s", time.perf_counter() - start, "s")
    test_env = RatingVecEnv(None, data, split="test")
    items = ItemSpace(test_env.item_features(), graph)
    agent = make_agent(
        config.algo, test_env.single_observation_space, test_env.single_action_space, "cpu", 0, items
    )
    obs = torch.as_tensor(test_env.reset(seed=0)[0])
    allowed, users = test_env.allowed_items(), test_env.slot_users()
    start = time.perf_counter()
    agent.act(obs[:64], True, allowed[:64], users[:64])
    emit("pgpr_beam_64_users_s", time.perf_counter() - start, "s")
    start = time.perf_counter()
    agent.act(obs, True, allowed, users)
    emit("pgpr_beam_all_test_users_s", time.perf_counter() - start, "s")
    walks = min(100, len(obs))
    start = time.perf_counter()
    for row in range(walks):
        agent.explore(obs[row : row + 1], allowed[row : row + 1], users[row : row + 1])
    emit("pgpr_walk_ms_per_step", 1000 * (time.perf_counter() - start) / walks, "ms")


SECTIONS = ("env", "trainer", "seeds", "macs", "rating", "preprocess", "tpgr", "pgpr")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3000, help="user-steps per trainer measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for our trainer and tuned SB3")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument(
        "--macs-steps", type=int, default=20000, help="user-steps of each run timing joint over baseline"
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data",
        help="the rating datasets, for the preprocessing figures",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        metavar="SECTION",
        help=f"figures to measure, among {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--sb3-worker", choices=ALGOS, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides for both, e.g. algo.batch_size=64")
    args = parser.parse_args()
    if args.sb3_worker:
        print(sb3_rate(args.sb3_worker, args.steps, args.overrides))
        return
    # The process settings every training process starts with (threads, subnormals flushed).
    configure_torch(args.threads)

    if "env" in args.only:
        single = single_env_rate(5000)
        emit("vtb_single_steps_per_s", single, "steps/s")
        emit("vtb_single_ms_per_step", 1000.0 / single, "ms")
        for n, vec_steps in ((1, 5000), (256, 300)):
            rate = vec_env_rate(n, vec_steps)
            emit(f"vtb_batched_n{n}_steps_per_s", rate, "steps/s")
            emit(f"vtb_batched_speedup_n{n}", rate / single, "ratio")
    if "rating" in args.only:
        bench_rating_env()
    if "preprocess" in args.only:
        bench_preprocessing(args.data_root)
    if "tpgr" in args.only:
        bench_tpgr()
    if "pgpr" in args.only:
        bench_pgpr(args.data_root)
    if "seeds" in args.only:
        bench_seed_parallel(args.steps, args.threads, args.overrides, args.macs_steps)
    if "macs" in args.only:
        for algo in ALGOS:
            bench_macs_overhead(algo, args.macs_steps, args.threads, args.overrides)
    if "trainer" not in args.only:
        return
    for algo in ALGOS:
        ours = ours_rate(algo, args.steps, args.threads, args.overrides)
        emit(f"trainer_{algo}_steps_per_s", ours, "steps/s")
        if args.skip_sb3:
            continue
        theirs = sb3_out_of_the_box(algo, args.steps, args.overrides)
        emit(f"sb3_{algo}_steps_per_s", theirs, "steps/s")
        emit(f"trainer_speedup_vs_sb3_{algo}", ours / theirs, "ratio")
        # configure_torch already set this process's threads and subnormal flushing.
        tuned = sb3_rate(algo, args.steps, args.overrides)
        emit(f"sb3_tuned_{algo}_steps_per_s", tuned, "steps/s")
        emit(f"trainer_speedup_vs_sb3_tuned_{algo}", ours / tuned, "ratio")


if __name__ == "__main__":
    main()
