"""A tiny dataset in MovieLens-100K's layout with its side files (u.data, u.item, u.user), made
from a seed, so that agents that walk a knowledge graph can run end to end in tests without
the real (uncommittable) files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

OCCUPATIONS = ("writer", "engineer", "student", "other")


def write_ml100k(
    folder: Path, n_users: int = 30, n_items: int = 40, per_user: int = 15, seed: int = 0
) -> Path:
    """Writes the three files to ``folder`` and returns it. Every user rates ``per_user``
    distinct items; users of even id like low item ids (4-5 stars) and odd ones high ids, so
    that a graph walk can learn something; items carry 1-2 of 19 genres and a year (item 1 has
    none, as ML-100k's undated movie)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for user in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False)
        for k, item in enumerate(items):
            likes = (item <= n_items // 2) == (user % 2 == 0)
            rating = int(rng.integers(4, 6)) if likes else int(rng.integers(1, 4))
            lines.append(f"{user}\t{item}\t{rating}\t{880000000 + 1000 * user + k}\n")
    (folder / "u.data").write_text("".join(lines))
    movies = []
    for item in range(1, n_items + 1):
        flags = ["0"] * 19
        for genre in {1 + item % 18, 1 + (item * 7) % 18}:
            flags[genre] = "1"
        date = "" if item == 1 else f"01-Jan-{1990 + item % 6}"
        movies.append(f"{item}|Movie {item} ({1990 + item % 6})|{date}||http://x|{'|'.join(flags)}\n")
    (folder / "u.item").write_bytes("".join(movies).encode("latin-1"))
    users = []
    for u in range(1, n_users + 1):
        zip_code = "T8K1A" if u == 3 else str(10000 + 1000 * u)
        users.append(f"{u}|{15 + 3 * u}|{'MF'[u % 2]}|{OCCUPATIONS[u % len(OCCUPATIONS)]}|{zip_code}\n")
    (folder / "u.user").write_text("".join(users))
    return folder
