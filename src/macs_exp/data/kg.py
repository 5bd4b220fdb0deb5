"""The knowledge graph of a rating dataset, for agents that walk a graph to find and explain what
they recommend (PGPR: ``algo=pgpr``; the schemas are those of ``shared/methods/PGPR.md`` 6.1).

Entities have global ids grouped by type: the users first (0..n_users-1, the dataset's dense user
indices, so that an env user is its own entity), then the items (n_users + the dense item index),
then each attribute type of the schema (genre, year, author, ...) in the order its relation comes.
The user-item relation ``liked`` holds the *training* positives only: a test rating turned into an
edge would lead a walk straight to the held-out item it is scored on. Attribute entities exist
only where a user or item of the dataset has them, so the graph has no unreachable nodes.

Every edge is stored in both directions, as upstream PGPR walks relations backwards as well (a
user's occupation, then the other users with it). The side files are read by
:mod:`macs_exp.data.side_info`; the graph is cached under ``data.cache_dir`` beside the dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from macs_exp.cache import atomic_write, content_key
from macs_exp.data.config import KG_SCHEMAS
from macs_exp.data.dataset import RatingData
from macs_exp.data.loaders import resolve_source
from macs_exp.data.preprocess import cache_params, file_sha256
from macs_exp.data.side_info import SIDE_SCHEMAS, SideInfo, SideRelation, find_side_files
from macs_exp.schema import ConfigError

if TYPE_CHECKING:
    from macs_exp.data.config import DataConfig, KGConfig
    from macs_exp.envs.config import RatingEnvConfig

log = logging.getLogger("macs_exp")

# Relation 0: a walk that stays where it is (its last hop, in 2-hop patterns); no stored edges.
SELF_LOOP = "self_loop"
# Relation 1: user <-> item, the training positives.
LIKED = "liked"
# Bump whenever a change here or in side_info alters what a cached graph contains.
KG_CACHE_VERSION = 1

_CF = (LIKED, LIKED, LIKED)
_MOVIELENS_PATTERNS = (
    _CF,
    (LIKED, "belongs_to", "belongs_to"),
    (LIKED, "released_in", "released_in"),
    ("has_occupation", "has_occupation", LIKED),
    ("in_age_group", "in_age_group", LIKED),
    ("lives_in", "lives_in", LIKED),
    ("has_gender", "has_gender", LIKED),
)
_BOOK_PATTERNS = (
    _CF,
    (LIKED, "written_by", "written_by"),
    (LIKED, "published_by", "published_by"),
    (LIKED, "published_in", "published_in"),
)
# The walks from a user to an item that count as explanations, per schema.
PATTERNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "ml100k": _MOVIELENS_PATTERNS,
    "ml1m": _MOVIELENS_PATTERNS,
    "douban_book": (*_BOOK_PATTERNS, ("located_in", "located_in", LIKED), ("friend", LIKED, SELF_LOOP)),
    "bookcrossing": (
        *_BOOK_PATTERNS,
        ("lives_in", "lives_in", LIKED),
        ("in_age_group", "in_age_group", LIKED),
    ),
}
_ARRAYS = ("type_offsets", "indptr", "neighbors", "edge_relations", "entity_names")
_NAMES = ("entity_types", "relations", "relation_heads", "relation_tails", "patterns")


@dataclass(frozen=True)
class KnowledgeGraph:
    """Typed entities and relations, with each entity's edges as a CSR row over global ids."""

    # ("user", "item", then the attribute types in schema order).
    entity_types: tuple[str, ...]
    # int64 (n_types + 1,): type k holds the ids type_offsets[k]:type_offsets[k + 1].
    type_offsets: np.ndarray
    # relations[0] == SELF_LOOP, relations[1] == LIKED, then the schema's relations.
    relations: tuple[str, ...]
    # Per relation, the type of its head and tail in its canonical direction ("" for SELF_LOOP).
    relation_heads: tuple[str, ...]
    relation_tails: tuple[str, ...]
    # int64: entity e's edges are neighbors[indptr[e]:indptr[e + 1]] with edge_relations alongside,
    # sorted by (relation, neighbor) without repeats; every edge is stored in both directions.
    indptr: np.ndarray
    neighbors: np.ndarray
    edge_relations: np.ndarray
    # Relation-name sequences of length 3 that lead from a user to an item.
    patterns: tuple[tuple[str, ...], ...]
    # str (n_entities,): "user 12", "item 50 Star Wars (1977)", "genre Comedy", ...
    entity_names: np.ndarray
    # Entity and edge counts per type and relation, rows dropped or unmatched, ...
    stats: dict[str, float]

    @property
    def n_users(self) -> int:
        return int(self.type_offsets[1])

    @property
    def n_items(self) -> int:
        return int(self.type_offsets[2] - self.type_offsets[1])

    @property
    def n_entities(self) -> int:
        return int(self.type_offsets[-1])

    def type_of(self, ids: np.ndarray) -> np.ndarray:
        """The type index (into ``entity_types``) of each global id."""
        return np.searchsorted(self.type_offsets, ids, side="right") - 1

    def item_entity(self, items: np.ndarray) -> np.ndarray:
        """The global ids of dense item indices."""
        return np.asarray(items, dtype=np.int64) + self.n_users

    def entity_item(self, ids: np.ndarray) -> np.ndarray:
        """The dense item indices of item entities; a ValueError for any other entity."""
        ids = np.asarray(ids, dtype=np.int64)
        if (self.type_of(ids) != 1).any():
            raise ValueError("entity_item: not every id is an item entity")
        return ids - self.n_users

    def canonical_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(heads, relations, tails): each edge once, from its relation's head type (the lower id
        where both ends have one type, as friends do), sorted by (head, relation, tail)."""
        sources = np.repeat(np.arange(self.n_entities), np.diff(self.indptr))
        types = {name: k for k, name in enumerate(self.entity_types)}
        head_type = np.array([types.get(name, -1) for name in self.relation_heads])
        symmetric = np.array([h == t for h, t in zip(self.relation_heads, self.relation_tails, strict=True)])
        rel = self.edge_relations
        keep = (self.type_of(sources) == head_type[rel]) & (~symmetric[rel] | (sources < self.neighbors))
        return sources[keep], rel[keep], self.neighbors[keep]

    def key(self) -> str:
        """A sha256 of everything the graph holds but its stats: what TransE's cache is keyed by."""
        digest = hashlib.sha256()
        arrays = [np.ascontiguousarray(getattr(self, name), dtype=np.int64) for name in _ARRAYS[:-1]]
        names = {name: getattr(self, name) for name in _NAMES}
        names["shapes"] = [a.shape for a in arrays]
        digest.update(json.dumps(names).encode())
        for array in arrays:
            digest.update(array.tobytes())
        digest.update("\n".join(self.entity_names.tolist()).encode())
        return digest.hexdigest()


def graph_schema(env_cfg: RatingEnvConfig, kg_cfg: KGConfig) -> str:
    """The side-file layout to read: ``kg.schema``, else the one of ``env.format``."""
    if kg_cfg.schema is not None:
        return kg_cfg.schema
    if env_cfg.format in SIDE_SCHEMAS:
        return env_cfg.format
    needs = "; ".join(f"{name}: {', '.join(spec.files)}" for name, spec in SIDE_SCHEMAS.items())
    raise ConfigError(
        f"kg.schema=null is invalid with env.format={env_cfg.format}: this algo needs a knowledge graph, "
        "and a generic table has no side files to build one from. Set kg.schema=<one of "
        f"{', '.join(KG_SCHEMAS)}> if env.data_dir={env_cfg.data_dir} holds that dataset's side files "
        f"({needs})"
    )


def load_knowledge_graph(
    env_cfg: RatingEnvConfig, data_cfg: DataConfig, kg_cfg: KGConfig, data: RatingData
) -> KnowledgeGraph:
    """The graph of ``data`` (loaded by ``load_rating_data`` from the same ``env_cfg`` and
    ``data_cfg``), from ``data.cache_dir`` if possible.

    The cache key holds the ratings' own cache params (the split decides the ``liked`` edges), the
    sha256 of each side file and the schema, so any change to them builds the graph anew.
    """
    schema = graph_schema(env_cfg, kg_cfg)
    paths = find_side_files(schema, Path(env_cfg.data_dir))
    params = {
        "version": KG_CACHE_VERSION,
        "schema": schema,
        "ratings": cache_params(env_cfg, data_cfg, resolve_source(env_cfg)),
        "side_files": {name: file_sha256(path) for name, path in paths.items()},
    }
    npz_path = Path(data_cfg.cache_dir) / f"kg-{schema}-{content_key(params, 24)}.npz"
    cached = _load_cache(npz_path, data)
    if cached is not None:
        log.info("knowledge graph cache hit: %s", npz_path)
        return cached
    log.info(
        "knowledge graph cache miss: %s; building it from %s", npz_path, ", ".join(map(str, paths.values()))
    )
    start = time.perf_counter()
    graph = build_knowledge_graph(schema, data, SIDE_SCHEMAS[schema].read(paths, data_cfg.on_bad_rows))
    _save_cache(graph, npz_path, params)
    log.info(
        "knowledge graph %s: %d entities, %d edges (built in %.1f s)",
        schema,
        graph.n_entities,
        int(graph.stats["edges"]),
        time.perf_counter() - start,
    )
    return graph


@dataclass(frozen=True)
class _Edges:
    """One relation's edges in local indices of their types (canonical direction)."""

    relation: int
    head_type: str
    heads: np.ndarray
    tail_type: str
    tails: np.ndarray


def build_knowledge_graph(schema: str, data: RatingData, side: SideInfo) -> KnowledgeGraph:
    """The graph of ``data`` with ``side``'s relations (read under ``schema``), joined on the
    dataset's file ids: side rows for users or items the dataset does not hold are left out."""
    if data.user_ids is None or data.item_ids is None:
        raise ValueError("build_knowledge_graph needs data.user_ids and data.item_ids (the files' ids)")
    relations = (SELF_LOOP, LIKED, *(rel.name for rel in side.relations))
    unknown = {name for pattern in PATTERNS[schema] for name in pattern} - set(relations)
    if unknown:
        raise ValueError(f"{schema}: the side info has no relation {sorted(unknown)} its patterns use")
    ids = {"user": data.user_ids, "item": data.item_ids}
    stats = dict(side.stats)
    sizes = {"user": data.n_users, "item": data.n_items}
    attribute_names: list[np.ndarray] = []
    parts = [_liked(data)]
    for relation, rel in enumerate(side.relations, start=2):
        part, unmatched = _side_edges(relation, rel, ids, sizes, attribute_names)
        parts.append(part)
        stats[f"unmatched.{rel.name}"] = float(unmatched)
    entity_types = tuple(sizes)
    offsets = np.concatenate([[0], np.cumsum([sizes[t] for t in entity_types])]).astype(np.int64)
    start = dict(zip(entity_types, offsets[:-1].tolist(), strict=True))
    heads, rels, tails = _unique_edges(parts, start, int(offsets[-1]))
    stats.update(_counts(entity_types, offsets, relations, heads, rels, tails))
    return KnowledgeGraph(
        entity_types=entity_types,
        type_offsets=offsets,
        relations=relations,
        relation_heads=("", "user", *(rel.head for rel in side.relations)),
        relation_tails=("", "item", *(rel.tail for rel in side.relations)),
        **_csr(heads, rels, tails, int(offsets[-1])),
        patterns=PATTERNS[schema],
        entity_names=np.concatenate([*_user_item_names(data, side), *attribute_names]),
        stats=stats,
    )


def _side_edges(
    relation: int,
    rel: SideRelation,
    ids: dict[str, np.ndarray],
    sizes: dict[str, int],
    names: list[np.ndarray],
) -> tuple[_Edges, int]:
    """One side relation's edges joined to the dataset, and how many rows found no user or item
    of it. An attribute tail type is numbered in its values' order and registered in ``sizes``
    and ``names``; ``ids`` holds the dataset's file ids of its users and items."""
    heads = _positions(ids[rel.head], rel.heads)
    tail_ids = ids.get(rel.tail)
    if tail_ids is not None:
        tails = _positions(tail_ids, rel.tails.to_numpy())
        matched = (heads >= 0) & (tails >= 0)
        return _Edges(relation, rel.head, heads[matched], rel.tail, tails[matched]), int((~matched).sum())
    if rel.tail in sizes:
        raise ValueError(f"two relations end at the entity type {rel.tail!r}")
    matched = heads >= 0
    codes, values = pd.factorize(rel.tails[matched], sort=True)
    sizes[rel.tail] = len(values)
    names.append(np.array([f"{rel.tail} {value}" for value in values], dtype=str))
    edges = _Edges(relation, rel.head, heads[matched], rel.tail, np.asarray(codes, dtype=np.int64))
    return edges, int((~matched).sum())


def _liked(data: RatingData) -> _Edges:
    """The training positives as user -> item edges."""
    users = np.repeat(np.arange(data.n_users, dtype=np.int64), np.diff(data.train_indptr))
    positive = data.train_ratings >= data.positive_threshold
    return _Edges(1, "user", users[positive], "item", data.train_items[positive].astype(np.int64))


def _positions(dataset_ids: np.ndarray, side_ids: np.ndarray) -> np.ndarray:
    """The dense index of each side-file id in the dataset's (sorted, unique) ids, -1 if absent.

    Ids compare as integers where both sides are integers, else as text (ISBNs; a generic table
    whose ids pandas read as text), so that the join never fails on a dtype alone.
    """
    side_ids = np.asarray(side_ids)
    if not (np.issubdtype(dataset_ids.dtype, np.integer) and np.issubdtype(side_ids.dtype, np.integer)):
        dataset_ids, side_ids = dataset_ids.astype(str), side_ids.astype(str)
    return np.asarray(pd.Index(dataset_ids).get_indexer(side_ids), dtype=np.int64)


def _unique_edges(
    parts: list[_Edges], start: dict[str, int], n_entities: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heads, relations, tails) in global ids, each edge once, sorted; an edge between two
    entities of one type (friends) keeps the lower id as its head."""
    heads = np.concatenate([part.heads + start[part.head_type] for part in parts])
    tails = np.concatenate([part.tails + start[part.tail_type] for part in parts])
    rels = np.concatenate([np.full(len(part.heads), part.relation, dtype=np.int64) for part in parts])
    symmetric = np.concatenate([np.full(len(part.heads), part.head_type == part.tail_type) for part in parts])
    heads, tails = (
        np.where(symmetric, np.minimum(heads, tails), heads),
        np.where(symmetric, np.maximum(heads, tails), tails),
    )
    # One int64 per edge: n_entities**2 * relations stays far below 2**63 for any real graph.
    codes = np.unique((rels * n_entities + heads) * n_entities + tails)
    return codes // n_entities % n_entities, codes // n_entities**2, codes % n_entities


def _csr(heads: np.ndarray, rels: np.ndarray, tails: np.ndarray, n_entities: int) -> dict[str, np.ndarray]:
    """``indptr``, ``neighbors`` and ``edge_relations`` of both directions of every edge, rows
    sorted by (relation, neighbor)."""
    sources, targets = np.concatenate([heads, tails]), np.concatenate([tails, heads])
    relations = np.concatenate([rels, rels])
    order = np.lexsort((targets, relations, sources))
    return {
        "indptr": np.concatenate([[0], np.cumsum(np.bincount(sources, minlength=n_entities))]).astype(
            np.int64
        ),
        "neighbors": targets[order].astype(np.int64),
        "edge_relations": relations[order].astype(np.int64),
    }


def _user_item_names(data: RatingData, side: SideInfo) -> tuple[np.ndarray, np.ndarray]:
    """ "user <id>" and "item <id>[ <title>]", ids as the ratings file spells them."""
    assert data.user_ids is not None and data.item_ids is not None
    titles = np.full(data.n_items, "", dtype=object)
    if side.item_titles is not None:
        title_ids, title_texts = side.item_titles
        found = _positions(data.item_ids, title_ids)
        titles[found[found >= 0]] = [f" {t}" for t in title_texts[found >= 0]]
    users = np.array([f"user {u}" for u in data.user_ids.tolist()], dtype=str)
    items = np.array([f"item {i}{t}" for i, t in zip(data.item_ids.tolist(), titles, strict=True)], dtype=str)
    return users, items


def _counts(
    entity_types: tuple[str, ...],
    offsets: np.ndarray,
    relations: tuple[str, ...],
    heads: np.ndarray,
    rels: np.ndarray,
    tails: np.ndarray,
) -> dict[str, float]:
    """Entities per type, undirected edges per relation, users and items with no attribute edge."""
    n_users, n_items = int(offsets[1]), int(offsets[2] - offsets[1])
    per_relation = np.bincount(rels, minlength=len(relations))
    counts = {"entities": float(offsets[-1]), "edges": float(len(heads))}
    counts.update({f"entities.{t}": float(n) for t, n in zip(entity_types, np.diff(offsets), strict=True)})
    counts.update({f"edges.{r}": float(n) for r, n in zip(relations[1:], per_relation[1:], strict=True)})
    described = np.zeros(int(offsets[-1]), dtype=bool)
    side_edge = rels != 1
    described[heads[side_edge]] = described[tails[side_edge]] = True
    counts["users_without_side_info"] = float(n_users - described[:n_users].sum())
    counts["items_without_side_info"] = float(n_items - described[n_users : n_users + n_items].sum())
    return counts


def _save_cache(graph: KnowledgeGraph, npz_path: Path, params: dict[str, Any]) -> None:
    meta = {name: getattr(graph, name) for name in _NAMES}
    meta.update(stats=graph.stats, params=params)
    # The json goes first: a present .npz then implies a complete pair.
    atomic_write(npz_path.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=1).encode()))
    atomic_write(npz_path, lambda f: np.savez(f, **{name: getattr(graph, name) for name in _ARRAYS}))


def _load_cache(npz_path: Path, data: RatingData) -> KnowledgeGraph | None:
    """The cached graph, or None if absent, unreadable or not of ``data``'s users and items."""
    json_path = npz_path.with_suffix(".json")
    if not npz_path.is_file() or not json_path.is_file():
        return None
    try:
        meta = json.loads(json_path.read_text())
        with np.load(npz_path, allow_pickle=False) as arrays:
            loaded = {name: arrays[name] for name in _ARRAYS}
        graph = KnowledgeGraph(
            entity_types=tuple(meta["entity_types"]),
            relations=tuple(meta["relations"]),
            relation_heads=tuple(meta["relation_heads"]),
            relation_tails=tuple(meta["relation_tails"]),
            patterns=tuple(tuple(pattern) for pattern in meta["patterns"]),
            stats={k: float(v) for k, v in meta["stats"].items()},
            **loaded,
        )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        log.warning("ignoring unreadable knowledge graph cache %s (%s); rebuilding it", npz_path, err)
        return None
    if (graph.n_users, graph.n_items) != (data.n_users, data.n_items):
        log.warning(
            "knowledge graph cache %s is not of this dataset's users and items; rebuilding it", npz_path
        )
        return None
    return graph
