"""MACS/Rating-v0: an offline rating dataset served as a batched recommendation environment.

Each slot serves one user for ``episode_length`` steps. The state is the item features of
the user's latest ``state_size`` positively rated items (``state="drr"``: the DRR-ave state
built from them and the user's factors); an action is a direction in item feature space, and
the recommended item is the best-scoring item (``item_features @ action``) among the allowed
ones: with ``candidates="catalog"`` any item the user has neither seen in the starting history
nor been shown in this episode, with ``candidates="rated"`` only the not yet shown items the
user rated in the split served (after the starting history), and the episode ends early when
they run out. The reward is read from the user's ratings of the split the episode serves;
unrated items earn 0, except in training episodes under ``train_reward="model"``, where they
earn what the data's rating model predicts (``data.reward_model``), and count as positives for
the state when that prediction does. One exception to the argmax: an action that is, bit for
bit, an allowed item's own feature vector shows that item (how a knn agent names the item it
chose; an item's features need not score highest against themselves, as they are not normalised),
and so does an item id: an action may be an (N,) integer array of items (how TPGR names them),
each of which counts as its item's feature vector.

Train episodes start at a random chronological cut of a random user's training sequence, so
everything rated after the cut is there to be found; test episodes start after the whole
training sequence and are rewarded from the test split. docs/metrics.md has the full protocol.

Under ``catalog`` every slot starts together and runs the same number of steps, so one step
counter serves all of them and all slots reset in the same step; under ``rated`` each slot
counts its own steps and resets when its episode ends. The env has no single-user ``gym.Env``: a test
slot is tied to one evaluation user, which has no useful single-env counterpart, and the
trainer always takes the vector entry point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from macs_exp.data.dataset import SPLITS, RatingData
from macs_exp.data.lookup import RatedPairs
from macs_exp.data.reward_model import RatingModel
from macs_exp.envs.base import Outcomes
from macs_exp.envs.config import CANDIDATES, STATES, TRAIN_REWARDS

log = logging.getLogger("macs_exp")

REWARDS = ("binary", "normalized_rating")
# Scores (float32) computed at once: slots are scored in blocks of at most this many entries, so
# that evaluating every user of a large catalogue (8929 x 20685 on Douban Book) needs 16 MB of
# scores instead of 740 MB. Training batches (256 x 3706 on ML-1M) fit in one block.
SCORE_BLOCK = 1 << 22


def _reward_values(ratings: torch.Tensor, data: RatingData, reward: str) -> torch.Tensor:
    """Rewards of (logged or predicted) ratings, in their floating dtype; an unrated item's
    reward is 0 under both schemes."""
    if reward == "binary":
        return (ratings >= data.positive_threshold).to(ratings.dtype)
    return (ratings - data.rating_min) / (data.rating_max - data.rating_min)


class _RatingLookup:
    """(user, item) -> (reward, positive) in one split, on the env's device (see ``RatedPairs``);
    with a ``model``, unrated pairs get the reward and positive of its predicted rating."""

    def __init__(
        self, data: RatingData, split: str, reward: str, device: torch.device, model: RatingModel | None
    ) -> None:
        pairs = RatedPairs.of(data, split)
        self._pairs = pairs.to(device)
        logged = torch.from_numpy(np.asarray(pairs.ratings, dtype=np.float64))
        self.rewards = _reward_values(logged, data, reward).to(device, torch.float32)
        self.positive = torch.as_tensor(pairs.ratings >= data.positive_threshold, device=device)
        self._data, self._reward = data, reward
        self._model = None if model is None else model.to(device)

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index, found = self._pairs.find(users, items)
        rewards, positive = torch.where(found, self.rewards[index], 0.0), found & self.positive[index]
        if self._model is None:
            return rewards, positive
        predicted = self._model.predict(users, items)
        modelled = _reward_values(predicted, self._data, self._reward)
        return (
            torch.where(found, rewards, modelled),
            torch.where(found, positive, predicted >= self._data.positive_threshold),
        )


def _row_argmax(scores: torch.Tensor) -> torch.Tensor:
    # On CPU, numpy's vectorised argmax is ~10x faster than torch's along rows (measured on torch
    # 2.13), and the argmax would otherwise be most of a step. Both return the first maximum on ties.
    if scores.device.type == "cpu":
        return torch.from_numpy(scores.numpy().argmax(1))
    return scores.argmax(1)


@dataclass(frozen=True)
class RatedCandidates:
    """Under ``candidates="rated"``, what each slot may still be shown; mutated in place by the core,
    copied by snapshots."""

    items: torch.Tensor  # (N, C) int64 the episode's candidates in index order, 0 on padding
    available: torch.Tensor  # (N, C) bool candidates not yet shown (False on padding)
    shown: torch.Tensor  # (N,) int64 items shown in the current episode
    length: torch.Tensor  # (N,) int64 the episode's length: min(episode_length, candidates)

    def clone(self) -> RatedCandidates:
        return RatedCandidates(
            self.items.clone(), self.available.clone(), self.shown.clone(), self.length.clone()
        )


@dataclass(frozen=True)
class RatingEnvState:
    """Complete state of the N slots: private copies, except the shared ``history``."""

    users: torch.Tensor  # (N,) int64 user served by each slot
    cuts: torch.Tensor  # (N,) int64 length of the starting history (a prefix of the training sequence)
    step: int  # steps taken in the current episodes (catalog; rated counts per slot in ``rated``)
    window: torch.Tensor  # (N, state_size) int64 latest positive items, most recent last; n_items pads
    recommended: torch.Tensor  # (N, episode_length) int64 items shown so far (first ``step`` columns)
    rng_state: torch.Tensor
    # Per block of slots, the (slot in block, item) pairs of the starting histories: follows from
    # users and cuts, kept because MACS restores at every step and rebuilding them costs as much
    # as a fifth of a step. Shared, not copied: the env replaces these tensors, never writes them.
    history: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    rated: RatedCandidates | None = None


@dataclass(frozen=True)
class EpisodeSpec:
    """What the episodes serve and show: the split, T, the state, the reward and the candidates."""

    split: str = "train"
    episode_length: int = 10
    state_size: int = 10
    reward: str = "binary"
    candidates: str = "catalog"
    state: str = "items"
    train_reward: str = "logged"


def _check_settings(data: RatingData, spec: EpisodeSpec) -> None:
    """Rejects settings the env cannot serve, before anything is put on the device."""
    for key, value, choices in (
        ("split", spec.split, SPLITS),
        ("reward", spec.reward, REWARDS),
        ("candidates", spec.candidates, CANDIDATES),
        ("state", spec.state, STATES),
        ("train_reward", spec.train_reward, TRAIN_REWARDS),
    ):
        if value not in choices:
            raise ValueError(f"{key}={value!r} must be one of {choices}")
    if spec.episode_length < 1 or spec.state_size < 1:
        raise ValueError(
            f"episode_length and state_size must be at least 1, got {spec.episode_length}, {spec.state_size}"
        )
    if not data.rating_max > data.rating_min:
        raise ValueError(f"{data.name}: rating_max must exceed rating_min")
    if spec.state == "drr" and (
        data.user_features is None or data.user_features.shape[1] != data.item_features.shape[1]
    ):
        raise ValueError(
            f"{data.name}: state=drr needs user_features as wide as the item features (the preprocessed "
            "datasets have them); use state=items"
        )
    if spec.train_reward == "model" and data.reward_model is None:
        raise ValueError(
            f"{data.name}: train_reward=model needs data.reward_model, which load_rating_data attaches "
            "when env.train_reward=model (or use train_reward=logged)"
        )


def _served_users(
    data: RatingData, split: str, num_envs: int | None, users: np.ndarray | None
) -> tuple[int, np.ndarray]:
    """``(num_envs, users)``: on the test split, the user of each slot (``num_envs=None`` takes
    every one); on the train split, the pool each episode draws its user from.

    Only users with ratings in the split are served: their ratings are what an episode is
    rewarded from, and under ``candidates="rated"`` what it recommends, so a user without any
    would have an episode with nothing to find (or nothing to show).
    """
    split_lengths = np.diff(data.split_arrays(split)[0])
    if users is None:
        users = np.flatnonzero(split_lengths > 0)
        if len(users) < data.n_users:
            log.info(
                "%s: %d of %d users have no ratings in the %s split and are not served",
                data.name,
                data.n_users - len(users),
                data.n_users,
                split,
            )
    users = np.asarray(users, dtype=np.int64)
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
    """Under ``catalog``, the starting history and the episode's recommendations must leave an
    item to recommend (``rated`` episodes end when their candidates run out instead)."""
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
        spec: EpisodeSpec,
        device: str | torch.device,
        users: np.ndarray | None,
    ) -> None:
        _check_settings(data, spec)
        self.num_envs, users = _served_users(data, spec.split, num_envs, users)
        if spec.candidates == "catalog":
            _check_room(data, spec.split, users, spec.episode_length)
        self.spec = spec
        self.split = spec.split
        self.episode_length = spec.episode_length
        self.device = torch.device(device)
        self.n_items = data.n_items
        self._load_items(data)
        self._item_of = _feature_index(self._features)
        # The test split is always rewarded from its logged ratings alone.
        model = data.reward_model if spec.train_reward == "model" and spec.split == "train" else None
        self._lookup = _RatingLookup(data, spec.split, spec.reward, self.device, model)
        self._users_served = torch.as_tensor(users, device=self.device)
        self._plan_blocks(spec.state_size)
        self.generator = torch.Generator(self.device)
        # A fresh Generator has a fixed default seed; unseeded envs would all replay one stream.
        self.generator.seed()
        self.recommended = torch.zeros(
            self.num_envs, spec.episode_length, dtype=torch.int64, device=self.device
        )
        self.rated = self._plan_candidates(data, users) if spec.candidates == "rated" else None
        self.new_episodes()

    def _load_items(self, data: RatingData) -> None:
        """The item (and, for ``drr``, user) features and training sequences on the device, laid
        out for ``new_episodes``."""
        dev = self.device
        features = np.asarray(data.item_features, dtype=np.float32)
        self.feature_dim: int = features.shape[1]
        # One zero row after the items: the padding of windows holding fewer positives.
        self._features_padded = torch.as_tensor(
            np.concatenate((features, np.zeros((1, self.feature_dim), np.float32))), device=dev
        )
        self._features = self._features_padded[:-1]
        if self.spec.state == "drr":
            assert data.user_features is not None  # _check_settings
            self._user_features = torch.as_tensor(data.user_features, dtype=torch.float32, device=dev)
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

    def _plan_candidates(self, data: RatingData, users: np.ndarray) -> RatedCandidates:
        """The split's sequences for ``rated`` episodes, and room for the most candidates any
        served user can have: all their ratings in the split (a train episode's cut may be 0)."""
        indptr, items, _ = data.split_arrays(self.split)
        self._split_indptr = torch.as_tensor(indptr, dtype=torch.int64, device=self.device)
        self._split_items = torch.as_tensor(items, dtype=torch.int64, device=self.device)
        width = int(np.diff(indptr)[users].max())
        self._candidate_offsets = torch.arange(width, device=self.device)
        n, dev = self.num_envs, self.device
        return RatedCandidates(
            items=torch.zeros(n, width, dtype=torch.int64, device=dev),
            available=torch.zeros(n, width, dtype=torch.bool, device=dev),
            shown=torch.zeros(n, dtype=torch.int64, device=dev),
            length=torch.zeros(n, dtype=torch.int64, device=dev),
        )

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def _draw(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The users and cuts of new episodes in slots ``rows`` (train: drawn; test: fixed)."""
        if self.split == "test":
            users = self._users_served[rows]
            return users, self._train_lengths[users]
        n = len(rows)
        pick = torch.randint(len(self._users_served), (n,), generator=self.generator, device=self.device)
        users = self._users_served[pick]
        lengths = self._train_lengths[users]
        # Uniform in [0, length - 1], so at least one training rating lies at or after the cut.
        uniform = torch.rand(n, dtype=torch.float64, generator=self.generator, device=self.device)
        return users, torch.minimum((uniform * lengths).long(), lengths - 1)

    def new_episodes(self, finished: torch.Tensor | None = None) -> None:
        """Start the next episode of every slot, or (``rated``) of the ``finished`` (N,) ones: its
        user, cut, state window, and its starting history or candidates."""
        if finished is None or bool(finished.all()):
            self.users, self.cuts = self._draw(self._rows)
            self.step_count = 0
            self.window = self._window(self.users, self.cuts)
            if self.rated is None:
                self._history = self._histories()
            else:
                self._history = ()
                self._start_candidates(self._rows)
            return
        rows = finished.nonzero().squeeze(1)
        users, cuts = self._draw(rows)
        self.users[rows], self.cuts[rows] = users, cuts
        self.window[rows] = self._window(users, cuts)
        self._start_candidates(rows)

    def _window(self, users: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
        """The last state_size positives before the cut, by global index; missing ones are padding."""
        first = self._train_indptr[users]
        end = self._positives_before[first + cuts]
        index = end[:, None] + self._window_offsets
        before_user = index < self._positives_before[first][:, None]
        return self._positive_items[index.masked_fill_(before_user, len(self._positive_items) - 1)]

    def _histories(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Per block, the (slot in block, item) pairs of the starting histories: slot i contributes
        its user's first cut_i training items."""
        first = self._train_indptr[self.users]
        rows = self._rows.repeat_interleave(self.cuts)
        ends = torch.cumsum(self.cuts, 0)
        offset = torch.arange(len(rows), device=self.device) - (ends - self.cuts)[rows]
        items = self._train_items[first[rows] + offset]
        bounds = [0, *ends[[stop - 1 for _, stop in self._blocks]].tolist()]
        return tuple(
            (rows[a:b] - lo, items[a:b])
            for (lo, _), a, b in zip(self._blocks, bounds[:-1], bounds[1:], strict=True)
        )

    def _start_candidates(self, rows: torch.Tensor) -> None:
        """The candidates of slots ``rows``: the user's ratings in the split after the cut (the
        whole test sequence on the test split), in index order so that ties go to the lowest
        index as under ``catalog``. None is in the starting history: a user rates an item once."""
        assert self.rated is not None
        users = self.users[rows]
        start = self._split_indptr[users] + (self.cuts[rows] if self.split == "train" else 0)
        count = self._split_indptr[users + 1] - start
        valid = self._candidate_offsets < count[:, None]
        position = torch.minimum(start[:, None] + self._candidate_offsets, self._split_indptr[-1] - 1)
        # Padding sorts last as n_items, then becomes item 0, never available.
        items = torch.where(valid, self._split_items[position], self.n_items).sort(1).values
        self.rated.items[rows] = items.masked_fill(~valid, 0)
        self.rated.available[rows] = valid
        self.rated.shown[rows] = 0
        self.rated.length[rows] = count.clamp(max=self.episode_length)

    @torch.no_grad()
    def step(self, actions: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Recommend one item to every slot; returns (items, rewards, episodes done (N,) bool).

        Only the action's direction matters (the argmax ignores positive scaling), so actions
        are not clipped. No random numbers are drawn here: branches from a snapshot that take
        different actions still draw the same users at the next episode start (a ``rated``
        episode's length depends on its candidates only, not on what was shown).
        """
        a, exact = self._actions(actions)
        if self.rated is None:
            items = self._recommend_from_catalog(a, exact)
            self.step_count += 1
            done = torch.full((self.num_envs,), self.step_count >= self.episode_length, device=self.device)
        else:
            items = self._recommend_from_candidates(a, exact, self.rated)
            self.rated.shown.add_(1)
            done = self.rated.shown >= self.rated.length
        rewards, positive = self._lookup(self.users, items)
        shifted = torch.cat((self.window[:, 1:], items[:, None]), dim=1)
        self.window = torch.where(positive[:, None], shifted, self.window)
        return items, rewards, done

    def _recommend_from_catalog(self, a: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        t = self.step_count
        for (lo, hi), history in zip(self._blocks, self._history, strict=True):
            scores = a[lo:hi] @ self._features.T
            scores.index_put_(history, self._excluded)
            if t:
                shown = (self._row_grid[: hi - lo, :t], self.recommended[lo:hi, :t])
                scores.index_put_(shown, self._excluded)
            picks = _row_argmax(scores).to(self.device)
            exact_allowed = (exact[lo:hi] >= 0) & (
                scores.gather(1, exact[lo:hi, None].clamp(min=0))[:, 0] > -torch.inf
            )
            self.recommended[lo:hi, t] = torch.where(exact_allowed, exact[lo:hi], picks)
        return self.recommended[:, t].clone()

    def _recommend_from_candidates(
        self, a: torch.Tensor, exact: torch.Tensor, rated: RatedCandidates
    ) -> torch.Tensor:
        picks = torch.empty(self.num_envs, dtype=torch.int64, device=self.device)
        for lo, hi in self._blocks:
            scores = (a[lo:hi] @ self._features.T).gather(1, rated.items[lo:hi])
            scores.masked_fill_(~rated.available[lo:hi], self._excluded)
            hit = (rated.items[lo:hi] == exact[lo:hi, None]) & rated.available[lo:hi]
            argmax = _row_argmax(scores).to(self.device)
            picks[lo:hi] = torch.where(hit.any(1), hit.to(torch.uint8).argmax(1), argmax)
        items = rated.items[self._rows, picks]
        rated.available[self._rows, picks] = False
        self.recommended[self._rows, rated.shown] = items
        return items

    def _actions(self, actions: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Directions (N, feature_dim) float32 and the item each action names exactly (N,), or -1.

        An action is a direction, or an item id: an (N,) integer array. Item i is then the
        direction of its own features that names it exactly, so it is shown when allowed and the
        best-scoring allowed item against its features otherwise, as a knn agent's action would."""
        raw = torch.as_tensor(actions, device=self.device)
        if raw.ndim == 1 and not raw.is_floating_point():
            ids = raw.long()
            if bool(((ids < 0) | (ids >= self.n_items)).any()):
                bad = int(ids[(ids < 0) | (ids >= self.n_items)][0])
                raise ValueError(f"item id {bad} is outside the catalogue's 0..{self.n_items - 1}")
            return self._features[ids], ids
        a = raw.to(torch.float32)
        return a, self._exact_items(a)

    def _exact_items(self, a: torch.Tensor) -> torch.Tensor:
        """(N,) the item whose feature vector each action is, bit for bit, or -1."""
        rows = a.cpu().numpy()
        return torch.tensor([self._item_of.get(row.tobytes(), -1) for row in rows], device=self.device)

    def choose(self, actions: np.ndarray | torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(N,) the items ``step`` would show for ``actions`` if only ``allowed`` were allowed: the
        exact item where an action is an allowed item's features, else the best-scoring allowed item
        (the first on ties, as ``step``'s argmax over candidates in index order)."""
        a, exact = self._actions(actions)
        picks = torch.empty(self.num_envs, dtype=torch.int64, device=self.device)
        for lo, hi in self._blocks:
            scores = (a[lo:hi] @ self._features.T).masked_fill_(~allowed[lo:hi], self._excluded)
            picks[lo:hi] = _row_argmax(scores).to(self.device)
        exact_allowed = (exact >= 0) & allowed[self._rows, exact.clamp(min=0)]
        return torch.where(exact_allowed, exact, picks)

    def outcomes(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The observations after showing ``items`` now if the user accepts (the item joins the
        window) and if not (nothing changes); None under ``state=drr``, whose accepted state is not
        kept as a function of the observation alone."""
        if self.spec.state != "items":
            return None
        shifted = torch.cat((self.window[:, 1:], items[:, None]), dim=1)
        accepted = self._features_padded.index_select(0, shifted.reshape(-1)).view(self.num_envs, -1)
        return accepted, self.observation()

    def allowed(self) -> torch.Tensor:
        """(N, n_items) bool: the items each slot may be shown at its next step."""
        n, dev = self.num_envs, self.device
        if self.rated is not None:
            mask = torch.zeros(n, self.n_items + 1, dtype=torch.bool, device=dev)
            mask.scatter_(1, torch.where(self.rated.available, self.rated.items, self.n_items), True)
            return mask[:, :-1]
        mask = torch.ones(n, self.n_items, dtype=torch.bool, device=dev)
        for (lo, _), (rows, items) in zip(self._blocks, self._history, strict=True):
            mask[lo + rows, items] = False
        mask.scatter_(1, self.recommended[:, : self.step_count], False)
        return mask

    def observation(self) -> torch.Tensor:
        """(N, obs_dim) float32, a new tensor on every call: the window's features, or under
        ``drr`` the DRR-ave state (user factors, the mean of the window's items, their product)."""
        features = self._features_padded.index_select(0, self.window.view(-1))
        if self.spec.state == "items":
            return features.view(self.num_envs, -1)
        count = (self.window < self.n_items).sum(1, keepdim=True).clamp_(min=1)
        mean = features.view(self.num_envs, -1, self.feature_dim).sum(1) / count
        user = self._user_features[self.users]
        return torch.cat((user, mean, user * mean), dim=1)

    def snapshot(self) -> RatingEnvState:
        return RatingEnvState(
            users=self.users.clone(),
            cuts=self.cuts.clone(),
            step=self.step_count,
            window=self.window.clone(),
            recommended=self.recommended.clone(),
            rng_state=self.generator.get_state(),
            history=self._history,
            rated=None if self.rated is None else self.rated.clone(),
        )

    def restore(self, state: RatingEnvState) -> None:
        fits = state.recommended.shape == self.recommended.shape and state.window.shape == self.window.shape
        if self.rated is not None:
            fits = fits and state.rated is not None and state.rated.items.shape == self.rated.items.shape
        if not fits or (self.rated is None) != (state.rated is None):
            raise ValueError(
                f"snapshot of shape {tuple(state.recommended.shape)} / {tuple(state.window.shape)} "
                f"(candidates {'rated' if state.rated is not None else 'catalog'}) does not fit this env's "
                f"{tuple(self.recommended.shape)} / {tuple(self.window.shape)} ({self.spec.candidates})"
            )
        self.users = state.users.clone()
        self.cuts = state.cuts.clone()
        self.step_count = state.step
        self.window = state.window.clone()
        self.recommended = state.recommended.clone()
        self.generator.set_state(state.rng_state)
        self._history = state.history
        self.rated = None if state.rated is None else state.rated.clone()


def _feature_index(features: torch.Tensor) -> dict[bytes, int]:
    """Each item's feature vector (its float32 bytes) to the item; the first of equal ones."""
    rows = features.cpu().numpy()
    return {rows[i].tobytes(): i for i in reversed(range(len(rows)))}


def _reward_bins(data: RatingData, reward: str) -> int:
    """Distinct values one step's reward can take, so that a histogram over (0, 1) with this many
    equal bins gives each value its own bin when rating levels are evenly spaced."""
    if reward == "binary":
        return 2
    levels = np.unique(np.concatenate((data.train_ratings, data.test_ratings))).astype(np.float64)
    return int(np.unique(np.append(_reward_values(torch.from_numpy(levels), data, reward).numpy(), 0.0)).size)


def _observation_space(data: RatingData, state: str, state_size: int) -> gym.spaces.Box:
    """Per-coordinate bounds of the state: feature bounds, widened to hold the zero padding."""
    features = np.asarray(data.item_features, dtype=np.float32)
    # Padding rows are zeros (and an empty window's mean is zero), so 0 is within every bound.
    low, high = np.minimum(features.min(0), 0.0), np.maximum(features.max(0), 0.0)
    if state == "items":
        return gym.spaces.Box(np.tile(low, state_size), np.tile(high, state_size), dtype=np.float32)
    assert data.user_features is not None  # _check_settings
    users = np.asarray(data.user_features, dtype=np.float32)
    user_low, user_high = users.min(0), users.max(0)
    corners = np.stack([u * m for u in (user_low, user_high) for m in (low, high)])
    return gym.spaces.Box(
        np.concatenate((user_low, low, corners.min(0))),
        np.concatenate((user_high, high, corners.max(0))),
        dtype=np.float32,
    )


class RatingVecEnv(gym.vector.VectorEnv):
    """``num_envs`` slots of a rating dataset stepped at once, same-step autoreset (``envs.base``).

    ``split="train"`` draws each episode's user uniformly from ``users`` (default: every user
    with training ratings) and a random cut of the user's training sequence. ``split="test"``
    ties slot i to ``users[i]`` (default: every user with a test rating, in index order;
    ``num_envs=None`` takes them all, a smaller ``num_envs`` the first ones) and replays the same
    user after each episode. ``candidates``, ``state`` and ``train_reward`` are as in
    ``RatingEnvConfig`` (under ``rated``, slots end their episodes at different steps, each reset
    as it ends; ``train_reward="model"`` needs ``data.reward_model``).
    ``info["item"]`` holds the recommended items (N,) int64;
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
        candidates: str = "catalog",
        state: str = "items",
        train_reward: str = "logged",
    ) -> None:
        spec = EpisodeSpec(split, episode_length, state_size, reward, candidates, state, train_reward)
        self._core = RatingCore(num_envs, data, spec, device, users)
        self.num_envs = self._core.num_envs
        dim = self._core.feature_dim
        self.single_observation_space = _observation_space(data, state, state_size)
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
        truncated = done.cpu().numpy()
        if truncated.any():
            final_obs = obs
            core.new_episodes(done)
            obs = core.observation().cpu().numpy()
        else:
            final_obs = obs.copy()
        info = {"item": items.cpu().numpy(), "final_obs": final_obs, "_final_obs": truncated.copy()}
        return obs, rewards.cpu().numpy(), np.zeros(self.num_envs, dtype=np.bool_), truncated, info

    def item_features(self) -> torch.Tensor:
        """(n_items, feature_dim) float32: each item as an action; passing row i shows item i
        whenever the current state allows it."""
        return self._core._features

    def allowed_items(self) -> torch.Tensor:
        """(N, n_items) bool: the items each slot may be shown at its next step."""
        return self._core.allowed()

    def slot_users(self) -> torch.Tensor:
        """(N,) int64: the user each slot serves in its current episode."""
        return self._core.users.clone()

    def choose_items(self, actions: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return self._core.choose(actions, allowed)

    def binary_outcomes(self, items: torch.Tensor) -> Outcomes | None:
        """Under ``reward=binary`` a step's reward is 1 exactly when the item joins the state (a
        positive), so both follow from the accept bit; ``normalized_rating`` rewards do not."""
        states = self._core.outcomes(items)
        if states is None or self._core.spec.reward != "binary":
            return None
        return Outcomes(states[0], states[1], accepted_reward=1.0, rejected_reward=0.0)

    def snapshot(self) -> RatingEnvState:
        return self._core.snapshot()

    def restore(self, state: RatingEnvState) -> None:
        self._core.restore(state)
