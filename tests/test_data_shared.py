"""The real shared datasets (../shared/data) load with the counts DATASETS.md gives.

Opt-in (``pytest -m data``); skipped where the shared copy is absent. The YAML overrides used
here are the ones the env YAMLs' comments tell users to type.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from macs_exp.app import compose_config
from macs_exp.data import load_rating_data, read_ratings, resolve_source
from macs_exp.data.loaders import RAW_FORMATS, RatingSource

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared datasets at {SHARED}"),
]


def rating_counts(frame: pd.DataFrame) -> dict[int, int]:
    return {int(k): int(v) for k, v in frame["rating"].value_counts().sort_index().items()}


def test_ml100k(tmp_path: Path) -> None:
    cfg = compose_config(["env=ml100k", f"env.data_dir={SHARED / 'ml-100k'}", f"data.cache_dir={tmp_path}"])
    frame, counts = read_ratings(resolve_source(cfg.env))
    assert counts == {"rows_read": 100_000, "bad_rows_skipped": 0}
    assert (frame["user"].nunique(), frame["item"].nunique()) == (943, 1682)
    assert rating_counts(frame) == {1: 6110, 2: 11370, 3: 27145, 4: 34174, 5: 21201}
    assert (frame["timestamp"].min(), frame["timestamp"].max()) == (874724710, 893286638)
    data = load_rating_data(cfg.env, cfg.data)
    assert (data.n_users, data.n_items, len(data.train_items), len(data.test_items)) == (
        943,
        1349,
        79_438,
        19_849,
    )
    assert data.stats["users_with_timestamps"] == 943
    assert data.item_features.shape == (data.n_items, 33)


def test_ml1m_rebuilt_table(tmp_path: Path) -> None:
    overrides = [
        "env=ml1m",
        "env.format=table",
        f"env.data_dir={SHARED / 'ml-1m'}",
        f"data.cache_dir={tmp_path}",
    ]
    cfg = compose_config(overrides)
    frame, counts = read_ratings(resolve_source(cfg.env))
    assert counts["rows_read"] == 1_000_209
    assert (frame["user"].nunique(), frame["item"].nunique()) == (6040, 3706)
    assert rating_counts(frame) == {1: 56174, 2: 107557, 3: 261197, 4: 348971, 5: 226310}
    assert int(frame["timestamp"].notna().sum()) == 487_650
    data = load_rating_data(cfg.env, cfg.data)
    assert data.stats["users_with_timestamps"] == 2999
    # Every user has >= 20 ratings; the 5-core drops 290 rarely rated items (598 ratings).
    assert (data.n_users, data.n_items, len(data.train_items), len(data.test_items)) == (
        6040,
        3416,
        799_721,
        199_890,
    )
    assert np.isfinite(data.item_features).all()


def test_ml1m_original_half_in_raw_format() -> None:
    source = RatingSource(
        "ml1m", SHARED / "ml-1m" / "ratings_users_0001-2999.dat.gz", RAW_FORMATS["ml1m"].layout
    )
    frame, counts = read_ratings(source)
    assert counts["rows_read"] == 487_650
    assert (frame["user"].min(), frame["user"].max(), frame["item"].nunique()) == (1, 2999, 3615)
    assert rating_counts(frame) == {1: 27472, 2: 53838, 3: 127216, 4: 170579, 5: 108545}


def test_douban_metahin_subset(tmp_path: Path) -> None:
    overrides = [
        "env=douban_book",
        "env.format=table",
        f"env.data_dir={SHARED / 'douban-book'}",
        f"data.cache_dir={tmp_path}",
    ]
    cfg = compose_config(overrides)
    frame, counts = read_ratings(resolve_source(cfg.env))
    assert counts["rows_read"] == 649_381
    assert (frame["user"].nunique(), frame["item"].nunique()) == (10551, 20934)
    assert rating_counts(frame) == {1: 3261, 2: 13865, 3: 142247, 4: 274087, 5: 215921}
    data = load_rating_data(cfg.env, cfg.data)
    assert data.stats["duplicates_dropped"] == 0 and data.stats["users_with_timestamps"] == 0


def test_bookcrossing_format_sample() -> None:
    path = SHARED / "bookcrossing" / "format-samples" / "BX-Book-Ratings.sample.csv"
    frame, counts = read_ratings(RatingSource("bookcrossing", path, RAW_FORMATS["bookcrossing"].layout))
    assert counts == {"rows_read": 99, "bad_rows_skipped": 0}
    assert frame.iloc[0].tolist()[:3] == [276725, "034545104X", 0.0]
    assert frame["rating"].between(0, 10).all()
