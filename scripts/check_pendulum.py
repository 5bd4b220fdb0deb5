"""Correctness anchor: train one agent on gymnasium's Pendulum-v1 with rl-baselines3-zoo settings.

    python scripts/check_pendulum.py --algo td3 --steps 20000 --seed 0
    python scripts/check_pendulum.py --algo td3 --steps 20000 --seeds 0-4

The zoo (hyperparams/{ddpg,td3,sac}.yml, Pendulum-v1) reports about -152 +/- 94 after 20k
steps; an implementation that cannot reach -250 is broken. The last line printed is
``pendulum <algo> mean_return=<x>``, the mean over 10 deterministic evaluation episodes.
With ``--seeds`` (a range ``0-4`` or a list ``0,3,7``) the seeds train at once in one process
(seed-parallel training); each prints ``pendulum <algo> seed=<s> mean_return=<x>``, and the
last line is their mean.
"""

from __future__ import annotations

import argparse
import logging
import tempfile

from macs_exp.app import compose_config
from macs_exp.trainer.parallel import run_seeds
from macs_exp.trainer.process import configure_torch

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
    parser.add_argument("--seeds", type=seed_range, help="seeds trained at once, e.g. 0-4 or 0,3,7")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    overrides = [
        f"algo={args.algo}",
        "env=pendulum",
        f"seed={args.seed}",
        *([f"seeds=[{','.join(map(str, args.seeds))}]"] if args.seeds else []),
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
        results = run_seeds(cfg, tmp)
    returns = [r.final_eval["eval/episode_reward"] for r in results]
    if args.seeds:
        for seed, value in zip(args.seeds, returns, strict=True):
            print(f"pendulum {args.algo} seed={seed} mean_return={value:.1f}")
    print(f"pendulum {args.algo} mean_return={sum(returns) / len(returns):.1f}")


def seed_range(text: str) -> list[int]:
    """``0-4`` (both ends included) or ``0,3,7``."""
    try:
        if "-" in text:
            first, last = (int(part) for part in text.split("-", 1))
            return list(range(first, last + 1))
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a seed range such as 0-4 or a list such as 0,3,7"
        ) from None


if __name__ == "__main__":
    main()
