"""One experiment from a composed config: build the env, agent and tracker, train, report.

This is the only module that wires the pieces together; envs, agents and tracking know
nothing of each other.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from macs_exp.agents import make_agent
from macs_exp.agents.base import check_hyperparameters
from macs_exp.config import AlgoConfig, EnvConfig, TrackingConfig, TrainerConfig
from macs_exp.envs.factory import make_batched_env
from macs_exp.tracking import flatten, plot_learning_curve, tracked_run
from macs_exp.trainer.progress import Progress
from macs_exp.trainer.trainer import Trainer, TrainResult

log = logging.getLogger("macs_exp")


def run_experiment(cfg: DictConfig, output_dir: str | Path) -> TrainResult:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    algo: AlgoConfig = OmegaConf.to_object(cfg.algo)  # type: ignore[assignment]
    env_cfg: EnvConfig = OmegaConf.to_object(cfg.env)  # type: ignore[assignment]
    trainer_cfg: TrainerConfig = OmegaConf.to_object(cfg.trainer)  # type: ignore[assignment]
    tracking_cfg: TrackingConfig = OmegaConf.to_object(cfg.tracking)  # type: ignore[assignment]
    # Values no run could use fail here, before an MLflow run is opened.
    _check_trainer_config(trainer_cfg)
    check_hyperparameters(algo)
    device = _device(cfg.device)
    torch.set_num_threads(trainer_cfg.torch_threads)
    # Adam's second-moment estimates of rarely-used weights decay into subnormal floats, which
    # the CPU handles tens of times slower: left alone, updates slow down as training goes on.
    torch.set_flush_denormal(True)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    (output_dir / "config.yaml").write_text(config_yaml)
    tags = {
        "algo": algo.name,
        "mode": str(cfg.mode.name),
        "env": env_cfg.name,
        "seed": str(cfg.seed),
        **_git_tags(),
    }
    with tracked_run(tracking_cfg, flatten(resolved), tags, config_yaml) as tracker:
        env = make_batched_env(env_cfg, env_cfg.num_envs, str(device))
        eval_env = make_batched_env(env_cfg, trainer_cfg.eval_episodes, str(device))
        agent = make_agent(algo, env.single_observation_space, env.single_action_space, device, cfg.seed)
        title = f"{algo.name} / {cfg.mode.name} / {env_cfg.name} / seed {cfg.seed}"
        progress = Progress(trainer_cfg.progress, trainer_cfg.total_steps, title)
        trainer = Trainer(agent, env, eval_env, trainer_cfg, algo, tracker, cfg.seed, output_dir, progress)
        try:
            result = trainer.train()
        finally:
            progress.close()
            env.close()
            eval_env.close()
        agent.save(output_dir / "agent.pt")
        curve = plot_learning_curve(
            {k: result.history[k] for k in ("eval/ctr", "eval/episode_reward") if k in result.history},
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
