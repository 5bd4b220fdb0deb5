"""The schemas of the ``env`` group: any gymnasium env, and the offline rating datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from macs_exp.schema import Rules, Schema

# What a rating env may recommend, and what its state holds (docs/metrics.md, "The environment").
CANDIDATES = ("catalog", "rated")
STATES = ("items", "drr")
# What a training episode earns on an item the user never rated (docs/metrics.md, "Modelled rewards").
TRAIN_REWARDS = ("logged", "model")


@dataclass
class EnvConfig(Schema):
    name: str = MISSING
    # A gymnasium id; ids with a vector entry point are stepped natively in batches.
    id: str = MISSING
    # Users (environments) stepped together in one batch.
    num_envs: int = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Declarations an env cannot make itself (generic gymnasium envs): merged into its
    # metadata. MACS reads reward_range, reward_bins, score and score_range from there.
    metadata: dict[str, Any] = field(default_factory=dict)

    def rules(self) -> Rules:
        return {"num_envs": (self.num_envs >= 1, "at least 1")}


@dataclass
class TableConfig(Schema):
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
    # catalog: any item not yet seen or shown; rated: only the items the user rated in the split
    # the episode serves (after the cut), so that every recommendation has a known rating.
    candidates: str = MISSING
    # items: the features of the last positives; drr: DRR-ave (user, mean of those, their product).
    state: str = MISSING
    # logged: an item the user never rated earns 0; model: in training episodes it earns the
    # prediction of a rating model fitted on the training ratings (evaluation stays logged).
    train_reward: str = MISSING
    # Evaluations score every test user (null), or only the first this many: a quick check of a
    # slow agent on a large dataset, never a table's protocol.
    eval_users: int | None = MISSING

    def rules(self) -> Rules:
        return {
            **super().rules(),
            "eval_users": (
                self.eval_users is None or self.eval_users >= 1,
                "null (every test user) or at least 1",
            ),
            "candidates": (self.candidates in CANDIDATES, f"one of {', '.join(CANDIDATES)}"),
            "state": (self.state in STATES, f"one of {', '.join(STATES)}"),
            "train_reward": (self.train_reward in TRAIN_REWARDS, f"one of {', '.join(TRAIN_REWARDS)}"),
        }
