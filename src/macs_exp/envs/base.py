"""The batched-environment contract shared by every env the trainer runs.

Envs step N users at once (``num_envs``) and reset finished users in the same step
(gymnasium's ``AutoresetMode.SAME_STEP``): the observation returned for a finished user is
already the first observation of its replacement, and the true last observation of the
finished episode is in ``info["final_obs"]`` (a dense ``(N, obs_dim)`` array, rows valid
where ``info["_final_obs"]`` is True). A dense array instead of gymnasium's object array
keeps the hot path vectorised.

``snapshot()`` / ``restore()`` capture and reinstate the complete state, random generator
included, so that "what if another action had been taken here" can be asked without
disturbing the real trajectory.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

import gymnasium as gym
import numpy as np
import torch


@runtime_checkable
class BatchedEnv(Protocol):
    num_envs: int
    # Box observations; actions of any space (a Box vector, a discrete item id).
    single_observation_space: gym.Space[Any]
    single_action_space: gym.Space[Any]
    metadata: dict[str, Any]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]: ...

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]: ...

    def snapshot(self) -> Any: ...

    def restore(self, state: Any) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ItemCatalogue(Protocol):
    """An env whose actions choose among a finite set of items (the rating env): what an agent
    that chooses items itself (``algo.action_mapping=knn``, ``algo=tpgr``) needs to know of it.
    Besides Box directions, its ``step`` and ``choose_items`` take (N,) integer item ids: id i
    acts as row i of ``item_features``, which shows item i whenever it is allowed."""

    def item_features(self) -> torch.Tensor:
        """(n_items, act_dim) float32: passing row i as an action shows item i if it is allowed."""
        ...

    def allowed_items(self) -> torch.Tensor:
        """(N, n_items) bool: the items each slot may be shown at its next step."""
        ...

    def choose_items(self, actions: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(N,) int64: the item each action would show from the current state if only the
        ``allowed`` (N, n_items) items could be shown, by the rule ``step`` applies."""
        ...


@dataclass(frozen=True)
class Outcomes:
    """What showing items from the current state leads to, for an env whose step either accepts
    the item or rejects it: the next observation and reward of each outcome."""

    accepted: torch.Tensor
    rejected: torch.Tensor
    accepted_reward: float
    rejected_reward: float


@runtime_checkable
class BinaryOutcomes(Protocol):
    """An env whose next state and reward are known functions of the state, the item and one
    accept-or-reject bit (the rating env with ``state=items`` and ``reward=binary``)."""

    def binary_outcomes(self, items: torch.Tensor) -> Outcomes | None:
        """The two outcomes of showing ``items`` (N,) now; None under settings where the next
        state or the reward is not such a function."""
        ...


# Whether an env implements an optional protocol, remembered per env: ``isinstance`` with a
# runtime protocol recomputes the protocol's members at every call (Python 3.11), which the
# per-step helpers below would pay at every step.
_CONFORMS: weakref.WeakKeyDictionary[object, dict[type, bool]] = weakref.WeakKeyDictionary()


def _conforms(env: object, protocol: type) -> bool:
    known = _CONFORMS.setdefault(env, {})
    if protocol not in known:
        known[protocol] = isinstance(env, protocol)
    return known[protocol]


def allowed_items(env: BatchedEnv) -> torch.Tensor | None:
    """The items ``env`` would show from its current state, or None if it has no catalogue."""
    return cast(ItemCatalogue, env).allowed_items() if _conforms(env, ItemCatalogue) else None


@runtime_checkable
class ServesUsers(Protocol):
    """An env whose slots each serve one user of a dataset (the rating env): what an agent that
    reasons from who the user is (``algo=pgpr``, from the user's node of a knowledge graph)
    needs of it besides the state."""

    def slot_users(self) -> torch.Tensor:
        """(N,) int64: the dataset's index of the user each slot serves now."""
        ...


def slot_users(env: object) -> torch.Tensor | None:
    """The users ``env``'s slots serve now, or None if it serves no dataset's users."""
    return cast(ServesUsers, env).slot_users() if _conforms(env, ServesUsers) else None


def user_keywords(env: object) -> dict[str, torch.Tensor]:
    """``{"users": slot_users(env)}`` where ``env`` serves users, else nothing: what callers pass
    to an agent or a policy as keywords, so that one written before ``users`` existed still runs
    on every env without users."""
    users = slot_users(env)
    return {} if users is None else {"users": users}


@dataclass(frozen=True)
class EnvInfo:
    """What MACS needs to know about an env's rewards, read from its ``metadata``.

    - ``reward_range`` (low, high): bounds of one step's reward; scales rewards to [0, 1] (Eq. 12).
    - ``reward_bins``: histogram bins over that range for the reward distributions (Eq. 10);
      an env with integer rewards 0..K declares K + 1, one bin per value.
    - ``score`` and ``score_range``: the per-episode performance compared with the joint-training
      threshold: ``mean_reward`` (the mean step reward, e.g. clicks per page) or ``return``.
    - ``trivial_mask`` (optional): observation elements that by design do not affect rewards.
    """

    reward_range: tuple[float, float]
    reward_bins: int
    score: str
    score_range: tuple[float, float]
    trivial_mask: np.ndarray | None = None

    def episode_scores(self, returns: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        if self.score == "return":
            return np.asarray(returns, dtype=np.float64)
        return np.asarray(returns, dtype=np.float64) / np.maximum(lengths, 1)


SCORES = ("mean_reward", "return")


def env_info(env: BatchedEnv, env_id: str) -> EnvInfo:
    meta = env.metadata
    missing = [k for k in ("reward_range", "reward_bins", "score", "score_range") if k not in meta]
    if missing:
        raise ValueError(
            f"env {env_id!r} does not declare {', '.join(missing)} in its metadata, which MACS needs. "
            f"Declare them in the env's YAML, e.g. env.metadata.reward_range=[low,high] "
            f"env.metadata.reward_bins=10 env.metadata.score=mean_reward env.metadata.score_range=[low,high]"
        )
    low, high = (float(v) for v in meta["reward_range"])
    score_low, score_high = (float(v) for v in meta["score_range"])
    if not low < high or not score_low < score_high:
        raise ValueError(f"env {env_id!r}: reward_range and score_range must be [low, high] with low < high")
    if int(meta["reward_bins"]) < 2:
        raise ValueError(f"env {env_id!r}: reward_bins must be at least 2, got {meta['reward_bins']}")
    if meta["score"] not in SCORES:
        raise ValueError(f"env {env_id!r}: score={meta['score']!r} must be one of {SCORES}")
    mask = meta.get("trivial_mask")
    return EnvInfo(
        reward_range=(low, high),
        reward_bins=int(meta["reward_bins"]),
        score=str(meta["score"]),
        score_range=(score_low, score_high),
        trivial_mask=None if mask is None else np.asarray(mask, dtype=bool),
    )
