"""Structured-config schemas.

Every value lives in the YAML files under ``conf/``; these dataclasses only fix the set of
keys and their types, so a misspelt key or a wrong type fails at composition time, before
any work starts. Fields are ``MISSING`` on purpose: a key absent from the YAML is an error,
never a silent default hidden in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class AlgoConfig:
    """Hyperparameters shared by the off-policy actor-critic agents (SB3 names)."""

    name: str = MISSING
    # SB3's single ``learning_rate`` drives the critic (and SAC's entropy coefficient);
    # the paper trains the actor with its own, smaller rate.
    learning_rate: float = MISSING
    actor_learning_rate: float = MISSING
    buffer_size: int = MISSING
    learning_starts: int = MISSING
    batch_size: int = MISSING
    tau: float = MISSING
    gamma: float = MISSING
    # Counted in vector steps, as SB3 does; ``gradient_steps=-1`` means one gradient step
    # per user-step collected since the last update.
    train_freq: int = MISSING
    gradient_steps: int = MISSING
    net_arch: list[int] = field(default_factory=lambda: MISSING)  # type: ignore[arg-type]


@dataclass
class DDPGConfig(AlgoConfig):
    # Std of the Gaussian exploration noise, in units of half the action range (0 disables it).
    action_noise: float = MISSING


@dataclass
class TD3Config(DDPGConfig):
    n_critics: int = MISSING
    policy_delay: int = MISSING
    target_policy_noise: float = MISSING
    target_noise_clip: float = MISSING


@dataclass
class SACConfig(AlgoConfig):
    n_critics: int = MISSING
    # "auto", "auto_<init>" (learned, starting at <init>) or a fixed number, as in SB3.
    ent_coef: str = MISSING
    # "auto" (= -dim(action)) or a number.
    target_entropy: str = MISSING
    target_update_interval: int = MISSING
    log_std_min: float = MISSING
    log_std_max: float = MISSING


@dataclass
class ModeConfig:
    name: str = MISSING


@dataclass
class EnvConfig:
    name: str = MISSING
    # A gymnasium id; ids with a vector entry point are stepped natively in batches.
    id: str = MISSING
    # Users (environments) stepped together in one batch.
    num_envs: int = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    # Budget in user-steps (transitions collected from the real environment).
    total_steps: int = MISSING
    eval_every: int = MISSING
    eval_episodes: int = MISSING
    # The evaluation users are drawn from their own stream, the same for every
    # evaluation and every training seed, so that curves are comparable.
    eval_seed: int = MISSING
    # Training metrics are averaged over windows of this many user-steps.
    log_every: int = MISSING
    # auto: a progress bar on a terminal, plain log lines otherwise.
    progress: str = MISSING
    # Threads for torch on the CPU; small networks are fastest with few.
    torch_threads: int = MISSING


@dataclass
class TrackingConfig:
    enabled: bool = MISSING
    experiment: str = MISSING
    # Local tracking root, relative to the launch directory: the SQLite database
    # (<dir>/mlflow.db) and the artifacts (<dir>/mlartifacts) live here.
    dir: str = MISSING
    # Overrides the tracking URI (e.g. a remote server); null means sqlite:///<dir>/mlflow.db.
    uri: str | None = MISSING
    run_name: str | None = MISSING
    # Buffered metrics are sent in one batch at least this often.
    flush_every_s: float = MISSING


@dataclass
class Config:
    algo: Any = MISSING
    mode: Any = MISSING
    env: Any = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    seed: int = MISSING
    device: str = MISSING


ALGO_SCHEMAS: dict[str, type[AlgoConfig]] = {"ddpg": DDPGConfig, "td3": TD3Config, "sac": SACConfig}
MODE_SCHEMAS: dict[str, type[ModeConfig]] = {"baseline": ModeConfig}
