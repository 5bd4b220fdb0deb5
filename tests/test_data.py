"""The rating-data layer on tiny files written in each dataset's raw format."""

from __future__ import annotations

import gzip
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_script
from macs_exp.data import DataError, RatingData, load_rating_data, read_ratings, resolve_source
from macs_exp.data.config import DataConfig
from macs_exp.data.preprocess import svd_factors
from macs_exp.envs.config import RatingEnvConfig, TableConfig

NAN = math.nan


def table_cfg(**overrides: Any) -> TableConfig:
    fields: dict[str, Any] = dict(
        file="ratings.csv",
        sep=",",
        user_col=0,
        item_col=1,
        rating_col=2,
        timestamp_col=3,
        header=False,
        encoding="utf-8",
    )
    return TableConfig(**{**fields, **overrides})


def env_cfg(data_dir: Path, fmt: str, **overrides: Any) -> RatingEnvConfig:
    fields: dict[str, Any] = dict(
        name=fmt,
        id="MACS/Rating-v0",
        num_envs=4,
        kwargs={},
        data_dir=str(data_dir),
        format=fmt,
        table=table_cfg(),
        positive_threshold=4.0,
        keep_implicit=False,
        min_user_ratings=1,
        min_item_ratings=1,
        test_fraction=0.2,
        embedding_dim=4,
        episode_length=10,
        state_size=10,
        reward="binary",
    )
    return RatingEnvConfig(**{**fields, **overrides})


def data_cfg(tmp_path: Path, on_bad_rows: str = "error", split_seed: int = 0) -> DataConfig:
    return DataConfig(on_bad_rows=on_bad_rows, cache_dir=str(tmp_path / "cache"), split_seed=split_seed)


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def read(cfg: RatingEnvConfig, on_bad_rows: str = "error") -> tuple[pd.DataFrame, dict[str, int]]:
    return read_ratings(resolve_source(cfg), on_bad_rows)


def rows(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """The frame as plain tuples, NaN timestamps as None (NaN != NaN would defeat ==)."""
    return [
        (u, i, r, None if math.isnan(t) else t)
        for u, i, r, t in frame[["user", "item", "rating", "timestamp"]].itertuples(index=False)
    ]


ML100K = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
ML100K_ROWS = [(196, 242, 3.0, 881250949.0), (186, 302, 3.0, 891717742.0), (22, 377, 1.0, 878887116.0)]


# --- loaders: raw formats ---------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_ml100k_u_data(tmp_path: Path, gz: bool) -> None:
    write(tmp_path / "u.data", ML100K, gz)
    frame, counts = read(env_cfg(tmp_path, "ml100k"))
    assert rows(frame) == ML100K_ROWS
    assert frame["user"].dtype == np.int64 and frame["item"].dtype == np.int64
    assert counts == {"rows_read": 3, "bad_rows_skipped": 0}


@pytest.mark.parametrize("gz", [False, True])
def test_ml1m_ratings_dat(tmp_path: Path, gz: bool) -> None:
    write(
        tmp_path / "ratings.dat", b"1::1193::5::978300760\n1::661::3::978302109\n2::3408::4::978300275\n", gz
    )
    # A latin-1 side file next to it must not matter.
    write(
        tmp_path / "movies.dat", "1::Toy Story (1995)::Animation\n2::Café (1999)::Drama\n".encode("latin-1")
    )
    frame, _ = read(env_cfg(tmp_path, "ml1m"))
    assert rows(frame) == [
        (1, 1193, 5.0, 978300760.0),
        (1, 661, 3.0, 978302109.0),
        (2, 3408, 4.0, 978300275.0),
    ]


BX = (
    '"User-ID";"ISBN";"Book-Rating"\r\n'
    '"276725";"034545104X";"0"\r\n'
    '"276726";"0155061224";"5"\r\n'
    '"276727";"12;34";"7"\r\n'
    '"276727";"ab\\"c";"10"\r\n'
    '"276728";"A&amp;B";"0"\r\n'
    '"276728";"978é";"8"\r\n'
).encode("latin-1")
BX_ROWS = [
    (276725, "034545104X", 0.0, None),
    (276726, "0155061224", 5.0, None),
    (276727, "12;34", 7.0, None),
    (276727, 'ab"c', 10.0, None),
    (276728, "A&amp;B", 0.0, None),
    (276728, "978é", 8.0, None),
]


@pytest.mark.parametrize("gz", [False, True])
def test_bookcrossing_csv_quoting_escapes_and_latin1(tmp_path: Path, gz: bool) -> None:
    write(tmp_path / "BX-Book-Ratings.csv", BX, gz)
    frame, counts = read(env_cfg(tmp_path, "bookcrossing"))
    # Leading zeros survive (ISBNs are labels), ';' inside quotes is data, \" is a quote.
    assert rows(frame) == BX_ROWS
    assert counts["rows_read"] == 6


def test_bookcrossing_bad_row_is_found_by_the_quote_aware_scan(tmp_path: Path) -> None:
    bad = BX.replace(b'"276727";"12;34"', b'"2767x7";"12;34"')
    write(tmp_path / "BX-Book-Ratings.csv", bad)
    with pytest.raises(DataError, match=r"BX-Book-Ratings\.csv: line 4: user '2767x7' is not an integer"):
        read(env_cfg(tmp_path, "bookcrossing"))
    frame, counts = read(env_cfg(tmp_path, "bookcrossing"), "skip")
    assert rows(frame) == BX_ROWS[:2] + BX_ROWS[3:]
    assert counts == {"rows_read": 6, "bad_rows_skipped": 1}


def test_bookcrossing_implicit_zeros_dropped_unless_kept(tmp_path: Path) -> None:
    write(tmp_path / "BX-Book-Ratings.csv", BX)
    # Users need 2 ratings (one to train, one to test): without the 0s only 276727 has them.
    explicit = load_rating_data(env_cfg(tmp_path, "bookcrossing", positive_threshold=7), data_cfg(tmp_path))
    assert explicit.stats["implicit_dropped"] == 2
    assert explicit.stats["users_before_filter"] == 3
    assert (explicit.n_users, explicit.n_items, explicit.rating_min, explicit.rating_max) == (1, 2, 7.0, 10.0)
    kept = load_rating_data(env_cfg(tmp_path, "bookcrossing", keep_implicit=True), data_cfg(tmp_path))
    assert "implicit_dropped" not in kept.stats
    assert (kept.n_users, kept.n_items, kept.rating_min, kept.rating_max) == (2, 4, 0.0, 10.0)


def test_douban_user_book_dat(tmp_path: Path) -> None:
    write(tmp_path / "user_book.dat", b"1\t7\t4\n1\t8\t5\n2\t7\t3\n")
    frame, _ = read(env_cfg(tmp_path, "douban_book"))
    assert rows(frame) == [(1, 7, 4.0, None), (1, 8, 5.0, None), (2, 7, 3.0, None)]


# --- loaders: generic tables --------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_table_with_header_names_and_empty_timestamps(tmp_path: Path, gz: bool) -> None:
    text = b"user_id,item_idx,movie_id,rating,timestamp\n1,5,5,4,978300760\n3000,9,,1,\n3000,10,10,3,\n"
    write(tmp_path / "sub" / "all.csv", text, gz)
    table = table_cfg(
        file="sub/all.csv",
        user_col="user_id",
        item_col="item_idx",
        rating_col="rating",
        timestamp_col="timestamp",
        header=True,
    )
    frame, _ = read(env_cfg(tmp_path, "table", table=table))
    assert rows(frame) == [(1, 5, 4.0, 978300760.0), (3000, 9, 1.0, None), (3000, 10, 3.0, None)]


def test_table_by_position_without_header_or_timestamp(tmp_path: Path) -> None:
    write(tmp_path / "r.tsv", b"u1\tx\t2.5\tjunk\nu2\ty\t4\tjunk\n")
    # "\t" typed on a command line arrives as backslash-t.
    table = table_cfg(file="r.tsv", sep="\\t", user_col=0, item_col=1, rating_col=2, timestamp_col=None)
    frame, _ = read(env_cfg(tmp_path, "table", table=table))
    assert rows(frame) == [("u1", "x", 2.5, None), ("u2", "y", 4.0, None)]


def test_table_unknown_column_name_lists_the_header(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", b"user,item,stars\n1,2,3\n")
    table = table_cfg(user_col="user", item_col="item", rating_col="rating", timestamp_col=None, header=True)
    with pytest.raises(DataError, match=r"no column named 'rating'.*\['user', 'item', 'stars'\]"):
        read(env_cfg(tmp_path, "table", table=table))


def test_table_short_row_missing_only_its_optional_timestamp_is_bad(tmp_path: Path) -> None:
    # pandas pads the short line 3 with NaN, which would pass as "no timestamp".
    write(tmp_path / "ratings.csv", b"1,2,3,100\n1,3,4,\n2,2,5\n")
    with pytest.raises(DataError, match=r"ratings\.csv: line 3: expected 4 fields separated by ',', found 3"):
        read(env_cfg(tmp_path, "table"))


# --- bad rows and missing files ------------------------------------------------------------


def test_bad_rows_name_file_line_and_fix(tmp_path: Path) -> None:
    text = b"1\t10\t4\t100\n1\t11\t5\t101\t9\n2\t10\tgood\t102\n2\t11\t3\t103\n"
    write(tmp_path / "u.data", text)
    with pytest.raises(DataError) as err:
        read(env_cfg(tmp_path, "ml100k"))
    message = str(err.value)
    assert str(tmp_path / "u.data") in message
    assert "line 2: expected 4 fields separated by '\\t', found 5" in message
    assert "2 malformed row(s)" in message
    assert "data.on_bad_rows=skip" in message


def test_skipped_bad_rows_are_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = b"1::10::4::100\n1::11::5\n2::10::x::102\n\n1::11::3::103\n3::1.5::3::104\n"
    text += b"2::10::5::105\n2::11::2::106\n"
    write(tmp_path / "ratings.dat", text)
    with pytest.raises(DataError, match=r"line 2: expected 4 fields"):
        read(env_cfg(tmp_path, "ml1m"))
    with caplog.at_level(logging.WARNING, logger="macs_exp"):
        data = load_rating_data(env_cfg(tmp_path, "ml1m"), data_cfg(tmp_path, "skip"))
    assert data.stats["bad_rows_skipped"] == 3
    assert data.stats["rows_read"] == 7
    assert any(
        "skipped 3 malformed row(s)" in r.getMessage() and "line 2" in r.getMessage() for r in caplog.records
    )
    frame, _ = read(env_cfg(tmp_path, "ml1m"), "skip")
    assert rows(frame) == [(1, 10, 4.0, 100.0), (1, 11, 3.0, 103.0), (2, 10, 5.0, 105.0), (2, 11, 2.0, 106.0)]


def test_ratings_outside_the_declared_scale_are_bad_rows(tmp_path: Path) -> None:
    write(tmp_path / "u.data", b"1\t10\t4\t100\n1\t11\t9\t101\n2\t10\t5\t102\n2\t11\t0\t103\n")
    with pytest.raises(DataError) as err:
        read(env_cfg(tmp_path, "ml100k"))
    message = str(err.value)
    assert f"{tmp_path / 'u.data'}: line 2: rating '9' is outside the dataset's rating scale 1-5" in message
    assert "2 malformed row(s)" in message and "data.on_bad_rows=skip" in message
    frame, counts = read(env_cfg(tmp_path, "ml100k"), "skip")
    assert rows(frame) == [(1, 10, 4.0, 100.0), (2, 10, 5.0, 102.0)]
    assert counts == {"rows_read": 4, "bad_rows_skipped": 2}
    # BookCrossing's 0 (implicit) is on its scale, 11 is not; a generic table declares no scale.
    write(tmp_path / "BX-Book-Ratings.csv", b'"User-ID";"ISBN";"Book-Rating"\n"1";"a";"0"\n"1";"b";"11"\n')
    with pytest.raises(DataError, match=r"line 3: rating '11' is outside the dataset's rating scale 0-10"):
        read(env_cfg(tmp_path, "bookcrossing"))
    write(tmp_path / "ratings.csv", b"1,2,9,100\n")
    assert rows(read(env_cfg(tmp_path, "table"))[0]) == [(1, 2, 9.0, 100.0)]


def test_missing_folder_and_file_say_how_to_get_them(tmp_path: Path) -> None:
    absent = tmp_path / "nowhere" / "ml-100k"
    with pytest.raises(DataError) as err:
        resolve_source(env_cfg(absent, "ml100k"))
    assert str(absent) in str(err.value) and "u.data" in str(err.value)
    assert f"scripts/download_data.py ml100k --dest {absent}" in str(err.value)
    absent.mkdir(parents=True)
    with pytest.raises(DataError) as err:
        resolve_source(env_cfg(absent, "douban_book"))
    assert str(absent / "user_book.dat") in str(err.value)
    assert f"scripts/download_data.py douban_book --dest {absent}" in str(err.value)
    with pytest.raises(DataError, match=r"ratings\.csv\.gz exists"):
        resolve_source(env_cfg(absent, "table"))
    with pytest.raises(DataError, match=r"unknown env\.format='ml20m'"):
        resolve_source(env_cfg(absent, "ml20m"))


# --- preprocessing ---------------------------------------------------------------------------


def douban_file(path: Path, ratings: list[tuple[int, int, int]]) -> None:
    write(path / "user_book.dat", "".join(f"{u}\t{i}\t{r}\n" for u, i, r in ratings).encode())


def all_items(data: RatingData, user: int) -> tuple[list[int], list[int]]:
    train = data.train_items[data.train_indptr[user] : data.train_indptr[user + 1]].tolist()
    test = data.test_items[data.test_indptr[user] : data.test_indptr[user + 1]].tolist()
    return train, test


def test_filtering_repeats_until_stable(tmp_path: Path) -> None:
    # With >= 3 ratings per user and >= 2 per item: item 99 (one rating) goes, so user 3 drops to
    # 2 ratings and goes, so item 30 drops to 1 rating and goes. Users 1, 2 and items 10, 20, 40 stay.
    ratings = [(1, 10, 5), (1, 20, 4), (1, 30, 3), (1, 40, 2)]
    ratings += [(2, 10, 1), (2, 20, 2), (2, 40, 5)]
    ratings += [(3, 30, 4), (3, 20, 3), (3, 99, 4)]
    douban_file(tmp_path, ratings)
    cfg = env_cfg(tmp_path, "douban_book", min_user_ratings=3, min_item_ratings=2, test_fraction=0.3)
    data = load_rating_data(cfg, data_cfg(tmp_path))
    assert (data.n_users, data.n_items) == (2, 3)
    assert data.stats["users_before_filter"] == 3 and data.stats["items_before_filter"] == 5
    assert data.stats["filter_rounds"] == 4
    # Dense ids follow the sorted original ids: items 10, 20, 40 -> 0, 1, 2.
    for user in range(2):
        train, test = all_items(data, user)
        assert sorted(train + test) == [0, 1, 2] and len(test) == 1
    assert data.stats["train_ratings"] + data.stats["test_ratings"] == 6


def test_chronological_split_holds_out_each_users_latest(tmp_path: Path) -> None:
    ratings = []
    # User 1: 8 ratings in shuffled file order (0.2 * 8 = 1.6 -> 2 test); user 2: 2 ratings (-> 1);
    # user 3: 5 ratings, two tied at the latest time: the later line wins the tie.
    for item, ts in [(3, 30), (1, 10), (8, 80), (2, 20), (7, 70), (5, 50), (4, 40), (6, 60)]:
        ratings.append(f"1\t{item}\t4\t{ts}")
    ratings += ["2\t2\t5\t900", "2\t1\t3\t100"]
    ratings += [f"3\t{i}\t4\t{t}" for i, t in [(1, 1), (5, 9), (2, 2), (4, 9), (3, 3)]]
    write(tmp_path / "u.data", ("\n".join(ratings) + "\n").encode())
    data = load_rating_data(env_cfg(tmp_path, "ml100k"), data_cfg(tmp_path))
    # Dense item i is original item i + 1.
    assert all_items(data, 0) == ([0, 1, 2, 3, 4, 5], [6, 7])
    assert all_items(data, 1) == ([0], [1])
    assert all_items(data, 2) == ([0, 1, 2, 4], [3])
    np.testing.assert_array_equal(data.train_indptr, [0, 6, 7, 11])
    np.testing.assert_array_equal(data.test_indptr, [0, 2, 3, 4])
    assert data.train_ratings.dtype == np.float32
    assert data.stats["users_with_timestamps"] == 3


def test_rounding_is_half_up_and_keeps_one_of_each(tmp_path: Path) -> None:
    ratings = [(1, i, 4) for i in range(3)] + [(2, i, 4) for i in range(10)]
    douban_file(tmp_path, ratings)
    data = load_rating_data(env_cfg(tmp_path, "douban_book", test_fraction=0.5), data_cfg(tmp_path))
    # 0.5 * 3 = 1.5 -> 2 test of 3; 0.5 * 10 -> 5.
    np.testing.assert_array_equal(np.diff(data.test_indptr), [2, 5])
    high = load_rating_data(env_cfg(tmp_path, "douban_book", test_fraction=0.99), data_cfg(tmp_path))
    np.testing.assert_array_equal(np.diff(high.train_indptr), [1, 1])


def test_random_split_is_seeded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    douban_file(tmp_path, [(u, i, int(rng.integers(1, 6))) for u in range(10) for i in range(20)])
    cfg = env_cfg(tmp_path, "douban_book")
    first = load_rating_data(cfg, DataConfig("error", str(tmp_path / "c1"), split_seed=1))
    again = load_rating_data(cfg, DataConfig("error", str(tmp_path / "c2"), split_seed=1))
    other = load_rating_data(cfg, DataConfig("error", str(tmp_path / "c3"), split_seed=2))
    np.testing.assert_array_equal(first.test_items, again.test_items)
    np.testing.assert_array_equal(first.item_features, again.item_features)
    assert not np.array_equal(first.test_items, other.test_items)
    for data in (first, other):
        np.testing.assert_array_equal(np.diff(data.test_indptr), np.full(10, 4))
        for user in range(10):
            train, test = all_items(data, user)
            assert sorted(train + test) == list(range(20))


def test_users_without_all_timestamps_are_shuffled(tmp_path: Path) -> None:
    lines = ["user,item,rating,ts"] + [f"1,{i},4,{100 - i}" for i in range(10)]
    lines += [f"2,{i},4," for i in range(10)] + [f"3,{i},4,{i}" for i in range(9)] + ["3,9,4,"]
    write(tmp_path / "ratings.csv", ("\n".join(lines) + "\n").encode())
    table = table_cfg(user_col="user", item_col="item", rating_col="rating", timestamp_col="ts", header=True)
    cfg = env_cfg(tmp_path, "table", table=table)
    runs = [
        load_rating_data(cfg, DataConfig("error", str(tmp_path / f"c{s}"), split_seed=s)) for s in range(4)
    ]
    # User 1 is timed: its latest are items 1 and 0 (timestamps 99, 100), whatever the seed.
    assert all(all_items(d, 0)[1] == [1, 0] for d in runs)
    assert runs[0].stats["users_with_timestamps"] == 1
    held_out = {tuple(all_items(d, u)[1]) for d in runs for u in (1, 2)}
    assert len(held_out) > 2


def test_repeated_pairs_keep_the_last_row(tmp_path: Path) -> None:
    douban_file(tmp_path, [(1, 1, 2), (1, 2, 3), (1, 1, 5), (1, 3, 4), (2, 1, 1), (2, 2, 2)])
    data = load_rating_data(env_cfg(tmp_path, "douban_book"), data_cfg(tmp_path))
    assert data.stats["duplicates_dropped"] == 1
    ratings = {}
    for user in range(2):
        lo, hi = data.train_indptr[user], data.train_indptr[user + 1]
        t_lo, t_hi = data.test_indptr[user], data.test_indptr[user + 1]
        items = np.concatenate([data.train_items[lo:hi], data.test_items[t_lo:t_hi]])
        values = np.concatenate([data.train_ratings[lo:hi], data.test_ratings[t_lo:t_hi]])
        ratings.update({(user, int(i)): float(v) for i, v in zip(items, values, strict=True)})
    assert ratings == {(0, 0): 5.0, (0, 1): 3.0, (0, 2): 4.0, (1, 0): 1.0, (1, 1): 2.0}


def test_item_features_shape_popularity_and_structure(tmp_path: Path) -> None:
    # Two taste groups: users 0-9 love items 0-5 and hate 6-11, users 10-19 the reverse.
    ratings = [(u, i, 5 if (u < 10) == (i < 6) else 1) for u in range(20) for i in range(12)]
    ratings += [(u, 12, 3) for u in range(3)]  # a rarely rated item
    douban_file(tmp_path, ratings)
    cfg = env_cfg(tmp_path, "douban_book", embedding_dim=3, positive_threshold=4)
    data = load_rating_data(cfg, data_cfg(tmp_path))
    features = data.item_features
    assert features.shape == (13, 4) and features.dtype == np.float32
    popularity = np.bincount(data.train_items, minlength=13)
    # The last coordinate is the training popularity, scaled so that the most rated item has 1.
    np.testing.assert_array_equal(features[:, -1], (popularity / popularity.max()).astype(np.float32))
    assert features[12, -1] < 1.0
    np.testing.assert_allclose(np.linalg.norm(features[:, :-1], axis=1), 1.0, atol=1e-5)
    # The top component splits the groups; the vectors' cosines follow the tastes.
    assert (features[:6, 0] < 0).all() and (features[6:12, 0] > 0).all()
    cos = features[:, :-1] @ features[:, :-1].T
    assert cos[:6, :6].min() > 0.5 and cos[6:12, 6:12].min() > 0.5 and cos[:6, 6:12].max() < -0.5
    # User vectors from the same SVD: unit factors, activity last, and a user's vector points
    # towards the items of its taste (U and V share the component signs).
    users = data.user_features
    assert users is not None and users.shape == (20, 4) and users.dtype == np.float32
    activity = np.diff(data.train_indptr)
    np.testing.assert_array_equal(users[:, -1], (activity / activity.max()).astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(users[:, :-1], axis=1), 1.0, atol=1e-5)
    taste = users[:, :-1] @ features[:12, :-1].T
    loves = np.array([[(u < 10) == (i < 6) for i in range(12)] for u in range(20)])
    assert (taste[loves] > 0.5).all() and (taste[~loves] < -0.5).all()
    assert data.stats["positives"] == 120
    assert data.positive_threshold == 4.0


def test_svd_factors_pad_beyond_rank_and_zero_unrated_items() -> None:
    users, items = np.array([0, 0, 1]), np.array([0, 1, 1])
    factors, user_factors = svd_factors(users, items, np.array([5.0, 1.0, 4.0]), 2, 3, 4, seed=0)
    assert user_factors.shape == (2, 4)
    np.testing.assert_array_equal(user_factors[:, 2:], 0.0)
    assert factors.shape == (3, 4) and factors.dtype == np.float32
    np.testing.assert_array_equal(factors[:, 2:], 0.0)  # rank 2 at most
    np.testing.assert_array_equal(factors[2], 0.0)  # item 2 has no training rating
    np.testing.assert_allclose(np.linalg.norm(factors[:2], axis=1), 1.0, atol=1e-6)


def test_invalid_settings_fail_clearly(tmp_path: Path) -> None:
    douban_file(tmp_path, [(1, 1, 3), (1, 2, 4)])
    with pytest.raises(DataError, match=r"test_fraction=1\.0"):
        load_rating_data(env_cfg(tmp_path, "douban_book", test_fraction=1.0), data_cfg(tmp_path))
    with pytest.raises(DataError, match="no ratings left"):
        load_rating_data(env_cfg(tmp_path, "douban_book", min_item_ratings=2), data_cfg(tmp_path))
    with pytest.raises(DataError, match="on_bad_rows='ignore'"):
        load_rating_data(env_cfg(tmp_path, "douban_book"), data_cfg(tmp_path, "ignore"))


# --- cache -------------------------------------------------------------------------------------


def cache_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [r.getMessage() for r in caplog.records]
    return ["hit" if "cache hit" in m else "miss" for m in messages if "cache hit" in m or "cache miss" in m]


def test_cache_hits_and_misses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    ratings = [(u, i, int(rng.integers(1, 6))) for u in range(8) for i in range(12) if rng.random() < 0.7]
    douban_file(tmp_path, ratings)
    cfg, dcfg = env_cfg(tmp_path, "douban_book"), data_cfg(tmp_path)
    with caplog.at_level(logging.INFO, logger="macs_exp"):
        cold = load_rating_data(cfg, dcfg)
        warm = load_rating_data(cfg, dcfg)
        renamed = load_rating_data(env_cfg(tmp_path, "douban_book", name="other"), dcfg)
        load_rating_data(env_cfg(tmp_path, "douban_book", min_item_ratings=2), dcfg)
        load_rating_data(env_cfg(tmp_path, "douban_book", embedding_dim=3), dcfg)
        load_rating_data(cfg, data_cfg(tmp_path, split_seed=1))
        path = tmp_path / "user_book.dat"
        first, rest = path.read_text().split("\n", 1)
        user, item, rating = first.split("\t")
        path.write_text(f"{user}\t{item}\t{int(rating) % 5 + 1}\n{rest}")
        load_rating_data(cfg, dcfg)
    assert cache_events(caplog) == ["miss", "hit", "hit", "miss", "miss", "miss", "miss"]
    for field in (
        "item_features",
        "user_features",
        "train_indptr",
        "train_items",
        "train_ratings",
        "test_items",
        "test_ratings",
    ):
        np.testing.assert_array_equal(getattr(cold, field), getattr(warm, field))
        assert getattr(cold, field).dtype == getattr(warm, field).dtype
    assert (warm.n_users, warm.n_items, warm.rating_min, warm.rating_max) == (
        cold.n_users,
        cold.n_items,
        cold.rating_min,
        cold.rating_max,
    )
    assert warm.stats == cold.stats
    assert renamed.name == "other" and warm.name == "douban_book"
    cached = sorted(p.suffix for p in (tmp_path / "cache").iterdir())
    assert cached == [".json"] * 5 + [".npz"] * 5  # and no temporary files left behind


def test_cache_file_names_are_unchanged(tmp_path: Path) -> None:
    # Pinned so that a change to the key is deliberate: a change here orphans every cache already
    # on disk. Last changed by CACHE_VERSION 3 (the file's ids kept).
    douban_file(tmp_path / "douban", [(1, 1, 3), (1, 2, 4), (2, 1, 5), (2, 2, 1)])
    load_rating_data(env_cfg(tmp_path / "douban", "douban_book"), data_cfg(tmp_path))
    write(tmp_path / "table" / "ratings.csv", b"1,1,3,10\n1,2,4,11\n2,1,5,12\n2,2,1,13\n")
    load_rating_data(env_cfg(tmp_path / "table", "table"), data_cfg(tmp_path, split_seed=7))
    names = sorted(p.stem for p in (tmp_path / "cache").glob("*.npz"))
    assert names == ["douban_book-91dbe00cd2c09b250e7a9f64", "table-32baa8030c66a8057a2dd5ed"]


def test_dense_indices_keep_the_files_ids(tmp_path: Path) -> None:
    # Item 7 is rated once and falls to the 2-core, so the dense items are 3 and 9, in id order;
    # the ids survive the cache, as the knowledge graph joins side files on them.
    douban_file(tmp_path, [(5, 3, 3), (5, 9, 4), (2, 3, 5), (2, 9, 1), (2, 7, 2)])
    cfg = env_cfg(tmp_path, "douban_book", min_item_ratings=2)
    for data in (load_rating_data(cfg, data_cfg(tmp_path)), load_rating_data(cfg, data_cfg(tmp_path))):
        assert data.user_ids is not None and data.item_ids is not None
        assert data.user_ids.tolist() == [2, 5] and data.item_ids.tolist() == [3, 9]
        assert data.item_ids.dtype == np.int64


def test_unreadable_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    douban_file(tmp_path, [(1, 1, 3), (1, 2, 4), (2, 1, 5), (2, 2, 1)])
    cfg, dcfg = env_cfg(tmp_path, "douban_book"), data_cfg(tmp_path)
    first = load_rating_data(cfg, dcfg)
    (npz,) = (tmp_path / "cache").glob("*.npz")
    npz.write_bytes(b"not a zip")
    with caplog.at_level(logging.INFO, logger="macs_exp"):
        again = load_rating_data(cfg, dcfg)
    assert cache_events(caplog) == ["miss"]
    np.testing.assert_array_equal(first.item_features, again.item_features)
    assert load_rating_data(cfg, dcfg).n_users == 2


def test_composed_yaml_configs_load(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from macs_exp.app import compose_config

    # The YAML's 5-core needs 5 ratings per user and per item.
    lines = [f"{u}\t{i}\t{(u + i) % 5 + 1}\t{1000 * u + i}\n" for u in range(1, 7) for i in range(1, 7)]
    write(tmp_path / "u.data", "".join(lines).encode())
    cfg = compose_config(["env=ml100k", f"env.data_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}"])
    data = load_rating_data(cfg.env, cfg.data)
    assert (data.name, data.n_users, data.n_items, data.item_features.shape) == ("ml100k", 6, 6, (6, 33))
    np.testing.assert_array_equal(np.diff(data.test_indptr), np.ones(6))  # 0.2 * 6 = 1.2 -> 1
    expected = {
        "ml100k": ("ml100k", "data/ml-100k", 4.0, 5),
        "ml1m": ("ml1m", "data/ml-1m", 4.0, 5),
        "bookcrossing": ("bookcrossing", "data/bookcrossing", 7.0, 10),
        "douban_book": ("douban_book", "data/douban-book", 4.0, 5),
    }
    for env, (fmt, data_dir, threshold, min_ratings) in expected.items():
        env_cfg_ = OmegaConf.to_object(compose_config([f"env={env}"]).env)
        assert isinstance(env_cfg_, RatingEnvConfig)
        assert (env_cfg_.format, env_cfg_.data_dir, env_cfg_.positive_threshold) == (fmt, data_dir, threshold)
        assert env_cfg_.min_user_ratings == env_cfg_.min_item_ratings == min_ratings
        assert (env_cfg_.test_fraction, env_cfg_.embedding_dim, env_cfg_.keep_implicit) == (0.2, 32, False)


def test_the_shipped_tiny_dataset_is_what_its_script_makes(tmp_path: Path) -> None:
    """The tiny dataset is synthetic and reproducible: its generator rebuilds it byte for byte."""
    proc = run_script("make_tiny_ratings.py", "--dest", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    shipped = REPO / "src" / "macs_exp" / "data" / "assets" / "tiny-ratings" / "ratings.tsv.gz"
    assert (tmp_path / "ratings.tsv.gz").read_bytes() == shipped.read_bytes()
