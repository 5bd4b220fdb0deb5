"""From a ratings file to the :class:`RatingData` the rating environment serves, cached on disk.

The steps, in order (each documented where it happens):

1. read the file (:mod:`macs_exp.data.loaders`); BookCrossing's implicit 0s are dropped unless
   ``env.keep_implicit``; a repeated (user, item) pair keeps its last row in file order;
2. iterated filtering (a k-core): users with fewer than ``min_user_ratings`` ratings and items with
   fewer than ``min_item_ratings`` are removed, repeatedly, until both hold for every rating left;
3. per-user split: each user's last ``test_fraction`` of ratings go to the test set;
4. item and user features: a truncated SVD of the mean-centred training matrix, plus a popularity
   (activity) coordinate.
5. only under ``env.train_reward=model``: the reward model of :mod:`macs_exp.data.reward_model`,
   fitted on the training ratings and cached beside the dataset.

A second run with the same file bytes and the same settings loads the result from
``data.cache_dir`` instead: about 10 ms on ML-1M, where steps 1-4 take about a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from macs_exp.cache import atomic_write, content_key
from macs_exp.data.dataset import RatingData
from macs_exp.data.loaders import DataError, RatingSource, read_ratings, resolve_source
from macs_exp.data.reward_model import model_cache_path, with_reward_model

if TYPE_CHECKING:
    from macs_exp.data.config import DataConfig
    from macs_exp.envs.config import RatingEnvConfig

log = logging.getLogger("macs_exp")

# Bump whenever a change here alters what a cached dataset contains, so old caches miss.
# 2: user_features added; ratings off the dataset's scale rejected. 3: the file's ids kept.
CACHE_VERSION = 3
# The arrays a cache file holds. Caches written before item_popularity was dropped still hold
# it as well; it is simply not read, so they stay valid.
_ARRAYS = (
    "item_features",
    "user_features",
    "train_indptr",
    "train_items",
    "train_ratings",
    "test_indptr",
    "test_items",
    "test_ratings",
    "user_ids",
    "item_ids",
)
_TABLE_KEYS = ("file", "sep", "user_col", "item_col", "rating_col", "timestamp_col", "header", "encoding")


def load_rating_data(env_cfg: RatingEnvConfig, data_cfg: DataConfig) -> RatingData:
    """The preprocessed dataset ``env_cfg`` describes, from ``data_cfg.cache_dir`` if possible,
    with its reward model (cached beside it) when ``env.train_reward=model`` asks for one.

    ``data_cfg.split_seed`` drives the split of datasets without timestamps and the SVD's random
    start, so it is part of the cache key; it also draws the reward model's held-out ratings.
    """
    source = resolve_source(env_cfg)
    params = cache_params(env_cfg, data_cfg, source)
    npz_path = Path(data_cfg.cache_dir) / f"{source.format}-{content_key(params, 24)}.npz"
    data = _cached_rating_data(env_cfg, data_cfg, source, params, npz_path)
    if env_cfg.train_reward == "model":
        return with_reward_model(data, model_cache_path(npz_path), int(data_cfg.split_seed))
    return data


def _cached_rating_data(
    env_cfg: RatingEnvConfig,
    data_cfg: DataConfig,
    source: RatingSource,
    params: dict[str, Any],
    npz_path: Path,
) -> RatingData:
    """The dataset from its cache files at ``npz_path`` (and the .json beside it), else built and cached."""
    json_path = npz_path.with_suffix(".json")
    cached = _load_cache(npz_path, json_path, env_cfg.name)
    if cached is not None:
        log.info("rating data cache hit: %s (%s)", npz_path, source.path)
        return cached
    log.info("rating data cache miss: %s; preprocessing %s", npz_path, source.path)
    start = time.perf_counter()
    frame, stats = _read_frame(env_cfg, source, data_cfg.on_bad_rows)
    data = build_rating_data(
        frame,
        name=env_cfg.name,
        positive_threshold=float(env_cfg.positive_threshold),
        min_user_ratings=int(env_cfg.min_user_ratings),
        min_item_ratings=int(env_cfg.min_item_ratings),
        test_fraction=float(env_cfg.test_fraction),
        embedding_dim=int(env_cfg.embedding_dim),
        seed=int(data_cfg.split_seed),
        stats=stats,
    )
    _save_cache(data, npz_path, json_path, params)
    log.info(
        "%s: %d users, %d items, %d train / %d test ratings (preprocessed in %.1f s)",
        data.name,
        data.n_users,
        data.n_items,
        len(data.train_items),
        len(data.test_items),
        time.perf_counter() - start,
    )
    return data


def _read_frame(
    env_cfg: RatingEnvConfig, source: RatingSource, on_bad_rows: str
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The file's ratings and the reader's counts; BookCrossing's implicit 0s are not ratings, so
    they go unless ``env.keep_implicit``."""
    frame, counts = read_ratings(source, on_bad_rows)
    stats: dict[str, float] = {k: float(v) for k, v in counts.items()}
    if source.format == "bookcrossing" and not env_cfg.keep_implicit:
        implicit = frame["rating"].to_numpy() == 0
        stats["implicit_dropped"] = float(implicit.sum())
        frame = frame[~implicit]
    return frame, stats


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cache_params(env_cfg: RatingEnvConfig, data_cfg: DataConfig, source: RatingSource) -> dict[str, Any]:
    """Everything the cached arrays depend on; the name is not, so it is set at load time. The
    knowledge graph's cache key holds these too, as its user-item edges come from the split."""
    params: dict[str, Any] = {
        "version": CACHE_VERSION,
        "file_sha256": file_sha256(source.path),
        "format": source.format,
        "positive_threshold": float(env_cfg.positive_threshold),
        "keep_implicit": bool(env_cfg.keep_implicit),
        "min_user_ratings": int(env_cfg.min_user_ratings),
        "min_item_ratings": int(env_cfg.min_item_ratings),
        "test_fraction": float(env_cfg.test_fraction),
        "embedding_dim": int(env_cfg.embedding_dim),
        # data.split_seed, under the name the key has always used: renaming it would miss every cache.
        "seed": int(data_cfg.split_seed),
        # A file with bad rows caches only under skip; under error the same file must raise.
        "on_bad_rows": data_cfg.on_bad_rows,
    }
    if source.format == "table":
        params["table"] = {k: getattr(env_cfg.table, k) for k in _TABLE_KEYS}
    return params


def _save_cache(data: RatingData, npz_path: Path, json_path: Path, params: dict[str, Any]) -> None:
    meta = {
        "n_users": data.n_users,
        "n_items": data.n_items,
        "positive_threshold": data.positive_threshold,
        "rating_min": data.rating_min,
        "rating_max": data.rating_max,
        "stats": data.stats,
        "params": params,
    }
    # The json goes first: a present .npz then implies a complete pair.
    atomic_write(json_path, lambda f: f.write(json.dumps(meta, indent=1, sort_keys=True).encode()))
    atomic_write(npz_path, lambda f: np.savez(f, **{k: getattr(data, k) for k in _ARRAYS}))


def _load_cache(npz_path: Path, json_path: Path, name: str) -> RatingData | None:
    if not npz_path.is_file() or not json_path.is_file():
        return None
    try:
        meta = json.loads(json_path.read_text())
        with np.load(npz_path, allow_pickle=False) as arrays:
            loaded = {k: arrays[k] for k in _ARRAYS}
        return RatingData(
            name=name,
            n_users=int(meta["n_users"]),
            n_items=int(meta["n_items"]),
            positive_threshold=float(meta["positive_threshold"]),
            rating_min=float(meta["rating_min"]),
            rating_max=float(meta["rating_max"]),
            stats={k: float(v) for k, v in meta["stats"].items()},
            **loaded,
        )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        log.warning("ignoring unreadable rating data cache %s (%s); rebuilding it", npz_path, err)
        return None


def build_rating_data(
    frame: pd.DataFrame,
    *,
    name: str,
    positive_threshold: float,
    min_user_ratings: int,
    min_item_ratings: int,
    test_fraction: float,
    embedding_dim: int,
    seed: int,
    stats: Mapping[str, float] | None = None,
) -> RatingData:
    """Filters, splits and embeds a (user, item, rating, timestamp) frame in file order.

    ``stats`` (e.g. the reader's counts) are copied into the result's stats.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"env.test_fraction={test_fraction} must lie strictly between 0 and 1")
    if embedding_dim < 1:
        raise DataError(f"env.embedding_dim={embedding_dim} must be at least 1")
    out_stats = dict(stats or {})
    users, items, ratings, timestamps, (user_ids, item_ids) = _filtered_ratings(
        frame, name, min_user_ratings, min_item_ratings, out_stats
    )
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    is_test, order = _split(users, timestamps, n_users, test_fraction, seed, out_stats)
    users, items, ratings = users[order], items[order], ratings[order]
    train, test = ~is_test, is_test
    positive = ratings >= positive_threshold
    out_stats.update(
        users=float(n_users),
        items=float(n_items),
        train_ratings=float(train.sum()),
        test_ratings=float(test.sum()),
        positives=float(positive.sum()),
        train_positives=float((positive & train).sum()),
        test_positives=float((positive & test).sum()),
    )
    item_features, user_features = _features(
        users[train], items[train], ratings[train], n_users, n_items, embedding_dim, seed
    )
    return RatingData(
        name=name,
        n_users=n_users,
        n_items=n_items,
        item_features=item_features,
        train_indptr=_indptr(users[train], n_users),
        train_items=items[train],
        train_ratings=ratings[train].astype(np.float32),
        test_indptr=_indptr(users[test], n_users),
        test_items=items[test],
        test_ratings=ratings[test].astype(np.float32),
        positive_threshold=float(positive_threshold),
        rating_min=float(ratings.min()),
        rating_max=float(ratings.max()),
        stats=out_stats,
        user_features=user_features,
        user_ids=user_ids,
        item_ids=item_ids,
    )


def _filtered_ratings(
    frame: pd.DataFrame, name: str, min_user_ratings: int, min_item_ratings: int, stats: dict[str, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The frame's users, items (both renumbered densely), ratings and timestamps, in file order,
    without repeated pairs and after the k-core filter, and the file's (user, item) id of each
    dense index; the counts of each step go to ``stats``."""
    users, user_ids = pd.factorize(frame["user"], sort=True)
    items, item_ids = pd.factorize(frame["item"], sort=True)
    users, items = users.astype(np.int64), items.astype(np.int64)
    ratings = frame["rating"].to_numpy(np.float64)
    timestamps = frame["timestamp"].to_numpy(np.float64)

    # A repeated (user, item) pair keeps its last row in file order: a later rating supersedes.
    repeated = pd.Series(users * len(item_ids) + items).duplicated(keep="last").to_numpy()
    stats["duplicates_dropped"] = float(repeated.sum())
    keep = ~repeated
    stats["users_before_filter"] = float(len(user_ids))
    stats["items_before_filter"] = float(len(item_ids))
    stats["ratings_before_filter"] = float(keep.sum())

    # Each user needs one training and one test rating, hence at least 2 ratings.
    min_user, min_item = max(min_user_ratings, 2), max(min_item_ratings, 1)
    keep, rounds = _k_core(users, items, keep, min_user, min_item)
    stats["filter_rounds"] = float(rounds)
    if not keep.any():
        raise DataError(
            f"{name}: no ratings left after filtering users with < {min_user} and items "
            f"with < {min_item} ratings (out of {len(frame)}; a user needs at least 2, one "
            "to train and one to test); lower env.min_user_ratings / env.min_item_ratings"
        )
    kept_ids = (_file_ids(user_ids, users[keep]), _file_ids(item_ids, items[keep]))
    return _dense(users[keep]), _dense(items[keep]), ratings[keep], timestamps[keep], kept_ids


def _file_ids(uniques: pd.Index, codes: np.ndarray) -> np.ndarray:
    """The ids, in dense order, of the codes left: integers as int64, labels as str (npz files
    hold no objects)."""
    ids = uniques.to_numpy()[np.unique(codes)]
    return ids.astype(np.int64) if np.issubdtype(ids.dtype, np.integer) else ids.astype(str)


def _indptr(users: np.ndarray, n_users: int) -> np.ndarray:
    """CSR row pointers of rows grouped by user: user u's rows are ``indptr[u]:indptr[u + 1]``."""
    return np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))]).astype(np.int64)


def _features(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_items: int,
    embedding_dim: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``RatingData.item_features`` and ``user_features`` from the training ratings: the SVD
    factors, then each item's training popularity (each user's training activity) scaled to [0, 1]."""
    item_vectors, user_vectors = svd_factors(users, items, ratings, n_users, n_items, embedding_dim, seed)
    return _with_count(item_vectors, items), _with_count(user_vectors, users)


def _with_count(vectors: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``vectors`` with one more coordinate: how often each row occurs in ``index``, over the most."""
    counts = np.bincount(index, minlength=len(vectors))
    scaled = (counts / max(int(counts.max()), 1)).astype(np.float32)
    return np.concatenate([vectors, scaled[:, None]], axis=1).astype(np.float32)


def _k_core(
    users: np.ndarray, items: np.ndarray, keep: np.ndarray, min_user: int, min_item: int
) -> tuple[np.ndarray, int]:
    """Drops rows of rare users and items until none is left, since each drop can make others rare.

    Returns the mask and the number of passes (the last one removes nothing).
    """
    rounds = 0
    while True:
        rounds += 1
        user_counts = np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1)
        item_counts = np.bincount(items[keep], minlength=int(items.max(initial=-1)) + 1)
        kept = keep & (user_counts[users] >= min_user) & (item_counts[items] >= min_item)
        if kept.sum() == keep.sum():
            return kept, rounds
        keep = kept


def _dense(codes: np.ndarray) -> np.ndarray:
    """Renumbers codes 0..k-1 keeping their order (ids were sorted, so indices follow the ids)."""
    present = np.zeros(int(codes.max()) + 1, dtype=bool)
    present[codes] = True
    return (np.cumsum(present) - 1)[codes].astype(np.int64)


def _split(
    users: np.ndarray,
    timestamps: np.ndarray,
    n_users: int,
    test_fraction: float,
    seed: int,
    stats: dict[str, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Orders each user's ratings and marks the last ones as test.

    A user whose every rating has a timestamp is ordered by time, ties kept in file order; any
    other user (no timestamps, or some missing, as in the ML-1M rebuild) gets a random order from
    ``seed``. The test share is ``test_fraction * n`` rounded half up, then clipped to [1, n - 1]
    so that each user keeps at least one training and one test rating.

    Returns the test mask in the new order and the order (a permutation of the rows).
    """
    missing = np.bincount(users, weights=np.isnan(timestamps), minlength=n_users)
    timed = missing == 0
    noise = np.random.default_rng(seed).random(len(users))
    sort_key = np.where(timed[users], timestamps, noise)
    order = np.lexsort((np.arange(len(users)), sort_key, users))
    counts = np.bincount(users, minlength=n_users)
    # The epsilon keeps e.g. 0.3 * 5 = 1.4999999999999998 rounding up as intended.
    n_test = np.clip(np.floor(counts * test_fraction + 0.5 + 1e-9).astype(np.int64), 1, counts - 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_users = users[order]
    rank = np.arange(len(users)) - starts[sorted_users]
    is_test = rank >= (counts - n_test)[sorted_users]
    stats["users_with_timestamps"] = float(timed.sum())
    return is_test, order


def svd_factors(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_items: int,
    dim: int,
    seed: int,
    power_iterations: int = 10,
    oversampling: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """(item vectors, user vectors) from one truncated SVD of the training ratings, each vector
    scaled to unit L2 norm.

    The matrix holds rating minus the global training mean where a rating exists and 0 elsewhere
    (PureSVD's "unknown = average"). An item's vector is its row of V * S for the top ``dim``
    singular triplets: its centred rating column projected onto the top user factors, so the
    cosine of two vectors approximates the cosine of the two items' rating columns. A user's vector
    is its row of U * S from the same triplets (the DRR state multiplies the two). The SVD is a
    seeded randomized one (Halko, Martinsson and Tropp 2011) on a sparse matrix, well under a
    second on ML-1M where a dense SVD would take minutes. Each component's sign is fixed so its
    largest item entry is positive (in U and V alike), so that another LAPACK build cannot flip a
    component. Unit norms put every coordinate in [-1, 1] and leave it to the popularity coordinate,
    not the vector length, to say how often an item was rated; items (users) with no training rating
    get the zero vector, and columns beyond the matrix rank stay zero.
    """
    rank = min(dim, n_users, n_items)
    width = min(rank + oversampling, n_users, n_items)
    centred = ratings - ratings.mean()
    matrix = _csr(users, items, centred, n_users, n_items)
    transposed = _csr(items, users, centred, n_items, n_users)
    generator = torch.Generator().manual_seed(seed)
    probe = torch.randn(n_items, width, generator=generator, dtype=torch.float64)
    # All dense algebra stays in torch: numpy's BLAS threads and torch's OpenMP threads stall
    # each other when they alternate (a 6040 x 48 QR went from 15 ms to 700 ms).
    basis = torch.linalg.qr(matrix @ probe).Q
    for _ in range(power_iterations):
        item_basis = torch.linalg.qr(transposed @ basis).Q
        basis = torch.linalg.qr(matrix @ item_basis).Q
    projected = (transposed @ basis).T  # basis^T @ matrix, (width, n_items)
    u_small, singular, vt = torch.linalg.svd(projected, full_matrices=False)
    vectors = (vt[:rank].T * singular[:rank]).numpy()
    user_vectors = ((basis @ u_small[:, :rank]) * singular[:rank]).numpy()
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(rank)])
    signs = np.where(signs == 0, 1.0, signs)
    return _unit_rows(vectors * signs, dim), _unit_rows(user_vectors * signs, dim)


def _unit_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero), padded with zero columns to ``dim``, float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 1e-12)
    out = np.zeros((len(vectors), dim), dtype=np.float32)
    out[:, : vectors.shape[1]] = vectors
    return out


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> torch.Tensor:
    """A float64 CSR matrix; CSR products run about 3x faster than COO ones on the CPU."""
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(indptr),
            torch.from_numpy(cols[order]),
            torch.from_numpy(values[order]),
            (n_rows, n_cols),
            check_invariants=False,
        )
