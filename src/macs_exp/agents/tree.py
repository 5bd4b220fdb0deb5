"""TPGR's balanced clustering tree over an item catalogue (Chen et al., AAAI 2019).

Every internal node has ``children`` children and every leaf is at ``depth``; the items are
split top-down so that at each node the children's subtrees hold item counts that differ by at
most one (the first ones get the extra item), and every item gets exactly one leaf. An item's
code is its path, ``depth`` child indices; leaves are numbered by their code read in base
``children``, so the leaves under any node are one contiguous range and the items still
available under each child are a reshaped sum of a leaf mask.

Three ways to split a node's items into its children:

- ``pca``: sort them along their first principal component and cut the order into contiguous
  groups (upstream's and the paper's setting);
- ``kmeans``: Lloyd's k-means with k = children, then a balanced assignment: item-cluster pairs in
  order of distance, each item to its nearest cluster that still has room (upstream keeps the
  first members of an over-full cluster and hands the rest on by distance; both end balanced);
- ``random``: a seeded permutation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SPLITS = ("pca", "kmeans", "random")
KMEANS_ITERATIONS = 20


@dataclass(frozen=True)
class ItemTree:
    """``codes``: (n_items, depth) int64 child index at each level; ``leaf_of_item`` (n_items,);
    ``item_of_leaf`` (children**depth,), -1 on the leaves no item fills."""

    children: int
    depth: int
    codes: torch.Tensor
    leaf_of_item: torch.Tensor
    item_of_leaf: torch.Tensor

    def to(self, device: torch.device | str) -> ItemTree:
        """The same tree with its tensors on ``device`` (the agent's)."""
        moved = (t.to(device) for t in (self.codes, self.leaf_of_item, self.item_of_leaf))
        return ItemTree(self.children, self.depth, *moved)

    def items(self, codes: torch.Tensor) -> torch.Tensor:
        """The items at the leaves of ``codes`` (B, depth): their base-``children`` number."""
        place = self.children ** torch.arange(self.depth - 1, -1, -1, device=codes.device)
        return self.item_of_leaf[codes @ place]

    @property
    def n_nodes(self) -> int:
        """Internal nodes, each with its own policy: (c^d - 1) / (c - 1)."""
        return sum(self.children**level for level in range(self.depth))

    def level_offset(self, level: int) -> int:
        """The index of the first node of ``level`` (the root is node 0)."""
        return sum(self.children**lv for lv in range(level))

    def subtree_counts(self, leaf_mask: torch.Tensor, level: int) -> torch.Tensor:
        """(B, c^(level+1)) int32: the items of ``leaf_mask`` (B, c^depth) under each child of each
        node of ``level``, children of node p at columns p*c .. p*c + c - 1."""
        per_child = self.children ** (self.depth - level - 1)
        if per_child == 1:
            return leaf_mask.to(torch.int32)
        if leaf_mask.device.type == "cpu":
            # numpy sums bools about ten times faster than torch on the CPU (torch 2.13).
            blocks = leaf_mask.numpy().reshape(leaf_mask.shape[0], -1, per_child)
            return torch.from_numpy(blocks.sum(-1, dtype=np.int32))
        return leaf_mask.view(leaf_mask.shape[0], -1, per_child).sum(-1, dtype=torch.int32)

    def child_counts(self, leaf_mask: torch.Tensor, level: int, prefix: torch.Tensor) -> torch.Tensor:
        """(B, c) int32: the items of ``leaf_mask`` under each child of each row's node of ``level``
        (node ``prefix``, (B,) in level order); at the last level only those leaves are read."""
        rows = torch.arange(leaf_mask.shape[0], device=leaf_mask.device)
        if level == self.depth - 1:
            return leaf_mask.view(leaf_mask.shape[0], -1, self.children)[rows, prefix].to(torch.int32)
        return self.subtree_counts(leaf_mask, level).view(leaf_mask.shape[0], -1, self.children)[rows, prefix]

    def leaf_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """(B, c^depth) bool: where a leaf holds an allowed item of ``allowed`` (B, n_items), a
        gather of its columns in leaf order (empty leaves read an appended False column)."""
        n = allowed.shape[1]
        columns = torch.where(self.item_of_leaf < 0, n, self.item_of_leaf)
        if allowed.device.type == "cpu":
            # As above: numpy's column gather is several times faster than torch's on bools.
            padded = np.zeros((allowed.shape[0], n + 1), dtype=bool)
            padded[:, :n] = allowed.numpy()
            return torch.from_numpy(padded.take(columns.numpy(), axis=1))
        padded_t = torch.cat((allowed, allowed.new_zeros(allowed.shape[0], 1)), dim=1)
        return padded_t.index_select(1, columns.to(allowed.device))


def children_for(n_items: int, depth: int, children: int | None) -> int:
    """``children`` if given, else the fewest that give every item a leaf: ceil(n^(1/depth))."""
    if children is not None:
        return children
    c = max(2, math.ceil(n_items ** (1.0 / depth)))
    # Floating point can land one short of n_items or one above the fewest.
    while c**depth < n_items:
        c += 1
    while c > 2 and (c - 1) ** depth >= n_items:
        c -= 1
    return c


def build_tree(features: np.ndarray, depth: int, children: int, split: str, seed: int) -> ItemTree:
    """The balanced tree over the rows of ``features`` (n_items, dim)."""
    n = len(features)
    if children**depth < n:
        raise ValueError(
            f"a tree of depth {depth} with {children} children has {children**depth} leaves, "
            f"fewer than the {n} items"
        )
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {SPLITS}")
    rng = np.random.default_rng(seed)
    codes = np.zeros((n, depth), dtype=np.int64)
    _split(np.asarray(features, dtype=np.float64), np.arange(n), 0, codes, children, split, rng)
    leaf = codes @ (children ** np.arange(depth - 1, -1, -1))
    item_of_leaf = np.full(children**depth, -1, dtype=np.int64)
    item_of_leaf[leaf] = np.arange(n)
    return ItemTree(
        children, depth, torch.from_numpy(codes), torch.from_numpy(leaf), torch.from_numpy(item_of_leaf)
    )


def _sizes(n: int, children: int) -> np.ndarray:
    """Balanced group sizes: the first n mod c groups get one item more."""
    sizes = np.full(children, n // children, dtype=np.int64)
    sizes[: n % children] += 1
    return sizes


def _split(
    features: np.ndarray,
    items: np.ndarray,
    level: int,
    codes: np.ndarray,
    children: int,
    split: str,
    rng: np.random.Generator,
) -> None:
    """Assigns ``items`` to the children of one node at ``level`` and recurses into each."""
    if level == codes.shape[1] or len(items) == 0:
        return
    sizes = _sizes(len(items), children)
    groups = _groups(features[items], sizes, split, rng)
    for child, members in enumerate(groups):
        codes[items[members], level] = child
        _split(features, items[members], level + 1, codes, children, split, rng)


def _groups(x: np.ndarray, sizes: np.ndarray, split: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of ``x`` per child, ``sizes[j]`` of them for child j."""
    if split == "kmeans":
        return _balanced_kmeans(x, sizes, rng)
    if split == "pca":
        centred = x - x.mean(0)
        # The first right singular vector is the first principal axis; a node of identical
        # items has none and keeps its order.
        axis = np.linalg.svd(centred, full_matrices=False)[2][0] if len(x) > 1 else np.zeros(x.shape[1])
        order = np.argsort(centred @ axis, kind="stable")
    else:
        order = rng.permutation(len(x))
    return np.split(order, np.cumsum(sizes)[:-1])


def _balanced_kmeans(x: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    k = len(sizes)
    centres = x[rng.choice(len(x), size=min(k, len(x)), replace=False)]
    if len(centres) < k:
        centres = np.concatenate((centres, centres[rng.integers(len(centres), size=k - len(centres))]))
    for _ in range(KMEANS_ITERATIONS):
        nearest = _distances(x, centres).argmin(1)
        for j in range(k):
            if (nearest == j).any():
                centres[j] = x[nearest == j].mean(0)
    distance = _distances(x, centres)
    room = sizes.copy()
    assigned = np.full(len(x), -1, dtype=np.int64)
    for flat in np.argsort(distance, axis=None, kind="stable"):
        item, cluster = divmod(int(flat), k)
        if assigned[item] < 0 and room[cluster] > 0:
            assigned[item] = cluster
            room[cluster] -= 1
    return [np.flatnonzero(assigned == j) for j in range(k)]


def _distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n, k) squared distances, without the (n, k, dim) differences (Douban: 800 MB)."""
    return (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)[None]
