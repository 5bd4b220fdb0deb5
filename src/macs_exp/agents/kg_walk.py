"""Walks over a knowledge graph from users' nodes, batched: the action space of PGPR's MDP.

At each hop a row stands at an entity, with the user it started from and the entities it has
visited. Its actions are upstream PGPR's (``kg_env.py``): the self-loop, always slot 0, then
every edge out of the current entity to an entity not yet on the path; when there are more than
``max_acts``, the ``max_acts`` with the highest user-conditional TransE score are kept,
``<e_u + o_type, e>``, where the offset ``o`` of the next entity's type is 0 for users,
``w_liked`` for items, ``w_liked + w_r`` for an item's attributes and ``w_r`` for a user's
(upstream's ``u + r_purchase + r`` and ``u + r_mention``). Kept edges sit in slots 1.. ordered
by (relation, entity), as upstream orders them.

Our env adds one rule at the last hop: only actions that end at an item the env allows are
valid (the self-loop too, from an allowed item); a row with none keeps the self-loop alone and
its walk fails. A walk succeeds when it ends at an allowed item along one of the graph's
patterns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from macs_exp.data.kg import LIKED, SELF_LOOP, KnowledgeGraph
from macs_exp.data.transe import GraphEmbedding

# A walk has upstream's three hops.
HOPS = 3
# Rows x padded degree per gather, so that hub nodes (a genre, a country) never need one huge
# (rows, degree) block.
_BLOCK = 1 << 21


@dataclass(frozen=True)
class Actions:
    """Each row's action slots: ``entities`` and ``relations`` (B, max_acts + 1) int64, slot 0
    the self-loop, and which slots are ``valid`` (B, max_acts + 1) bool."""

    entities: torch.Tensor
    relations: torch.Tensor
    valid: torch.Tensor

    def select(self, rows: torch.Tensor) -> Actions:
        return Actions(self.entities[rows], self.relations[rows], self.valid[rows])

    @staticmethod
    def cat(parts: list[Actions]) -> Actions:
        return Actions(
            *(torch.cat([getattr(p, k) for p in parts]) for k in ("entities", "relations", "valid"))
        )


class GraphWalker:
    """The graph and its embedding as tensors on one device, and the walk's rules."""

    def __init__(
        self, graph: KnowledgeGraph, embedding: GraphEmbedding, max_acts: int, device: torch.device
    ) -> None:
        def tensor(values: object) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.int64, device=device)

        self.graph = graph
        self.max_acts = max_acts
        self.n_users, self.n_items = graph.n_users, graph.n_items
        self.indptr, self.neighbors = tensor(graph.indptr), tensor(graph.neighbors)
        self.edge_relations = tensor(graph.edge_relations)
        self.types = tensor(graph.type_of(torch.arange(graph.n_entities).numpy()))
        self.entities = embedding.entities.to(device)
        self.relations = embedding.relations.to(device)
        self.liked = graph.relations.index(LIKED)
        self.self_loop = graph.relations.index(SELF_LOOP)
        self.bias = (self._type_offsets()[self.types] * self.entities).sum(1)
        n_rel = len(graph.relations)
        self.n_relations = n_rel
        codes = [(r1 * n_rel + r2) * n_rel + r3 for r1, r2, r3 in self._pattern_ids()]
        self.patterns = tensor(sorted(codes))

    def _type_offsets(self) -> torch.Tensor:
        """(n_types, dim): the offset each entity type adds to the user's vector in pruning."""
        g, w = self.graph, self.relations
        offsets = torch.zeros(len(g.entity_types), w.shape[1], device=w.device)
        offsets[g.entity_types.index("item")] = w[self.liked]
        for r, (head, tail) in enumerate(zip(g.relation_heads, g.relation_tails, strict=True)):
            if tail in ("", "user", "item"):
                continue
            k = g.entity_types.index(tail)
            offsets[k] = w[r] + (w[self.liked] if head == "item" else 0.0)
        return offsets

    def _pattern_ids(self) -> list[tuple[int, ...]]:
        return [tuple(self.graph.relations.index(name) for name in p) for p in self.graph.patterns]

    # --- entities ---------------------------------------------------------------------------
    def user_entities(self, users: torch.Tensor) -> torch.Tensor:
        return users.to(self.indptr.device)

    def item_entities(self, items: torch.Tensor) -> torch.Tensor:
        return items + self.n_users

    def items_of(self, entities: torch.Tensor) -> torch.Tensor:
        """The item index of item entities, -1 elsewhere."""
        is_item = (entities >= self.n_users) & (entities < self.n_users + self.n_items)
        return torch.where(is_item, entities - self.n_users, -1)

    def user_item_scores(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items): ``<e_u + w_liked, e_i>``, upstream's ranking of items for a user."""
        query = self.entities[users] + self.relations[self.liked]
        return query @ self.entities[self.n_users : self.n_users + self.n_items].T

    # --- actions ----------------------------------------------------------------------------
    def actions(
        self,
        users: torch.Tensor,
        path: torch.Tensor,
        allowed: torch.Tensor | None,
        allowed_rows: torch.Tensor | None = None,
    ) -> Actions:
        """The action slots of rows at ``path[:, -1]`` (B, hops so far + 1 entities, the user
        first). At the last hop ``allowed`` (R, n_items) holds the allowed items, row
        ``allowed_rows[b]`` for row b (row b itself without ``allowed_rows``)."""
        current = path[:, -1]
        degree = self.indptr[current + 1] - self.indptr[current]
        if allowed is not None and allowed_rows is None:
            allowed_rows = torch.arange(len(current), device=current.device)
        # Rows in blocks of similar degree, each padded to its own widest: a hub's degree
        # (a gender, a genre) is 10 times the median's.
        order = degree.argsort()
        parts = []
        for block in self._blocks(degree[order]):
            rows = order[block]
            mask = None if allowed is None or allowed_rows is None else (allowed, allowed_rows[rows])
            width = max(int(degree[rows].max()), 1)
            parts.append(self._block(users[rows], path[rows], degree[rows], width, mask))
        out = Actions.cat(parts)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        return out.select(inverse)

    @staticmethod
    def _blocks(degree: torch.Tensor) -> list[slice]:
        """Consecutive rows of ascending ``degree``, about 16 blocks of at most _BLOCK cells."""
        n, blocks, start = len(degree), [], 0
        step = max(-(-n // 16), 1)
        while start < n:
            stop = min(start + step, n)
            width = max(int(degree[stop - 1]), 1)
            stop = min(stop, start + max(_BLOCK // width, 1))
            blocks.append(slice(start, stop))
            start = stop
        return blocks

    def _block(
        self,
        users: torch.Tensor,
        path: torch.Tensor,
        degree: torch.Tensor,
        width: int,
        allowed: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> Actions:
        current = path[:, -1]
        offsets = torch.arange(width, device=current.device)
        index = (self.indptr[current][:, None] + offsets[None, :]).clamp_max(len(self.neighbors) - 1)
        nxt, rel = self.neighbors[index], self.edge_relations[index]
        # The graph has no self-edges, so only the entities before the current one can recur.
        valid = (offsets[None, :] < degree[:, None]) & ~(nxt[:, :, None] == path[:, None, :-1]).any(2)
        stay = torch.ones_like(current, dtype=torch.bool)
        if allowed is not None:
            valid &= self._allowed_items(nxt, *allowed)
            stay = self._allowed_items(current[:, None], *allowed)[:, 0]
        valid = self._pruned(users, nxt, valid)
        # Slots in the CSR's order, (relation, entity), as upstream sorts them: each valid edge
        # goes to the slot its rank among the row's valid edges says; the rest to a spare column.
        b, k = len(current), self.max_acts
        slot = torch.where(valid, valid.cumsum(1) - 1, k)
        entities = current[:, None].repeat(1, k + 2)
        relations = torch.zeros(b, k + 2, dtype=torch.int64, device=current.device)
        entities[:, 1:].scatter_(1, slot, nxt)
        relations[:, 1:].scatter_(1, slot, rel)
        relations[:, 0] = self.self_loop
        kept = torch.zeros(b, k + 2, dtype=torch.bool, device=current.device)
        kept[:, 1:].scatter_(1, slot, valid)
        # A last hop with no way to an allowed item keeps the self-loop, and fails.
        kept[:, 0] = stay | ~valid.any(1)
        return Actions(entities[:, :-1], relations[:, :-1], kept[:, :-1])

    def _pruned(self, users: torch.Tensor, entities: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``valid`` with only the ``max_acts`` best-scored edges kept in rows with more."""
        crowded = valid.sum(1) > self.max_acts
        if not bool(crowded.any()):
            return valid
        rows = crowded.nonzero()[:, 0]
        score = self._pruning_scores(users[rows], entities[rows]).masked_fill(~valid[rows], float("-inf"))
        best = torch.zeros_like(valid[rows]).scatter_(1, score.topk(self.max_acts, dim=1).indices, True)
        valid = valid.clone()
        valid[rows] &= best
        return valid

    def _pruning_scores(self, users: torch.Tensor, entities: torch.Tensor) -> torch.Tensor:
        """``<e_u + o_type(e), e>`` of (B, W) ``entities`` for each row's user, through one
        product per distinct user (beam rows share users), never a (B, W, dim) gather."""
        distinct, row_user = torch.unique(users, return_inverse=True)
        scores = self.entities[distinct] @ self.entities.T
        return scores[row_user[:, None], entities] + self.bias[entities]

    def _allowed_items(
        self, entities: torch.Tensor, allowed: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """(B, W): whether each entity is an item that row ``rows[b]`` of ``allowed`` allows."""
        items = self.items_of(entities)
        return (items >= 0) & allowed[rows[:, None], items.clamp_min(0)]

    # --- walks --------------------------------------------------------------------------------
    def succeeded(
        self,
        path: torch.Tensor,
        relations: torch.Tensor,
        allowed: torch.Tensor | None,
        allowed_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B,) whether walks of ``path`` (B, HOPS + 1) along ``relations`` (B, HOPS) end at an
        allowed item along a pattern."""
        end = path[:, -1]
        ok = self.items_of(end) >= 0
        if allowed is not None:
            rows = torch.arange(len(end), device=end.device) if allowed_rows is None else allowed_rows
            ok &= self._allowed_items(end[:, None], allowed, rows)[:, 0]
        n = self.n_relations
        code = (relations[:, 0] * n + relations[:, 1]) * n + relations[:, 2]
        return ok & torch.isin(code, self.patterns)

    def describe(self, path: list[int], relations: list[int]) -> str:
        """A walk as text: ``user 12 --liked--> item 50 Star Wars (1977) --belongs_to--> ...``."""
        names, rels = self.graph.entity_names, self.graph.relations
        text = str(names[path[0]])
        for entity, relation in zip(path[1:], relations, strict=True):
            text += f" --{rels[relation]}--> {names[entity]}"
        return text
