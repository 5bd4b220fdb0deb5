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
class ReferenceConfig:
    """A reference policy (random, popular): nothing to tune, nothing learned."""

    name: str = MISSING


@dataclass
class ModeConfig:
    name: str = MISSING


@dataclass
class RandomMaskConfig(ModeConfig):
    """The random-mask ablation of Sec. IV-D."""

    # Share of the state's elements zeroed in each extra transition.
    mask_prob: float = MISSING


@dataclass
class MacsConfig:
    """The counterfactual synthesis policy and its training (Algorithms 1 and 2)."""

    # The synthesis policy's own agent: any option of the algo group (algo@macs.algo=sac).
    algo: Any = MISSING
    # User-steps of one stage-2 run (Algorithm 2's loop over n).
    stage2_steps: int = MISSING
    # Steps per reward window: the KL is computed every kl_window steps (Algorithm 2's n%10).
    kl_window: int = MISSING
    # Additive smoothing of the reward histograms, in counts added to every bin.
    kl_smoothing: float = MISSING
    # eq11: KL(R' || R) as in Eqs. 10-11; algorithm2: KL(R || R') as Algorithm 2 writes it.
    kl_direction: str = MISSING
    # The epsilon of Eqs. 11-12, keeping 1 / (KL + epsilon) finite.
    epsilon: float = MISSING
    # Probability that a real transition gets a counterfactual twin (stage 3).
    augment_prob: float = MISSING
    # Joint mode: epsilon_1 and Delta_1 as fractions of the env's maximum score.
    threshold_frac: float = MISSING
    temperature_frac: float = MISSING
    # Joint mode: the score compared with epsilon_1 is averaged over this many episodes.
    threshold_window: int = MISSING


@dataclass
class ExpertConfig:
    """The pretrained expert policy of expert mode (Sec. III-C1)."""

    algo: Any = MISSING
    total_steps: int = MISSING
    # Fixed rather than tied to the run's seed, so the runs of a sweep share one expert.
    seed: int = MISSING
    # A saved agent to use instead of training or the cache (null: cache, then train).
    checkpoint: str | None = MISSING
    cache_dir: str = MISSING


@dataclass
class EnvConfig:
    name: str = MISSING
    # A gymnasium id; ids with a vector entry point are stepped natively in batches.
    id: str = MISSING
    # Users (environments) stepped together in one batch.
    num_envs: int = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Declarations an env cannot make itself (generic gymnasium envs): merged into its
    # metadata. MACS reads reward_range, reward_bins, score and score_range from there.
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class TableConfig:
    """A generic ratings table (``env.format=table``)."""

    # Path relative to ``env.data_dir`` (or absolute); ``.gz`` is read transparently.
    file: str = MISSING
    sep: str = MISSING
    # The user, item, rating and (optional, may be null) timestamp columns: names when the
    # table has a header, 0-based positions otherwise.
    user_col: Any = MISSING
    item_col: Any = MISSING
    rating_col: Any = MISSING
    timestamp_col: Any = MISSING
    header: bool = MISSING
    encoding: str = MISSING


@dataclass
class RatingEnvConfig(EnvConfig):
    """An offline rating dataset served as a batched environment (MACS/Rating-v0)."""

    data_dir: str = MISSING
    # ml100k | ml1m | bookcrossing | douban_book | table
    format: str = MISSING
    table: TableConfig = MISSING
    positive_threshold: float = MISSING
    # BookCrossing's rating 0 marks an implicit interaction; dropped unless this is true.
    keep_implicit: bool = MISSING
    min_user_ratings: int = MISSING
    min_item_ratings: int = MISSING
    test_fraction: float = MISSING
    embedding_dim: int = MISSING
    episode_length: int = MISSING
    state_size: int = MISSING
    # binary | normalized_rating
    reward: str = MISSING


@dataclass
class DataConfig:
    # error | skip: what a malformed row in a data file does.
    on_bad_rows: str = MISSING
    # Preprocessed datasets are cached here, keyed by file hashes and the config that matters.
    cache_dir: str = MISSING
    # Orders the ratings of users without timestamps before the split, and seeds the
    # factorisation. Fixed rather than the run's seed, so all seeds of a table share one split.
    split_seed: int = MISSING


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
    macs: MacsConfig = MISSING
    expert: ExpertConfig = MISSING
    data: DataConfig = MISSING
    seed: int = MISSING
    device: str = MISSING


ALGO_SCHEMAS: dict[str, type[AlgoConfig] | type[ReferenceConfig]] = {
    "ddpg": DDPGConfig,
    "td3": TD3Config,
    "sac": SACConfig,
    "random": ReferenceConfig,
    "popular": ReferenceConfig,
}
MODE_SCHEMAS: dict[str, type[ModeConfig]] = {
    "baseline": ModeConfig,
    "expert": ModeConfig,
    "joint": ModeConfig,
    "random_mask": RandomMaskConfig,
}
