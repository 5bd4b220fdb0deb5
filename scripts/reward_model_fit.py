"""The fit of the reward model of ``env.train_reward=model`` on one rating dataset.

    python scripts/reward_model_fit.py env=ml100k env.data_dir=../shared/data/ml-100k [OVERRIDE ...]

Loads the dataset as a run with these Hydra overrides would (fitting the model, or reading it
from ``data.cache_dir``) and prints one ``data.stats.<key>=<value>`` line per stat of the fit,
the MLflow params such a run logs: ``model_rmse`` on the held-out 10% of the training ratings,
``model_baseline_rmse`` of predicting their mean, and the rating counts. Exit status 2 when the
env is not a rating dataset.
"""

from __future__ import annotations

import sys

from macs_exp.app import compose_config
from macs_exp.config import to_config
from macs_exp.data import load_rating_data
from macs_exp.envs.config import RatingEnvConfig
from macs_exp.trainer.process import configure_torch


def main(argv: list[str]) -> int:
    configure_torch(1)
    env = to_config(compose_config(argv)).env
    if not isinstance(env, RatingEnvConfig):
        print(f"error: env={env.name} is not a rating dataset (env=ml100k, ml1m, ...)", file=sys.stderr)
        return 2
    config = to_config(compose_config([*argv, "env.train_reward=model"]))
    assert isinstance(config.env, RatingEnvConfig)
    stats = load_rating_data(config.env, config.data).stats
    for key in sorted(k for k in stats if k.startswith("model_")):
        print(f"data.stats.{key}={stats[key]:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
