"""Generates the tiny rating dataset that ships with the package (env=tiny_ratings).

It is synthetic, made here from a seeded latent-factor model, so it can be redistributed, unlike
MovieLens. It is a table (``ratings.tsv.gz``: user, item, rating 1-5, timestamp, tab-separated, no
header) with enough structure for a policy to beat random: users like items whose factors align
with theirs, and popular items are rated more often.

    python scripts/make_tiny_ratings.py --dest src/macs_exp/data/assets/tiny-ratings
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np


def generate(users: int, items: int, per_user: int, factors: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    user_f = rng.normal(size=(users, factors)) / np.sqrt(factors)
    item_f = rng.normal(size=(items, factors))
    popularity = rng.zipf(1.6, size=items).clip(max=50).astype(float)
    lines = []
    clock = 880_000_000
    for u in range(users):
        count = int(rng.integers(per_user // 2, per_user * 3 // 2))
        chosen = rng.choice(items, size=count, replace=False, p=popularity / popularity.sum())
        affinity = item_f[chosen] @ user_f[u]
        ratings = np.clip(np.rint(3.2 + 1.4 * affinity + rng.normal(scale=0.6, size=count)), 1, 5)
        for i, r in zip(chosen, ratings, strict=True):
            clock += int(rng.integers(1, 5000))
            lines.append(f"{u + 1}\t{i + 1}\t{int(r)}\t{clock}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--users", type=int, default=150)
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--per-user", type=int, default=30)
    parser.add_argument("--factors", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lines = generate(args.users, args.items, args.per_user, args.factors, args.seed)
    args.dest.mkdir(parents=True, exist_ok=True)
    path = args.dest / "ratings.tsv.gz"
    # mtime=0 keeps the archive byte-identical from run to run.
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode())
    print(f"wrote {len(lines)} ratings to {path}")


if __name__ == "__main__":
    main()
