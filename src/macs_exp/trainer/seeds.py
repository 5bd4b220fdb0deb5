"""The seeds a run trains, and each seed's own config.

A seed-parallel run (``seeds=[...]`` or ``trainer.parallel_seeds=K``) trains several seeds in one
process; each of them is recorded exactly as a single run of that seed would be, so its config is
the composed one with ``seed`` set to it and the seed-parallel keys back at their single-run
values.
"""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig, open_dict

from macs_exp.schema import ConfigError

# Each seed of a group works in this subfolder of the group's folder.
SEED_FOLDER = "seed_{seed}"


def seed_list(cfg: DictConfig) -> list[int]:
    """``seeds``, else ``seed`` and the ``trainer.parallel_seeds - 1`` seeds after it."""
    if cfg.seeds is not None:
        return [int(s) for s in cfg.seeds]
    return [int(cfg.seed) + k for k in range(int(cfg.trainer.parallel_seeds))]


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """``cfg`` as the config of a single run of ``seed``. A group's folder given to
    ``trainer.resume`` becomes the seed's own subfolder in it."""
    one = copy.deepcopy(cfg)
    with open_dict(one):
        one.seed = seed
        one.seeds = None
        one.trainer.parallel_seeds = 1
        resume = one.trainer.resume
        if resume not in (None, "auto"):
            folder = Path(resume) / seed_folder(seed)
            if not folder.is_dir():
                raise ConfigError(
                    f"trainer.resume={resume}: a seed-parallel run resumes from its group's folder, "
                    f"which holds {seed_folder(seed)}/ for seed {seed}; {folder} is not there. Pass the "
                    "folder the group ran in (its seeds' MLflow run ids name one seed each)"
                )
            one.trainer.resume = str(folder)
    return one


def seed_folder(seed: int) -> str:
    return SEED_FOLDER.format(seed=seed)
