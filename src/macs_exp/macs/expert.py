"""``mode=expert``: MACS learned from an expert (Sec. III-C1), and the expert cache.

The expert is trained (or loaded), pi_c is trained against it once with Eq. 11 before the
recommender's first step, then frozen; every real transition gets a counterfactual twin.

An expert is fully determined by its algorithm, budget, seed, the env and the evaluation that
picks its best checkpoint, so those (and nothing else) key the cache: every run of a sweep
that needs the same expert reuses one. A file lock makes concurrent jobs wait for the one
that trains it instead of training it again.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from macs_exp import plugins
from macs_exp.agents import Agent, Policy
from macs_exp.cache import atomic_write, content_key, file_lock
from macs_exp.macs.augment import MacsAugmenter, build_synthesizer
from macs_exp.macs.synthesis import Synthesizer
from macs_exp.schema import ConfigError
from macs_exp.tracking.tags import ROLE_EXPERT
from macs_exp.trainer.augmenter import AugmenterContext, BaselineConfig, ModeConfig, TrainRun
from macs_exp.trainer.budget import Budget

log = logging.getLogger("macs_exp")

# Bump when a change to the code makes old cached experts invalid.
CACHE_FORMAT = 1

# A cache entry <cache_dir>/<key>/: the expert, what made it (the MLflow run_id, its best
# evaluation) and the output folder of the baseline run that trained it.
EXPERT_FILE = "expert.pt"
META_FILE = "meta.json"
RUN_DIR = "run"


@dataclass
class ExpertCheckpoint:
    path: Path
    # The MLflow run that trained it (None for a user-supplied checkpoint).
    run_id: str | None
    cached: bool
    # The env steps its training took (None for a user-supplied checkpoint).
    env_steps: int | None = None


def expert_key(cfg: DictConfig) -> str:
    determining = {
        "format": CACHE_FORMAT,
        "algo": _algo_key(cfg.expert.algo),
        "total_steps": cfg.expert.total_steps,
        "seed": cfg.expert.seed,
        "env": OmegaConf.to_container(cfg.env, resolve=True),
        # How a rating dataset is split and factorised changes the env the expert learns in.
        "split_seed": cfg.data.split_seed,
        "eval": {
            "eval_every": _eval_every(cfg),
            **{k: cfg.trainer[k] for k in ("eval_episodes", "eval_seed")},
        },
    }
    return content_key(determining, 16)


def _eval_every(cfg: DictConfig) -> int:
    """User-steps between the expert's evaluations: ``expert.eval_every``, else the run's."""
    return int(cfg.trainer.eval_every if cfg.expert.eval_every is None else cfg.expert.eval_every)


def _algo_key(algo: DictConfig) -> Any:
    """The expert's algo settings; the action-mapping keys only when they change anything
    (``knn``), so that experts cached before the keys existed are found again."""
    params = OmegaConf.to_container(algo, resolve=True)
    if isinstance(params, dict) and params.get("action_mapping") == "argmax":
        return {k: v for k, v in params.items() if k not in ("action_mapping", "knn_k")}
    return params


def expert_config(cfg: DictConfig) -> DictConfig:
    """The config of the baseline run that trains the expert."""
    expert = copy.deepcopy(cfg)
    with open_dict(expert):
        expert.algo = cfg.expert.algo
        expert.mode = OmegaConf.structured(BaselineConfig(name="baseline"))
        expert.seed = cfg.expert.seed
        expert.trainer.total_steps = cfg.expert.total_steps
        expert.trainer.budget = "user_steps"
        # Picked by its best evaluation, the untrained policy's included, whatever the run's own
        # evaluations are.
        expert.trainer.eval_every = _eval_every(cfg)
        expert.trainer.eval_at_start = True
        # An expert killed in training starts again: runs with other settings share its cache
        # entry, so its config is not any one run's to resume with.
        expert.trainer.resume = None
        # Like a run's name (``run_name``), without the mode every expert shares.
        expert.tracking.run_name = f"expert-{cfg.expert.algo.name}-{cfg.env.name}-s{cfg.expert.seed}"
    return expert


def obtain_expert(cfg: DictConfig, parent_run_id: str | None, train_run: TrainRun) -> ExpertCheckpoint:
    """The user's ``expert.checkpoint``, else the cached expert, else one freshly trained by
    ``train_run`` (a baseline run of the expert's algo, nested under ``parent_run_id``)."""
    if cfg.expert.checkpoint:
        path = Path(cfg.expert.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"expert.checkpoint={cfg.expert.checkpoint!r} does not exist; give the path of a saved "
                f"agent (a run's checkpoints/best_agent.pt), or expert.checkpoint=null to train one"
            )
        return ExpertCheckpoint(path, None, cached=False)
    key = expert_key(cfg)
    folder = Path(cfg.expert.cache_dir) / key
    checkpoint, meta = folder / EXPERT_FILE, folder / META_FILE
    with file_lock(Path(cfg.expert.cache_dir) / f"{key}.lock"):
        if checkpoint.is_file() and meta.is_file():
            entry = json.loads(meta.read_text())
            log.info("expert cache hit: %s (trained by MLflow run %s)", checkpoint, entry["run_id"])
            # Entries from before env steps were counted: a baseline run takes one per user-step.
            env_steps = entry.get("env_steps", cfg.expert.total_steps)
            return ExpertCheckpoint(checkpoint, entry["run_id"], cached=True, env_steps=env_steps)
        log.info(
            "expert cache miss: training %s for %d steps into %s",
            cfg.expert.algo.name,
            cfg.expert.total_steps,
            folder,
        )
        run_dir = folder / RUN_DIR
        tags = {"role": ROLE_EXPERT, **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})}
        result = train_run(expert_config(cfg), run_dir, tags=tags)
        best = run_dir / "best_agent.pt"
        source = best if best.is_file() else run_dir / "agent.pt"
        atomic_write(checkpoint, lambda out: out.write(source.read_bytes()))
        info = {
            "run_id": result.run_id,
            "best_eval": result.best_eval,
            "key": key,
            "env_steps": result.env_steps,
        }
        # Written last and whole: its presence is what marks the entry complete.
        atomic_write(meta, lambda out: out.write(json.dumps(info, indent=2).encode()))
        return ExpertCheckpoint(checkpoint, result.run_id, cached=False, env_steps=result.env_steps)


@dataclass
class ExpertModeConfig(ModeConfig):
    """Expert mode's settings are in the ``expert`` group (the expert) and the ``macs`` group."""


class ExpertAugmenter(MacsAugmenter):
    def __init__(
        self, synthesizer: Synthesizer, expert: Policy, budget: Budget, expert_env_steps: int | None
    ) -> None:
        super().__init__(synthesizer)
        self.expert = expert
        self.budget = budget
        # Shared by every run that uses the cached expert, so reported apart, not charged.
        self.expert_env_steps = expert_env_steps

    def start(self, agent: Agent) -> dict[str, float]:
        cost = self.synthesizer.stage2_cost()
        if cost > self.budget.env_steps_left():
            raise ConfigError(
                f"trainer.total_steps={self.budget.total} env steps cannot pay for expert mode's stage 2 "
                f"({cost} env steps) and leave any for training; raise it, or use trainer.budget=user_steps"
            )
        metrics = {**self._stage2(self.expert, joint=False), "macs/stage2_runs": 1.0}
        if self.expert_env_steps is not None:
            metrics["perf/expert_env_steps"] = float(self.expert_env_steps)
        return metrics


@plugins.mode("expert", ExpertModeConfig, suffix="-E", order=10)
def expert(context: AugmenterContext) -> ExpertAugmenter:
    synthesizer = build_synthesizer(context, context.cfg.macs)
    checkpoint = obtain_expert(context.raw, context.tracker.run_id, context.train_run)
    context.tracker.set_tags(
        {
            "expert_checkpoint": str(checkpoint.path.resolve()),
            "expert_run_id": checkpoint.run_id or "",
            "expert_cached": str(checkpoint.cached).lower(),
        }
    )
    expert_cfg = context.cfg.expert
    agent = context.make_agent(expert_cfg.algo, expert_cfg.seed)
    agent.load(checkpoint.path)
    return ExpertAugmenter(synthesizer, agent.frozen_policy(), context.budget, checkpoint.env_steps)
