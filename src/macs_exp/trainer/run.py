"""One experiment from a composed config: build the env, agent and tracker, train, report.

This is the only module that wires the pieces together; envs, agents and tracking know
nothing of each other.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from macs_exp.agents import make_agent
from macs_exp.agents.base import check_hyperparameters
from macs_exp.config import (
    MODE_SCHEMAS,
    AlgoConfig,
    DataConfig,
    EnvConfig,
    ExpertConfig,
    MacsConfig,
    RatingEnvConfig,
    ReferenceConfig,
    TrackingConfig,
    TrainerConfig,
)
from macs_exp.data import load_rating_data
from macs_exp.data.dataset import RatingData
from macs_exp.envs.base import BatchedEnv, env_info
from macs_exp.envs.factory import make_batched_env
from macs_exp.macs import Synthesizer, ThresholdSchedule
from macs_exp.macs.kl import KL_DIRECTIONS
from macs_exp.metrics import ranking_metrics
from macs_exp.tracking import Tracker, flatten, plot_learning_curve, tracked_run
from macs_exp.trainer.expert import obtain_expert
from macs_exp.trainer.progress import Progress
from macs_exp.trainer.trainer import Augmentation, Trainer, TrainResult

log = logging.getLogger("macs_exp")


# pi_c's agent and stage-2 env draw from streams offset from the run's seed, so they never
# replay the recommender's random numbers.
SYNTHESIS_SEED_OFFSET = 10_007


def run_experiment(
    cfg: DictConfig, output_dir: str | Path, tags: Mapping[str, str] | None = None
) -> TrainResult:
    """Trains one agent as ``cfg`` says. ``tags`` are added to (and may override) the run's
    own ``run_tags``: ``mlflow.parentRunId`` nests it under another run, ``role`` marks what
    it is for reports."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    algo: AlgoConfig | ReferenceConfig = OmegaConf.to_object(cfg.algo)  # type: ignore[assignment]
    env_cfg: EnvConfig = OmegaConf.to_object(cfg.env)  # type: ignore[assignment]
    trainer_cfg: TrainerConfig = OmegaConf.to_object(cfg.trainer)  # type: ignore[assignment]
    tracking_cfg: TrackingConfig = OmegaConf.to_object(cfg.tracking)  # type: ignore[assignment]
    # Values no run could use fail here, before an MLflow run is opened.
    _check_trainer_config(trainer_cfg)
    if isinstance(algo, AlgoConfig):
        check_hyperparameters(algo)
    elif cfg.mode.name != "baseline":
        raise ValueError(
            f"algo={algo.name} is a reference policy and learns nothing, so mode={cfg.mode.name} has no "
            f"meaning for it; run it with mode=baseline"
        )
    _check_macs_config(cfg)
    device = _device(cfg.device)
    torch.set_num_threads(trainer_cfg.torch_threads)
    # Adam's second-moment estimates of rarely-used weights decay into subnormal floats, which
    # the CPU handles tens of times slower: left alone, updates slow down as training goes on.
    torch.set_flush_denormal(True)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    (output_dir / "config.yaml").write_text(config_yaml)
    # Data problems (a missing file, a malformed row) surface here, before a run is opened.
    data = _rating_data(cfg, env_cfg)
    params = flatten(resolved)
    if data is not None:
        params.update({f"data.stats.{k}": str(v) for k, v in data.stats.items()})
    with tracked_run(tracking_cfg, params, {**run_tags(cfg), **(tags or {})}, config_yaml) as tracker:
        envs: list[BatchedEnv] = []
        title = f"{algo.name} / {cfg.mode.name} / {env_cfg.name} / seed {cfg.seed}"
        progress = Progress(trainer_cfg.progress, trainer_cfg.total_steps, title)
        try:
            env = make_batched_env(env_cfg, env_cfg.num_envs, str(device), data=data)
            envs.append(env)
            # Offline datasets evaluate every test user on the test split; simulators draw
            # trainer.eval_episodes users from the evaluation stream.
            eval_env = (
                make_batched_env(env_cfg, None, str(device), data=data, split="test")
                if data is not None
                else make_batched_env(env_cfg, trainer_cfg.eval_episodes, str(device))
            )
            envs.append(eval_env)
            ranking = (
                functools.partial(ranking_metrics, users=eval_env.users, data=data)  # type: ignore[attr-defined]
                if data is not None
                else None
            )
            agent = make_agent(algo, env.single_observation_space, env.single_action_space, device, cfg.seed)
            augmentation = _augmentation(cfg, env, envs, tracker, device, data)
            trainer = Trainer(
                agent,
                env,
                eval_env,
                trainer_cfg,
                algo,
                tracker,
                cfg.seed,
                output_dir,
                progress,
                augmentation,
                ranking,
            )
            result = trainer.train()
        finally:
            progress.close()
            for opened in envs:
                opened.close()
        result.run_id = tracker.run_id
        agent.save(output_dir / "agent.pt")
        curve = plot_learning_curve(
            {
                k: result.history[k]
                for k in ("eval/ctr", "test/precision", "test/recall", "eval/episode_reward")
                if k in result.history
            },
            output_dir / "learning_curve.png",
            title,
        )
        for path in (curve, output_dir / "agent.pt", output_dir / "best_agent.pt"):
            if path.exists():
                tracker.log_artifact(path, "checkpoints" if path.suffix == ".pt" else None)
        log.info("finished %s: final %s", title, _fmt(result.final_eval))
        if tracker.run_id:
            log.info("MLflow run %s (make ui to browse)", tracker.run_id)
    return result


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """The tags reports select runs by (see ``macs_exp.reports.runs``); read straight from the
    config so that a job failing before its run opens can still be recorded under them."""
    return {
        "role": "run",
        "algo": str(cfg.algo.name),
        "mode": str(cfg.mode.name),
        "env": str(cfg.env.name),
        "seed": str(cfg.seed),
        # Where the job runs, to find (or kill) the process behind a run of a sweep.
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        **_git_tags(),
    }


def _rating_data(cfg: DictConfig, env_cfg: EnvConfig) -> RatingData | None:
    if not isinstance(env_cfg, RatingEnvConfig):
        return None
    data_cfg: DataConfig = OmegaConf.to_object(cfg.data)  # type: ignore[assignment]
    return load_rating_data(env_cfg, data_cfg, data_cfg.split_seed)


def _augmentation(
    cfg: DictConfig,
    env: BatchedEnv,
    envs: list[BatchedEnv],
    tracker: Tracker,
    device: torch.device,
    data: RatingData | None,
) -> Augmentation | None:
    """What the mode adds to plain training (see ``Augmentation``)."""
    mode = cfg.mode.name
    if mode == "baseline":
        return None
    if mode == "random_mask":
        return Augmentation(mask_prob=cfg.mode.mask_prob, seed=cfg.seed)
    env_cfg: EnvConfig = OmegaConf.to_object(cfg.env)  # type: ignore[assignment]
    macs: MacsConfig = OmegaConf.to_object(cfg.macs)  # type: ignore[assignment]
    info = env_info(env, env_cfg.id)
    obs_space, act_space = env.single_observation_space, env.single_action_space
    seed = cfg.seed + SYNTHESIS_SEED_OFFSET
    stage2_env = make_batched_env(env_cfg, env_cfg.num_envs, str(device), data=data)
    envs.append(stage2_env)
    synthesizer = Synthesizer(
        make_agent(macs.algo, obs_space, act_space, device, seed), macs.algo, stage2_env, info, macs, seed
    )
    if mode == "joint":
        schedule = ThresholdSchedule(
            info.score_range, macs.threshold_frac, macs.temperature_frac, macs.threshold_window
        )
        return Augmentation(info, synthesizer, schedule=schedule, seed=cfg.seed)
    expert_cfg: ExpertConfig = OmegaConf.to_object(cfg.expert)  # type: ignore[assignment]
    checkpoint = obtain_expert(cfg, tracker.run_id)
    tracker.set_tags(
        {
            "expert_checkpoint": str(checkpoint.path.resolve()),
            "expert_run_id": checkpoint.run_id or "",
            "expert_cached": str(checkpoint.cached).lower(),
        }
    )
    expert = make_agent(expert_cfg.algo, obs_space, act_space, device, expert_cfg.seed)
    expert.load(checkpoint.path)
    return Augmentation(info, synthesizer, expert=expert.frozen_policy(), seed=cfg.seed)


def _check_macs_config(cfg: DictConfig) -> None:
    """Rejects MACS and mode values no run could use, naming the key."""
    if cfg.mode.name not in MODE_SCHEMAS:
        raise ValueError(f"mode.name={cfg.mode.name!r} is unknown; choose one of {sorted(MODE_SCHEMAS)}")
    macs: MacsConfig = OmegaConf.to_object(cfg.macs)  # type: ignore[assignment]
    rules = {
        "macs.stage2_steps": (macs.stage2_steps >= 1, "at least 1"),
        "macs.kl_window": (macs.kl_window >= 1, "at least 1"),
        "macs.kl_smoothing": (macs.kl_smoothing > 0, "positive (an empty bin would make the KL infinite)"),
        "macs.kl_direction": (macs.kl_direction in KL_DIRECTIONS, f"one of {KL_DIRECTIONS}"),
        "macs.epsilon": (macs.epsilon > 0, "positive"),
        "macs.augment_prob": (0 <= macs.augment_prob <= 1, "in [0, 1]"),
        "macs.threshold_frac": (0 <= macs.threshold_frac <= 1, "in [0, 1]"),
        "macs.temperature_frac": (macs.temperature_frac > 0, "positive"),
        "macs.threshold_window": (macs.threshold_window >= 1, "at least 1"),
        "expert.total_steps": (cfg.expert.total_steps >= 1, "at least 1"),
    }
    if cfg.mode.name == "random_mask":
        rules["mode.mask_prob"] = (0 <= cfg.mode.mask_prob <= 1, "in [0, 1]")
    for key, (ok, expected) in rules.items():
        if not ok:
            raise ValueError(f"{key}={OmegaConf.select(cfg, key)} is invalid: it must be {expected}")
    for prefix, node in (("macs.algo", macs.algo), ("expert.algo", OmegaConf.to_object(cfg.expert.algo))):
        if not isinstance(node, AlgoConfig):
            raise ValueError(
                f"{prefix}={node.name} is a reference policy; {prefix} must learn (ddpg, sac, td3)"
            )
        try:
            check_hyperparameters(node)  # type: ignore[arg-type]
        except ValueError as err:
            raise ValueError(str(err).replace("algo.", f"{prefix}.", 1)) from None


def _check_trainer_config(cfg: TrainerConfig) -> None:
    for key in ("total_steps", "eval_every", "eval_episodes", "log_every", "torch_threads"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"trainer.{key} must be at least 1, got {getattr(cfg, key)}")


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"device={name!r} is not a torch device (use cpu, cuda, cuda:0, mps): {err}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but torch sees no CUDA GPU; use device=cpu")
    return device


def _git_tags() -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"git_commit": commit, "mlflow.source.git.commit": commit}


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
