"""The seeds a run trains, and each seed's own config.

A seed-parallel run (``seeds=[...]`` or ``trainer.parallel_seeds=K``) trains several seeds in one
process; each of them is recorded exactly as a single run of that seed would be, so its config is
the composed one with ``seed`` set to it and the seed-parallel keys back at their single-run
values.
"""

from __future__ import annotations

import copy

from omegaconf import DictConfig, open_dict


def seed_list(cfg: DictConfig) -> list[int]:
    """``seeds``, else ``seed`` and the ``trainer.parallel_seeds - 1`` seeds after it."""
    if cfg.seeds is not None:
        return [int(s) for s in cfg.seeds]
    return [int(cfg.seed) + k for k in range(int(cfg.trainer.parallel_seeds))]


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """``cfg`` as the config of a single run of ``seed``."""
    one = copy.deepcopy(cfg)
    with open_dict(one):
        one.seed = seed
        one.seeds = None
        one.trainer.parallel_seeds = 1
    return one
