"""TransE embeddings of a knowledge graph, trained as upstream PGPR trains them, cached by the
graph's content.

For an edge (h, r, t) in its canonical direction the score is ``<e_h + w_r, e_t> + b_{r,t}``,
a per-relation bias on the tail; the loss is upstream's ``-log s(pos) - sum_k log s(-neg_k)``
over ``kg.transe_negatives`` corrupted tails, drawn among the entities of the relation's tail
type with probability proportional to their count as that relation's tail to the power 0.75
(uniform over items for ``liked``, as upstream's ``purchase``). SGD at
``kg.transe_learning_rate`` decays linearly to 1e-4 of it over ``kg.transe_epochs`` epochs of
shuffled batches of ``kg.transe_batch_size`` edges, gradients clipped at ``kg.transe_clip``.
Embeddings are sparse, so a step touches only the rows of its batch.

Upstream trains on one example per review word, each bundling a user, a product and their
attributes; a rating graph has no reviews, so every training edge is one example here.
Training is seeded by ``kg.transe_seed``, not the run's seed: every seed of a table walks the
same embedding, as every seed shares one split.
"""

from __future__ import annotations

import io
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from macs_exp.cache import atomic_write, content_key, file_lock
from macs_exp.data.config import KGConfig
from macs_exp.data.kg import LIKED, KnowledgeGraph

log = logging.getLogger("macs_exp")

# Bump whenever a change here alters trained embeddings, so that cached ones miss.
TRANSE_VERSION = 1
# The floor of the linear learning-rate decay, as a share of the starting rate (upstream's).
LR_FLOOR = 1e-4


@dataclass(frozen=True)
class GraphEmbedding:
    """``entities`` (n_entities, dim) and ``relations`` (n_relations, dim) float32; relation 0,
    the self-loop, has no edges and keeps the zero vector. ``stats`` are the fit's losses."""

    entities: torch.Tensor
    relations: torch.Tensor
    stats: dict[str, float]

    def to(self, device: torch.device | str) -> GraphEmbedding:
        return GraphEmbedding(self.entities.to(device), self.relations.to(device), self.stats)


class TransE(nn.Module):
    def __init__(self, n_entities: int, n_relations: int, dim: int) -> None:
        super().__init__()
        bound = 0.5 / dim  # upstream's initrange
        self.n_entities = n_entities
        self.entities = nn.Embedding(n_entities, dim)
        self.relations = nn.Embedding(n_relations, dim)
        self.bias = nn.Embedding(n_relations * n_entities, 1)
        nn.init.uniform_(self.entities.weight, -bound, bound)
        nn.init.uniform_(self.relations.weight, -bound, bound)
        nn.init.zeros_(self.bias.weight)
        with torch.no_grad():
            self.relations.weight[0] = 0.0

    def scores(self, heads: torch.Tensor, relations: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        """``<e_h + w_r, e_t> + b_{r,t}`` for (B,) heads and relations and (B, K) tails: (B, K)."""
        query = self.entities(heads) + self.relations(relations)
        bias = self.bias(relations[:, None] * self.n_entities + tails)[..., 0]
        return torch.einsum("bd,bkd->bk", query, self.entities(tails)) + bias

    def loss(self, edges: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Upstream's negative-sampling loss of (B, 3) edges and their (B, K) corrupted tails."""
        heads, relations, tails = edges.unbind(1)
        positive = self.scores(heads, relations, tails[:, None])[:, 0]
        negative = self.scores(heads, relations, negatives)
        return (-F.logsigmoid(positive) - F.logsigmoid(-negative).sum(1)).mean()

    @torch.no_grad()
    def gradients(
        self, edges: torch.Tensor, negatives: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``loss`` and its gradient in closed form, without autograd (ten times faster at a
        batch of 64, where the step is all overhead): for each parameter table, the rows a
        batch touches and their summed gradients."""
        heads, relations, tails = edges.unbind(1)
        e, w, bias = self.entities.weight, self.relations.weight, self.bias.weight[:, 0]
        query = e[heads] + w[relations]
        tail_vectors, negative_vectors = e[tails], e[negatives]
        bias_rows = torch.cat(
            [
                relations[:, None] * self.n_entities + tails[:, None],
                relations[:, None] * self.n_entities + negatives,
            ],
            1,
        )
        positive = (query * tail_vectors).sum(1) + bias[bias_rows[:, 0]]
        negative = torch.einsum("bd,bkd->bk", query, negative_vectors) + bias[bias_rows[:, 1:]]
        loss = (-F.logsigmoid(positive) - F.logsigmoid(-negative).sum(1)).mean()
        n = len(heads)
        d_pos = (torch.sigmoid(positive) - 1) / n
        d_neg = torch.sigmoid(negative) / n
        d_query = d_pos[:, None] * tail_vectors + torch.einsum("bk,bkd->bd", d_neg, negative_vectors)
        entity_rows = torch.cat([heads, tails, negatives.flatten()])
        entity_grads = torch.cat(
            [d_query, d_pos[:, None] * query, (d_neg[:, :, None] * query[:, None, :]).flatten(0, 1)]
        )
        grads = [
            _summed(entity_rows, entity_grads),
            _summed(relations, d_query),
            _summed(bias_rows.flatten(), torch.cat([d_pos[:, None], d_neg], 1).flatten()[:, None]),
        ]
        return loss, grads

    @torch.no_grad()
    def sgd_step(self, edges: torch.Tensor, negatives: torch.Tensor, rate: float, clip: float) -> float:
        """One SGD step on ``loss`` with its gradient clipped to total norm ``clip``."""
        loss, grads = self.gradients(edges, negatives)
        norm = torch.sqrt(sum((g.square().sum() for _, g in grads), torch.zeros(())))
        scale = rate * min(1.0, clip / max(float(norm), 1e-12))
        for table, (rows, grad) in zip((self.entities, self.relations, self.bias), grads, strict=True):
            table.weight.index_add_(0, rows, grad, alpha=-scale)
        return float(loss)


def _summed(rows: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct ``rows`` and the sum of ``grads`` over each (the norm counts each row once)."""
    distinct, inverse = torch.unique(rows, return_inverse=True)
    return distinct, torch.zeros(len(distinct), grads.shape[1], dtype=grads.dtype).index_add_(
        0, inverse, grads
    )


class _TailSampler:
    """Corrupted tails per relation: entities of the tail type, weighted by count^0.75 (uniform
    over the type for ``liked``), drawn in one call for a whole batch."""

    def __init__(self, graph: KnowledgeGraph, relations: np.ndarray, tails: np.ndarray) -> None:
        self.cdfs: list[torch.Tensor] = []
        self.starts: list[int] = []
        for r, name in enumerate(graph.relations):
            kind = graph.relation_tails[r]
            start, stop = _type_range(graph, kind) if kind else (0, 1)
            counts = np.bincount(tails[relations == r] - start, minlength=stop - start).astype(np.float64)
            weights = np.ones_like(counts) if name == LIKED or not counts.any() else counts**0.75
            self.cdfs.append(torch.from_numpy(np.cumsum(weights) / weights.sum()))
            self.starts.append(start)

    def draw(self, relations: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        out = torch.empty(len(relations), k, dtype=torch.int64)
        u = torch.rand(len(relations), k, generator=generator, dtype=torch.float64)
        for r in torch.unique(relations).tolist():
            rows = relations == r
            picked = torch.searchsorted(self.cdfs[r], u[rows]).clamp_max(len(self.cdfs[r]) - 1)
            out[rows] = picked + self.starts[r]
        return out


def _type_range(graph: KnowledgeGraph, kind: str) -> tuple[int, int]:
    """The global ids [start, stop) of the entities of type ``kind``."""
    k = graph.entity_types.index(kind)
    return int(graph.type_offsets[k]), int(graph.type_offsets[k + 1])


def train_transe(graph: KnowledgeGraph, cfg: KGConfig) -> GraphEmbedding:
    """TransE fitted on ``graph``'s canonical edges as the module docstring says."""
    torch.manual_seed(cfg.transe_seed)
    generator = torch.Generator().manual_seed(cfg.transe_seed)
    heads, relations, tails = graph.canonical_edges()
    edges = torch.from_numpy(np.stack([heads, relations, tails], 1))
    sampler = _TailSampler(graph, relations, tails)
    model = TransE(graph.n_entities, len(graph.relations), cfg.transe_dim)
    batches = -(-len(edges) // cfg.transe_batch_size)
    total = max(cfg.transe_epochs * batches, 1)
    losses: list[float] = []
    step = 0
    for _ in range(cfg.transe_epochs):
        epoch_loss = 0.0
        for batch in torch.randperm(len(edges), generator=generator).split(cfg.transe_batch_size):
            rate = cfg.transe_learning_rate * max(LR_FLOOR, 1.0 - step / total)
            negatives = sampler.draw(edges[batch, 1], cfg.transe_negatives, generator)
            epoch_loss += model.sgd_step(edges[batch], negatives, rate, cfg.transe_clip) * len(batch)
            step += 1
        losses.append(epoch_loss / len(edges))
    with torch.no_grad():
        model.relations.weight[0] = 0.0
    stats = {"transe_first_epoch_loss": losses[0], "transe_last_epoch_loss": losses[-1]} if losses else {}
    return GraphEmbedding(
        model.entities.weight.detach().clone(), model.relations.weight.detach().clone(), stats
    )


def graph_embedding(graph: KnowledgeGraph, cfg: KGConfig, cache_dir: str | Path) -> GraphEmbedding:
    """``graph``'s TransE embedding from ``cache_dir``, else trained and cached there; keyed by
    the graph's content and every TransE setting, locked so that parallel jobs train it once."""
    params = {
        "version": TRANSE_VERSION,
        "graph": graph.key(),
        **{k: getattr(cfg, k) for k in vars(cfg) if k.startswith("transe_")},
    }
    path = Path(cache_dir) / f"transe-{content_key(params, 24)}.pt"
    with file_lock(path.with_suffix(".lock")):
        cached = _load(path)
        if cached is not None:
            log.info("TransE cache hit: %s", path)
            return cached
        start = time.perf_counter()
        embedding = train_transe(graph, cfg)
        state = {"entities": embedding.entities, "relations": embedding.relations, "stats": embedding.stats}
        atomic_write(path, lambda f: torch.save(state, f))
        log.info("TransE trained in %.1f s and cached: %s", time.perf_counter() - start, path)
        return embedding


def _load(path: Path) -> GraphEmbedding | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
        return GraphEmbedding(state["entities"], state["relations"], dict(state["stats"]))
    except (OSError, RuntimeError, KeyError, zipfile.BadZipFile) as err:
        log.warning("ignoring unreadable TransE cache %s (%s); training again", path, err)
        return None
