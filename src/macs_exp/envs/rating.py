"""MACS/Rating-v0: an offline rating dataset served as a batched recommendation environment.

Each slot serves one user for ``episode_length`` steps. The state is the item features of
the user's latest ``state_size`` positively rated items; an action is a direction in item
feature space, and the recommended item is the best-scoring item (``item_features @ action``)
the user has neither seen in the starting history nor been shown in this episode. The reward
is read from the user's ratings of the split the episode serves; unrated items earn 0.

Train episodes start at a random chronological cut of a random user's training sequence, so
everything rated after the cut is there to be found; test episodes start after the whole
training sequence and are rewarded from the test split. docs/metrics.md has the full protocol.

Every slot starts together and runs the same number of steps, so one step counter serves all
of them and all slots reset in the same step. The env has no single-user ``gym.Env``: a test
slot is tied to one evaluation user, which has no useful single-env counterpart, and the
trainer always takes the vector entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from macs_exp.data.dataset import SPLITS, RatingData
from macs_exp.data.lookup import RatedPairs

REWARDS = ("binary", "normalized_rating")
# Scores (float32) computed at once: slots are scored in blocks of at most this many entries, so
# that evaluating every user of a large catalogue (8929 x 20685 on Douban Book) needs 16 MB of
# scores instead of 740 MB. Training batches (256 x 3706 on ML-1M) fit in one block.
SCORE_BLOCK = 1 << 22


def _reward_values(ratings: np.ndarray, data: RatingData, reward: str) -> np.ndarray:
    """Rewards of rated items, float64; an unrated item's reward is 0 under both schemes."""
    ratings = np.asarray(ratings, dtype=np.float64)
    if reward == "binary":
        return (ratings >= data.positive_threshold).astype(np.float64)
    return (ratings - data.rating_min) / (data.rating_max - data.rating_min)


class _RatingLookup:
    """(user, item) -> (reward, positive) in one split, on the env's device (see ``RatedPairs``)."""

    def __init__(self, data: RatingData, split: str, reward: str, device: torch.device) -> None:
        pairs = RatedPairs.of(data, split)
        self._pairs = pairs.to(device)
        self.rewards = torch.as_tensor(
            _reward_values(pairs.ratings, data, reward), dtype=torch.float32, device=device
        )
        self.positive = torch.as_tensor(pairs.ratings >= data.positive_threshold, device=device)

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index, found = self._pairs.find(users, items)
        return torch.where(found, self.rewards[index], 0.0), found & self.positive[index]


def _row_argmax(scores: torch.Tensor) -> torch.Tensor:
    # On CPU, numpy's vectorised argmax is ~10x faster than torch's along rows (measured on torch
    # 2.13), and the argmax would otherwise be most of a step. Both return the first maximum on ties.
    if scores.device.type == "cpu":
        return torch.from_numpy(scores.numpy().argmax(1))
    return scores.argmax(1)


@dataclass(frozen=True)
class RatingEnvState:
    """Complete state of the N slots: private copies, except the shared ``history``."""

    users: torch.Tensor  # (N,) int64 user served by each slot
    cuts: torch.Tensor  # (N,) int64 length of the starting history (a prefix of the training sequence)
    step: int  # steps taken in the current episodes
    window: torch.Tensor  # (N, state_size) int64 latest positive items, most recent last; n_items pads
    recommended: torch.Tensor  # (N, episode_length) int64 items shown so far (first ``step`` columns)
    rng_state: torch.Tensor
    # Per block of slots, the (slot in block, item) pairs of the starting histories: follows from
    # users and cuts, kept because MACS restores at every step and rebuilding them costs as much
    # as a fifth of a step. Shared, not copied: the env replaces these tensors, never writes them.
    history: tuple[tuple[torch.Tensor, torch.Tensor], ...]


def _check_settings(data: RatingData, split: str, episode_length: int, state_size: int, reward: str) -> None:
    """Rejects settings the env cannot serve, before anything is put on the device."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {SPLITS}")
    if reward not in REWARDS:
        raise ValueError(f"reward={reward!r} must be one of {REWARDS}")
    if episode_length < 1 or state_size < 1:
        raise ValueError(
            f"episode_length and state_size must be at least 1, got {episode_length}, {state_size}"
        )
    if not data.rating_max > data.rating_min:
        raise ValueError(f"{data.name}: rating_max must exceed rating_min")


def _served_users(
    data: RatingData, split: str, num_envs: int | None, users: np.ndarray | None
) -> tuple[int, np.ndarray]:
    """``(num_envs, users)``: on the test split, the user of each slot (``num_envs=None`` takes
    every one); on the train split, the pool each episode draws its user from."""
    split_lengths = np.diff(data.split_arrays(split)[0])
    users = np.flatnonzero(split_lengths > 0) if users is None else np.asarray(users, dtype=np.int64)
    if users.size == 0 or (split_lengths[users] == 0).any():
        raise ValueError(f"{data.name}: every user served must have ratings in the {split} split")
    if split == "test":
        if num_envs is None:
            num_envs = len(users)
        if num_envs > len(users):
            raise ValueError(f"num_envs={num_envs} exceeds the {len(users)} evaluation users")
        users = users[:num_envs]
    elif num_envs is None:
        raise ValueError("the train split draws users at random: num_envs must be given")
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    return num_envs, users


def _check_room(data: RatingData, split: str, users: np.ndarray, episode_length: int) -> None:
    """The starting history and the episode's recommendations must leave an item to recommend."""
    # A train episode's history stops at least one rating before the end of the sequence.
    longest_history = int(np.diff(data.train_indptr)[users].max()) - (1 if split == "train" else 0)
    if longest_history + episode_length > data.n_items:
        raise ValueError(
            f"{data.name}: a starting history of {longest_history} items plus {episode_length} "
            f"recommendations exceeds the {data.n_items} items"
        )


class RatingCore:
    """The N slots' state and dynamics, batched; all randomness from the private ``generator``."""

    def __init__(
        self,
        num_envs: int | None,
        data: RatingData,
        split: str,
        episode_length: int,
        state_size: int,
        reward: str,
        device: str | torch.device,
        users: np.ndarray | None,
    ) -> None:
        _check_settings(data, split, episode_length, state_size, reward)
        self.num_envs, users = _served_users(data, split, num_envs, users)
        _check_room(data, split, users, episode_length)
        self.split = split
        self.episode_length = episode_length
        self.device = torch.device(device)
        self.n_items = data.n_items
        self._load_items(data)
        self._lookup = _RatingLookup(data, split, reward, self.device)
        self._users_served = torch.as_tensor(users, device=self.device)
        self._plan_blocks(state_size)
        self.generator = torch.Generator(self.device)
        # A fresh Generator has a fixed default seed; unseeded envs would all replay one stream.
        self.generator.seed()
        self.recommended = torch.zeros(self.num_envs, episode_length, dtype=torch.int64, device=self.device)
        self.new_episodes()

    def _load_items(self, data: RatingData) -> None:
        """The item features and training sequences on the device, laid out for ``new_episodes``."""
        dev = self.device
        features = np.asarray(data.item_features, dtype=np.float32)
        self.feature_dim: int = features.shape[1]
        # One zero row after the items: the padding of windows holding fewer positives.
        self._features_padded = torch.as_tensor(
            np.concatenate((features, np.zeros((1, self.feature_dim), np.float32))), device=dev
        )
        self._features = self._features_padded[:-1]
        self._train_indptr = torch.as_tensor(data.train_indptr, dtype=torch.int64, device=dev)
        self._train_items = torch.as_tensor(data.train_items, dtype=torch.int64, device=dev)
        self._train_lengths = torch.as_tensor(np.diff(data.train_indptr).astype(np.int64), device=dev)
        # Training positives in data order, then the padding item, and how many positives precede
        # each position (a global prefix count): the positives before any cut are then a slice.
        train_positive = np.asarray(data.train_ratings) >= data.positive_threshold
        self._positive_items = torch.cat(
            (
                self._train_items[torch.as_tensor(train_positive, device=dev)],
                torch.tensor([self.n_items], device=dev),
            )
        )
        self._positives_before = torch.as_tensor(
            np.concatenate(([0], np.cumsum(train_positive))), dtype=torch.int64, device=dev
        )

    def _plan_blocks(self, state_size: int) -> None:
        """The blocks of slots scored at once (``SCORE_BLOCK``) and the index grids reused per step."""
        dev = self.device
        self._rows = torch.arange(self.num_envs, device=dev)
        rows_per_block = max(1, SCORE_BLOCK // self.n_items)
        self._blocks = [
            (lo, min(lo + rows_per_block, self.num_envs)) for lo in range(0, self.num_envs, rows_per_block)
        ]
        self._row_grid = self._rows[:rows_per_block, None].expand(-1, self.episode_length)
        self._window_offsets = torch.arange(-state_size, 0, device=dev)
        self._excluded = torch.tensor(-torch.inf, device=dev)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def new_episodes(self) -> None:
        """Start every slot's next episode: its user, cut, starting history and state window."""
        n = self.num_envs
        if self.split == "train":
            pick = torch.randint(len(self._users_served), (n,), generator=self.generator, device=self.device)
            users = self._users_served[pick]
            lengths = self._train_lengths[users]
            # Uniform in [0, length - 1], so at least one training rating lies at or after the cut.
            uniform = torch.rand(n, dtype=torch.float64, generator=self.generator, device=self.device)
            cuts = torch.minimum((uniform * lengths).long(), lengths - 1)
        else:
            users = self._users_served
            cuts = self._train_lengths[users]
        self.users: torch.Tensor = users
        self.cuts: torch.Tensor = cuts
        self.step_count = 0
        # Starting histories flattened: slot i contributes its user's first cut_i training items.
        first = self._train_indptr[users]
        rows = self._rows.repeat_interleave(cuts)
        ends = torch.cumsum(cuts, 0)
        offset = torch.arange(len(rows), device=self.device) - (ends - cuts)[rows]
        items = self._train_items[first[rows] + offset]
        bounds = [0, *ends[[stop - 1 for _, stop in self._blocks]].tolist()]
        self._history = tuple(
            (rows[a:b] - lo, items[a:b])
            for (lo, _), a, b in zip(self._blocks, bounds[:-1], bounds[1:], strict=True)
        )
        # The last state_size positives before the cut, by global index; missing ones are padding.
        end = self._positives_before[first + cuts]
        index = end[:, None] + self._window_offsets
        before_user = index < self._positives_before[first][:, None]
        self.window = self._positive_items[index.masked_fill_(before_user, len(self._positive_items) - 1)]

    @torch.no_grad()
    def step(self, actions: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Recommend one item to every slot; returns (items, rewards, episodes done).

        Only the action's direction matters (the argmax ignores positive scaling), so actions
        are not clipped. No random numbers are drawn here: branches from a snapshot that take
        different actions still draw the same users at the next episode start.
        """
        t = self.step_count
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        for (lo, hi), history in zip(self._blocks, self._history, strict=True):
            scores = a[lo:hi] @ self._features.T
            scores.index_put_(history, self._excluded)
            if t:
                shown = (self._row_grid[: hi - lo, :t], self.recommended[lo:hi, :t])
                scores.index_put_(shown, self._excluded)
            self.recommended[lo:hi, t] = _row_argmax(scores).to(self.device)
        items = self.recommended[:, t].clone()
        rewards, positive = self._lookup(self.users, items)
        shifted = torch.cat((self.window[:, 1:], items[:, None]), dim=1)
        self.window = torch.where(positive[:, None], shifted, self.window)
        self.step_count = t + 1
        return items, rewards, self.step_count >= self.episode_length

    def observation(self) -> torch.Tensor:
        """(N, state_size * feature_dim) float32, a new tensor on every call."""
        return self._features_padded.index_select(0, self.window.view(-1)).view(self.num_envs, -1)

    def snapshot(self) -> RatingEnvState:
        return RatingEnvState(
            users=self.users.clone(),
            cuts=self.cuts.clone(),
            step=self.step_count,
            window=self.window.clone(),
            recommended=self.recommended.clone(),
            rng_state=self.generator.get_state(),
            history=self._history,
        )

    def restore(self, state: RatingEnvState) -> None:
        if state.recommended.shape != self.recommended.shape or state.window.shape != self.window.shape:
            raise ValueError(
                f"snapshot of shape {tuple(state.recommended.shape)} / {tuple(state.window.shape)} does not "
                f"fit this env's {tuple(self.recommended.shape)} / {tuple(self.window.shape)}"
            )
        self.users = state.users.clone()
        self.cuts = state.cuts.clone()
        self.step_count = state.step
        self.window = state.window.clone()
        self.recommended = state.recommended.clone()
        self.generator.set_state(state.rng_state)
        self._history = state.history


def _reward_bins(data: RatingData, reward: str) -> int:
    """Distinct values one step's reward can take, so that a histogram over (0, 1) with this many
    equal bins gives each value its own bin when rating levels are evenly spaced."""
    if reward == "binary":
        return 2
    levels = np.unique(np.concatenate((data.train_ratings, data.test_ratings)))
    return int(np.unique(np.append(_reward_values(levels, data, reward), 0.0)).size)


class RatingVecEnv(gym.vector.VectorEnv):
    """``num_envs`` slots of a rating dataset stepped at once, same-step autoreset (``envs.base``).

    ``split="train"`` draws each episode's user uniformly from ``users`` (default: every user
    with training ratings) and a random cut of the user's training sequence. ``split="test"``
    ties slot i to ``users[i]`` (default: every user with a test rating, in index order;
    ``num_envs=None`` takes them all, a smaller ``num_envs`` the first ones) and replays the same
    user after each episode. ``info["item"]`` holds the recommended items (N,) int64;
    ``info["final_obs"]`` is dense as in ``VirtualTaobaoVecEnv``. A step costs time in proportion
    to N x n_items (a score per slot and item); the scores are held a block at a time.
    """

    # An instance attribute in gymnasium: each env extends its own copy.
    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(
        self,
        num_envs: int | None,
        data: RatingData,
        split: str = "train",
        episode_length: int = 10,
        state_size: int = 10,
        reward: str = "binary",
        device: str | torch.device = "cpu",
        users: np.ndarray | None = None,
    ) -> None:
        self._core = RatingCore(num_envs, data, split, episode_length, state_size, reward, device, users)
        self.num_envs = self._core.num_envs
        dim = self._core.feature_dim
        features = np.asarray(data.item_features, dtype=np.float32)
        # Padding rows are zeros, so 0 is within the bounds of every coordinate.
        low = np.tile(np.minimum(features.min(0), 0.0), state_size)
        high = np.tile(np.maximum(features.max(0), 0.0), state_size)
        self.single_observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {
            **self.metadata,
            "reward_range": (0.0, 1.0),
            "reward_bins": _reward_bins(data, reward),
            "score": "return",
            "score_range": (0.0, float(episode_length)),
        }

    @property
    def core(self) -> RatingCore:
        return self._core

    @property
    def users(self) -> np.ndarray:
        """The user each slot serves in its current episode, (N,) int64."""
        return self._core.users.cpu().numpy().copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._core.seed(seed)
        self._core.new_episodes()
        return self._core.observation().cpu().numpy(), {}

    def step(
        self, actions: np.ndarray | torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        core = self._core
        items, rewards, done = core.step(actions)
        obs = core.observation().cpu().numpy()
        if done:
            final_obs = obs
            core.new_episodes()
            obs = core.observation().cpu().numpy()
        else:
            final_obs = obs.copy()
        truncated = np.full(self.num_envs, done)
        info = {"item": items.cpu().numpy(), "final_obs": final_obs, "_final_obs": truncated.copy()}
        return obs, rewards.cpu().numpy(), np.zeros(self.num_envs, dtype=np.bool_), truncated, info

    def snapshot(self) -> RatingEnvState:
        return self._core.snapshot()

    def restore(self, state: RatingEnvState) -> None:
        self._core.restore(state)
