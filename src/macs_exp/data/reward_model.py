"""A rating model fitted on the training ratings, for rewarding items a user never rated.

Under ``env.train_reward=model`` a training episode rewards an item the user did not rate (in
the training split) with this model's predicted rating, so that a recommendation off the
logged data is not simply worth 0 (and MACS's counterfactual queries get an answer on unrated
items). The model is a biased matrix factorisation, ``mean + b_u + b_i + p_u . q_i``, clipped
to the dataset's rating scale, fitted by alternating least squares (ALS) with weighted-lambda
regularisation (Zhou et al. 2008: user u's terms are penalised by ``L2 * n_u``, item i's by
``L2 * n_i``, the number of ratings each has), which keeps one ``L2`` right for users and items
of any activity. Every half-sweep is exact and vectorised: each user's (item's) normal
equations come from one sparse product with the other side's outer products, then one batched
solve; float64 throughout and a seeded start, so the fit is deterministic.

The hyperparameters are fixed, not config: they were chosen on the held-out training ratings of
ML-100k and ML-1M (docs/metrics.md, "Modelled rewards") and the fit is reported on every
dataset it runs on, as the data stats ``model_rmse`` and ``model_baseline_rmse``.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from macs_exp.cache import atomic_write
from macs_exp.data.dataset import RatingData

log = logging.getLogger("macs_exp")

# Held-out RMSE of the grid 4/8/16 factors x L2 0.06/0.1/0.15 (docs/metrics.md): 16 factors gain
# nothing on ML-1M (0.858, as 8 at L2=0.06) at three times the time; ML-100k prefers a larger L2
# (0.15) and ML-1M a smaller one (0.06), so L2=0.1 sits within 0.01 of either best.
FACTORS = 8
# Weighted-lambda penalty per rating (module docstring).
L2 = 0.1
# Alternating sweeps (users, then items). ML-100k's held-out RMSE after 5, 10, 15, 25 sweeps:
# 0.937, 0.931, 0.928, 0.926; past 15 the gain is below the noise of the 10% sample.
SWEEPS = 15
# Standard deviation of the seeded random start of the item factors.
INIT_SCALE = 0.1
# Share of the training ratings held out (seeded by data.split_seed) to report the fit.
HELD_OUT = 0.1
# Bump whenever a change here alters a fitted model, so that cached models miss.
MODEL_VERSION = 1


@dataclass(frozen=True)
class RatingModel:
    """``mean + user_bias[u] + item_bias[i] + user_factors[u] . item_factors[i]``, clipped to
    ``[rating_min, rating_max]``; float32 tensors on one device."""

    mean: float
    rating_min: float
    rating_max: float
    user_bias: torch.Tensor  # (n_users,)
    item_bias: torch.Tensor  # (n_items,)
    user_factors: torch.Tensor  # (n_users, FACTORS)
    item_factors: torch.Tensor  # (n_items, FACTORS)

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The predicted ratings of the pairs ``(users, items)`` (same shape, int64), float32."""
        dot = (self.user_factors[users] * self.item_factors[items]).sum(-1)
        raw = self.mean + self.user_bias[users] + self.item_bias[items] + dot
        return raw.clamp(self.rating_min, self.rating_max)

    def to(self, device: torch.device) -> RatingModel:
        return RatingModel(
            self.mean,
            self.rating_min,
            self.rating_max,
            *(t.to(device) for t in (self.user_bias, self.item_bias, self.user_factors, self.item_factors)),
        )


_TENSORS = ("user_bias", "item_bias", "user_factors", "item_factors")


def with_reward_model(data: RatingData, cache_path: Path, seed: int) -> RatingData:
    """``data`` with its ``reward_model`` and the fit's stats, read from ``cache_path`` (next to
    the data's own cache, whose key covers everything the fit depends on but the code, hence
    ``MODEL_VERSION`` in the name) or fitted and written there."""
    loaded = _load_model(cache_path, data)
    if loaded is None:
        log.info("reward model cache miss: %s; fitting it", cache_path)
        loaded = fit_reward_model(data, seed)
        _save_model(cache_path, *loaded)
    else:
        log.info("reward model cache hit: %s (held-out RMSE %.4f)", cache_path, loaded[1]["model_rmse"])
    model, stats = loaded
    return dataclasses.replace(data, reward_model=model, stats={**data.stats, **stats})


def model_cache_path(data_cache_path: Path) -> Path:
    return data_cache_path.with_name(f"{data_cache_path.stem}-model-v{MODEL_VERSION}.npz")


def _save_model(path: Path, model: RatingModel, stats: dict[str, float]) -> None:
    arrays = {name: getattr(model, name).numpy() for name in _TENSORS}
    arrays["mean"] = np.array(model.mean)
    arrays["stat_names"] = np.array(sorted(stats))
    arrays["stat_values"] = np.array([stats[k] for k in sorted(stats)], dtype=np.float64)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _load_model(path: Path, data: RatingData) -> tuple[RatingModel, dict[str, float]] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            tensors = {name: torch.from_numpy(arrays[name]) for name in _TENSORS}
            stats = dict(zip(arrays["stat_names"].tolist(), arrays["stat_values"].tolist(), strict=True))
            mean = float(arrays["mean"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        log.warning("ignoring unreadable reward model cache %s (%s); refitting it", path, err)
        return None
    return RatingModel(mean, data.rating_min, data.rating_max, **tensors), stats


def fit_reward_model(data: RatingData, seed: int) -> tuple[RatingModel, dict[str, float]]:
    """The model the env serves, fitted on all of ``data``'s training ratings, and the stats of
    a first fit on 90% of them: ``model_rmse`` on the held-out 10% (drawn with ``seed``),
    ``model_baseline_rmse`` of predicting their mean there, and the two counts."""
    users = np.repeat(np.arange(data.n_users, dtype=np.int64), np.diff(data.train_indptr))
    items = np.asarray(data.train_items, dtype=np.int64)
    ratings = np.asarray(data.train_ratings, dtype=np.float64)
    held_out = np.random.default_rng(seed).random(len(ratings)) < HELD_OUT
    fitted = ~held_out
    probe = _als(data, users[fitted], items[fitted], ratings[fitted], seed)
    truth = ratings[held_out]
    predicted = probe.predict(torch.from_numpy(users[held_out]), torch.from_numpy(items[held_out])).numpy()
    stats = {
        "model_rmse": _rmse(predicted, truth),
        "model_baseline_rmse": _rmse(np.full_like(truth, ratings[fitted].mean()), truth),
        "model_fit_ratings": float(fitted.sum()),
        "model_heldout_ratings": float(held_out.sum()),
    }
    log.info(
        "%s: reward model (ALS, %d factors) held-out RMSE %.4f (global mean %.4f) on %d of %d ratings",
        data.name,
        FACTORS,
        stats["model_rmse"],
        stats["model_baseline_rmse"],
        int(held_out.sum()),
        len(ratings),
    )
    return _als(data, users, items, ratings, seed), stats


def _rmse(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - truth) ** 2))) if truth.size else 0.0


def _als(
    data: RatingData, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, seed: int
) -> RatingModel:
    """ALS on the given ratings: per half-sweep, every user's (then item's) factors and bias
    solved exactly with the other side fixed, its bias entering as a constant 1 column."""
    n_users, n_items = data.n_users, data.n_items
    by_user = _Pattern(users, items, n_users, n_items)
    by_item = _Pattern(items, users, n_items, n_users)
    mean = float(ratings.mean())
    centred = torch.from_numpy(ratings - mean)
    u, i = torch.from_numpy(users), torch.from_numpy(items)
    generator = torch.Generator().manual_seed(seed)
    item_side = torch.cat(
        (
            torch.randn(n_items, FACTORS, generator=generator, dtype=torch.float64) * INIT_SCALE,
            torch.zeros(n_items, 1, dtype=torch.float64),
        ),
        dim=1,
    )
    user_side = torch.zeros(n_users, FACTORS + 1, dtype=torch.float64)
    for _ in range(SWEEPS):
        # Columns: factors, then the bias; the fixed side's bias moves into the target.
        user_side = by_user.solve(_with_ones(item_side), centred - item_side[i, -1])
        item_side = by_item.solve(_with_ones(user_side), centred - user_side[u, -1])
    return RatingModel(
        mean=mean,
        rating_min=data.rating_min,
        rating_max=data.rating_max,
        user_bias=user_side[:, -1].float(),
        item_bias=item_side[:, -1].float(),
        user_factors=user_side[:, :-1].float().contiguous(),
        item_factors=item_side[:, :-1].float().contiguous(),
    )


def _with_ones(side: torch.Tensor) -> torch.Tensor:
    """A side's factors with its bias column replaced by 1, the fixed regressors of the other side."""
    return torch.cat((side[:, :-1], torch.ones(len(side), 1, dtype=side.dtype)), dim=1)


class _Pattern:
    """The ratings as a sparse (rows x cols) pattern, sorted once; values change every half-sweep."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> None:
        self._order = torch.from_numpy(np.lexsort((cols, rows)))
        counts = np.bincount(rows, minlength=n_rows)
        self._crow = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self._cols = torch.from_numpy(cols)[self._order]
        self._shape = (n_rows, n_cols)
        # Weighted-lambda: a row with no rating gets L2 alone, so its system stays solvable (x = 0).
        self._penalty = torch.from_numpy(L2 * np.maximum(counts, 1).astype(np.float64))

    def _times(self, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """(sparse matrix holding ``values``, in rating order) @ ``dense``."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            matrix = torch.sparse_csr_tensor(
                self._crow, self._cols, values[self._order], self._shape, check_invariants=False
            )
        return matrix @ dense

    def solve(self, fixed: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per row r: argmin_x sum over its ratings (target - fixed[col] . x)^2 + penalty_r |x|^2."""
        width = fixed.shape[1]
        outer = (fixed[:, :, None] * fixed[:, None, :]).reshape(len(fixed), width * width)
        gram = self._times(torch.ones_like(targets), outer).reshape(-1, width, width)
        gram += self._penalty[:, None, None] * torch.eye(width, dtype=fixed.dtype)
        rhs = self._times(targets, fixed)
        return torch.linalg.solve(gram, rhs)
