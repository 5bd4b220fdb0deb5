"""The schema of the ``data`` group: how rating datasets are read, cached and split."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from macs_exp.data.loaders import ON_BAD_ROWS
from macs_exp.schema import Rules, Schema


@dataclass
class DataConfig(Schema):
    # error | skip: what a malformed row in a data file does.
    on_bad_rows: str = MISSING
    # Preprocessed datasets are cached here, keyed by file hashes and the config that matters.
    cache_dir: str = MISSING
    # Orders the ratings of users without timestamps before the split, and seeds the
    # factorisation. Fixed rather than the run's seed, so all seeds of a table share one split.
    split_seed: int = MISSING

    def rules(self) -> Rules:
        return {"on_bad_rows": (self.on_bad_rows in ON_BAD_ROWS, f"one of {', '.join(ON_BAD_ROWS)}")}
