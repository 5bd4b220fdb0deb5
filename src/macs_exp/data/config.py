"""The schema of the ``data`` group: how rating datasets are read, cached and split."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from macs_exp.data.loaders import ON_BAD_ROWS
from macs_exp.schema import Rules, Schema

# The side-information layouts a knowledge graph can be built from (``macs_exp.data.kg``).
KG_SCHEMAS = ("ml100k", "ml1m", "douban_book", "bookcrossing")


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


@dataclass
class KGConfig(Schema):
    """The ``kg`` group: the knowledge graph of a rating dataset's side files and its TransE
    embeddings, read only by agents that walk a graph (``algo=pgpr``)."""

    # Which side files to read; null takes env.format's (a generic table has none: name one).
    schema: str | None = MISSING
    # TransE (upstream PGPR's train_transe_model.py names in the comments).
    transe_dim: int = MISSING  # embed_size
    transe_epochs: int = MISSING  # epochs
    transe_batch_size: int = MISSING  # batch_size
    transe_learning_rate: float = MISSING  # lr, linearly decayed to 1e-4 of itself
    transe_negatives: int = MISSING  # num_neg_samples
    transe_clip: float = MISSING  # max_grad_norm
    transe_seed: int = MISSING  # fixed, so that every run seed shares one embedding

    def rules(self) -> Rules:
        return {
            "schema": (
                self.schema is None or self.schema in KG_SCHEMAS,
                f"null or one of {', '.join(KG_SCHEMAS)}",
            ),
            "transe_dim": (self.transe_dim >= 1, "at least 1"),
            "transe_epochs": (self.transe_epochs >= 0, "0 or more"),
            "transe_batch_size": (self.transe_batch_size >= 1, "at least 1"),
            "transe_learning_rate": (self.transe_learning_rate > 0, "positive"),
            "transe_negatives": (self.transe_negatives >= 1, "at least 1"),
            "transe_clip": (self.transe_clip > 0, "positive"),
        }
