"""Correctness anchor: train one agent on gymnasium's Pendulum-v1 with rl-baselines3-zoo settings.

    python scripts/check_pendulum.py --algo td3 --steps 20000 --seed 0

The zoo (hyperparams/{ddpg,td3,sac}.yml, Pendulum-v1) reports about -152 +/- 94 after 20k
steps; an implementation that cannot reach -250 is broken. The last line printed is
``pendulum <algo> mean_return=<x>``, the mean over 10 deterministic evaluation episodes.
"""

from __future__ import annotations

import argparse
import logging
import tempfile

from macs_exp.app import compose_config
from macs_exp.trainer.process import configure_torch
from macs_exp.trainer.run import run_experiment

# rl-baselines3-zoo's Pendulum-v1 entries; everything not listed is SB3's default.
ZOO = {
    "ddpg": [
        "algo.gamma=0.98",
        "algo.buffer_size=200000",
        "algo.learning_starts=10000",
        "algo.action_noise=0.1",
        "algo.learning_rate=1e-3",
        "algo.actor_learning_rate=1e-3",
        "algo.net_arch=[400,300]",
    ],
    "sac": [
        "algo.learning_rate=1e-3",
        "algo.actor_learning_rate=1e-3",
        "algo.gamma=0.99",
        "algo.net_arch=[256,256]",
    ],
}
ZOO["td3"] = ZOO["ddpg"]
SB3_DEFAULTS = ["algo.tau=0.005", "algo.batch_size=256", "algo.train_freq=1", "algo.gradient_steps=1"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algo", choices=sorted(ZOO), required=True)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    overrides = [
        f"algo={args.algo}",
        "env=pendulum",
        f"seed={args.seed}",
        f"trainer.total_steps={args.steps}",
        f"trainer.eval_every={args.steps}",
        "trainer.eval_episodes=10",
        "trainer.log_every=2000",
        "trainer.progress=log",
        "tracking.enabled=false",
        *SB3_DEFAULTS,
        *ZOO[args.algo],
    ]
    cfg = compose_config(overrides)
    configure_torch(cfg.trainer.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_experiment(cfg, tmp)
    print(f"pendulum {args.algo} mean_return={result.final_eval['eval/episode_reward']:.1f}")


if __name__ == "__main__":
    main()
