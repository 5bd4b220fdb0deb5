"""The whole run's schema, composed from the schemas each package owns, and its one conversion.

Every value lives in the YAML files under ``conf/``; the dataclasses fix the set of keys and
their types, so a misspelt key or a wrong type fails at composition time, before any work
starts, and their ``rules`` say which values a run can use. Fields are ``MISSING`` on purpose:
a key absent from the YAML is an error, never a silent default hidden in code.

Agents' and modes' schemas come from their plug-ins (``macs_exp.plugins``); the fixed groups'
from their packages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from macs_exp import plugins
from macs_exp.ctrl.config import CtrlConfig
from macs_exp.data.config import DataConfig, KGConfig
from macs_exp.envs.config import EnvConfig, RatingEnvConfig
from macs_exp.macs.config import ExpertConfig, MacsConfig
from macs_exp.schema import ConfigError, Rules, Schema, check
from macs_exp.tracking.config import TrackingConfig
from macs_exp.trainer.config import TrainerConfig


@dataclass
class Config(Schema):
    algo: Any = MISSING
    mode: Any = MISSING
    env: Any = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    macs: MacsConfig = MISSING
    expert: ExpertConfig = MISSING
    ctrl: CtrlConfig = MISSING
    data: DataConfig = MISSING
    kg: KGConfig = MISSING
    seed: int = MISSING
    # Seed-parallel training: the seeds this process trains at once (null: ``seed`` and the
    # ones after it, ``trainer.parallel_seeds`` in all).
    seeds: list[int] | None = MISSING
    device: str = MISSING

    def rules(self) -> Rules:
        learns = type(self.algo).learns or not type(self.mode).needs_learner
        seeds = self.seeds
        return {
            "seeds": (
                seeds is None
                or (
                    len(seeds) >= 1
                    and len(set(seeds)) == len(seeds)
                    and self.trainer.parallel_seeds in (1, len(seeds))
                ),
                "null or a list of distinct seeds, as many as trainer.parallel_seeds when that is above 1",
            ),
            "algo": (
                learns,
                f"a learning agent for mode={self.mode.name}: a reference policy learns nothing, so run "
                f"it with mode=baseline",
            ),
        }


@dataclass
class EvalConfig(Config):
    """``python -m macs_exp.evaluate``'s config (conf/evaluate.yaml): the main app's, plus the
    saved agent to evaluate."""

    checkpoint: str = MISSING


def register_schemas() -> None:
    """Exposes the schemas to the YAML defaults lists as ``/schema/<group>/<name>``.

    They live outside the real groups so that ``algo=...`` offers only runnable options.
    """
    plugins.discover()
    cs = ConfigStore.instance()
    cs.store(group="schema", name="config", node=Config)
    cs.store(group="schema", name="evaluate", node=EvalConfig)
    for group, table in (("algo", plugins.AGENTS), ("mode", plugins.MODES)):
        for name, plugin in table.items():
            cs.store(group=f"schema/{group}", name=name, node=plugin.schema)
    cs.store(group="schema/env", name="env", node=EnvConfig)
    cs.store(group="schema/env", name="rating", node=RatingEnvConfig)
    cs.store(group="schema/macs", name="macs", node=MacsConfig)
    cs.store(group="schema/expert", name="expert", node=ExpertConfig)
    cs.store(group="schema/ctrl", name="ctrl", node=CtrlConfig)
    cs.store(group="schema/data", name="data", node=DataConfig)
    cs.store(group="schema/kg", name="kg", node=KGConfig)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)
    cs.store(group="schema/tracking", name="tracking", node=TrackingConfig)


def to_config(cfg: DictConfig) -> Config:
    """The composed config as typed objects, every rule checked (``ConfigError`` names the key)."""
    config = OmegaConf.to_object(cfg)
    if not isinstance(config, Config):
        raise TypeError(
            f"expected a config composed on the schema {Config.__name__}, got {type(config).__name__}"
        )
    check(config, "")
    _check_action_mappings(config)
    return config


def _check_action_mappings(config: Config) -> None:
    """``action_mapping=knn`` picks among the env's items: only the rating envs have a catalogue
    (the simulators keep ``argmax``). Checked for every agent a run may build."""
    if isinstance(config.env, RatingEnvConfig):
        return
    for key, algo in (
        ("algo", config.algo),
        ("macs.algo", config.macs.algo),
        ("expert.algo", config.expert.algo),
    ):
        if getattr(algo, "action_mapping", "argmax") == "knn":
            raise ConfigError(
                f"{key}.action_mapping=knn needs an item catalogue, which env={config.env.name} does not "
                f"have (only the rating envs do): use {key}.action_mapping=argmax"
            )
