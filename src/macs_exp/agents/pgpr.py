"""PGPR: policy-guided path reasoning over a knowledge graph (Xian et al., SIGIR 2019), after the
official code (orcax/PGPR) and ``shared/methods/PGPR.md``; docs/pgpr.md has every choice made here.

Each env step is one walk of three hops from the user's node (``agents.kg_walk``): the state of
a hop is upstream's ``[e_u, e_t, e_{t-1}, w_{r_t}]`` of fixed TransE vectors plus a learned
projection of the env's state, so that what the user has just been shown matters (PGPR.md 6.2,
the sequential design). An actor-critic with upstream's trunk (512, 256, ELU, dropout 0.5)
scores the pruned action slots. Training samples one walk, with upstream's action dropout; the
env gets the allowed item it ends at, or, when the walk fails (it ends off-item or off-pattern),
the allowed item of the highest TransE score, and the walk then learns a reward of 0. The walk's
reward is the env's reward for its item (plus ``soft_reward_coef`` times upstream's soft TransE
reward), discounted by ``gamma`` within the walk, with no credit across env steps.

Evaluation is upstream's beam search (``beam``, [25, 5, 1]) from the state: of the allowed items
its successful paths reach, the one with the highest TransE score ``<e_u + w_liked, e_i>``, its
most probable path the explanation; a state no path leaves for an allowed item gets the
TransE-best allowed item (upstream's ``add_products``). Synthesised transitions (MACS's twins,
CTRL's alternatives) enter through a truncated importance-weighted term (docs/macs.md).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import torch
from omegaconf import MISSING
from torch import nn
from torch.nn import functional as F

from macs_exp import plugins
from macs_exp.agents.base import add_finite
from macs_exp.agents.items import ItemSpace
from macs_exp.agents.kg_walk import HOPS, Actions, GraphWalker
from macs_exp.agents.protocol import AgentConfig, Policy, Transitions
from macs_exp.agents.saved import load_agent, save_agent
from macs_exp.schema import ConfigError, Rules, check

ACTORS = ("slots", "embedding")
# The walk fields every stored walk has, real or synthesised: per walk, then per hop.
WALK = (
    "users",
    "obs",
    "path",
    "relations",
    "slots",
    "entities",
    "acts",
    "valid",
    "logp",
    "success",
    "reward",
)
# Users whose beams are searched together: bounds the (rows, degree) blocks of the last hop.
_BEAM_USERS = 32


@dataclass
class PGPRConfig(AgentConfig):
    """PGPR's hyperparameters, upstream's ``train_agent.py`` names in the comments."""

    learning_rate: float = MISSING  # lr
    gamma: float = MISSING  # gamma, within a walk
    batch_size: int = MISSING  # batch_size: walks per update
    hidden: list[int] = MISSING  # hidden
    dropout: float = MISSING  # the trunk's dropout
    act_dropout: float = MISSING  # act_dropout
    max_acts: int = MISSING  # max_acts
    ent_weight: float = MISSING  # ent_weight
    context_dim: int = MISSING  # width of the env state's projection (0: upstream's state alone)
    actor: str = MISSING  # slots: upstream's logits per action slot | embedding: per action's vectors
    soft_reward_coef: float = MISSING  # beta: weight of upstream's soft TransE reward
    beam: list[int] = MISSING  # topk per hop in evaluation
    cf_coef: float = MISSING  # lambda_cf, the weight of the synthesised walks' term
    cf_clip: float = MISSING  # rho_bar, where their importance weights are truncated
    # Built over the env's knowledge graph (the kg group), which the composition root lends.
    needs_graph: ClassVar[bool] = True

    def rules(self) -> Rules:
        return {
            "learning_rate": (self.learning_rate > 0, "positive"),
            "gamma": (0 <= self.gamma <= 1, "in [0, 1]"),
            "batch_size": (self.batch_size >= 1, "at least 1"),
            "hidden": (len(self.hidden) == 2 and min(self.hidden) >= 1, "two positive widths"),
            "dropout": (0 <= self.dropout < 1, "in [0, 1)"),
            "act_dropout": (0 <= self.act_dropout < 1, "in [0, 1)"),
            "max_acts": (self.max_acts >= 1, "at least 1"),
            "ent_weight": (self.ent_weight >= 0, "0 or more"),
            "context_dim": (self.context_dim >= 0, "0 or more"),
            "actor": (self.actor in ACTORS, f"one of {', '.join(ACTORS)}"),
            "soft_reward_coef": (self.soft_reward_coef >= 0, "0 or more"),
            "beam": (len(self.beam) == HOPS and min(self.beam) >= 1, f"{HOPS} positive widths"),
            "cf_coef": (self.cf_coef >= 0, "0 or more"),
            "cf_clip": (self.cf_clip > 0, "positive"),
        }


class SeededDropout(nn.Module):
    """Dropout that draws from the agent's own stream, so that PGPR's randomness never touches
    torch's global one (which MACS's pi_c draws from): a mode that adds nothing leaves its
    history unchanged. Off in ``eval()``, unlike upstream's functional dropout (PGPR.md 7.1)."""

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p = p
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.p
        return x * keep / (1 - self.p)


class ActorCritic(nn.Module):
    """Upstream's trunk over the hop's state, its slot actor (or an actor over the actions'
    vectors) and its critic."""

    def __init__(self, obs_dim: int, dim: int, cfg: PGPRConfig, generator: torch.Generator) -> None:
        super().__init__()
        h1, h2 = cfg.hidden
        self.context = nn.Linear(obs_dim, cfg.context_dim) if cfg.context_dim else None
        self.trunk = nn.Sequential(
            nn.Linear(4 * dim + cfg.context_dim, h1),
            nn.ELU(),
            SeededDropout(cfg.dropout, generator),
            nn.Linear(h1, h2),
            nn.ELU(),
            SeededDropout(cfg.dropout, generator),
        )
        self.actor = nn.Linear(h2, cfg.max_acts + 1 if cfg.actor == "slots" else dim)
        self.slots = cfg.actor == "slots"
        self.critic = nn.Linear(h2, 1)

    def draw_from(self, generator: torch.Generator) -> None:
        """Points the dropout at ``generator``, the stream of whoever samples now."""
        for module in self.trunk:
            if isinstance(module, SeededDropout):
                module.generator = generator

    def forward(
        self, state: torch.Tensor, obs: torch.Tensor, action_vectors: torch.Tensor | None, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked log-probabilities over the slots (B, A) and the state values (B,)."""
        if self.context is not None:
            state = torch.cat([state, self.context(obs)], 1)
        x = self.trunk(state)
        if self.slots:
            logits = self.actor(x)
        else:
            assert action_vectors is not None
            logits = torch.einsum("bd,bad->ba", self.actor(x), action_vectors)
        logits = logits.masked_fill(~valid, -1e9)
        return F.log_softmax(logits, dim=-1), self.critic(x)[:, 0]


@plugins.agent("pgpr", PGPRConfig, order=50)
class PGPR:
    name = "pgpr"

    def __init__(
        self,
        cfg: PGPRConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        device: torch.device | str,
        seed: int,
        items: ItemSpace | None = None,
    ) -> None:
        check(cfg, "algo")
        if items is None or items.graph is None:
            raise ConfigError(
                "algo=pgpr walks a knowledge graph of the dataset's side files and needs a rating "
                "env (env=ml100k, ml1m, douban_book, bookcrossing) with them"
            )
        if not isinstance(observation_space, gym.spaces.Box):
            raise TypeError("PGPR needs a Box observation space")
        graph, embedding = items.graph
        if graph.n_items != items.n_items:
            raise ValueError(f"the knowledge graph has {graph.n_items} items, the env {items.n_items}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.obs_dim = int(observation_space.shape[0])
        self.n_items = items.n_items
        self.walker = GraphWalker(graph, embedding, cfg.max_acts, self.device)
        self.graph_key = graph.key()
        torch.manual_seed(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        dim = int(embedding.entities.shape[1])
        self.net = ActorCritic(self.obs_dim, dim, cfg, self.generator).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.learning_rate)
        self.n_updates = 0
        self.real: list[dict[str, torch.Tensor]] = []
        self.extra: list[dict[str, torch.Tensor]] = []
        # The walk of the last explore, until observe brings its rewards; CTRL's draws since then.
        self._pending: dict[str, torch.Tensor] | None = None
        self._last: dict[str, torch.Tensor] | None = None
        self._drawn: list[dict[str, torch.Tensor]] = []
        self._counts = {"walks": 0.0, "failed": 0.0, "searched": 0.0, "filled": 0.0}
        self.last_search: dict[str, torch.Tensor] | None = None

    # --- the hop's state ----------------------------------------------------------------
    def _state(self, users: torch.Tensor, path: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        """Upstream's ``[e_u, e_t, e_{t-1}, w_{r_t}]``; before the first hop e_{t-1} is 0."""
        e, w = self.walker.entities, self.walker.relations
        previous = e[path[:, -2]] if path.shape[1] > 1 else torch.zeros_like(e[users])
        return torch.cat([e[users], e[path[:, -1]], previous, w[relation]], 1)

    def _vectors(self, acts: Actions) -> torch.Tensor | None:
        if self.net.slots:
            return None
        return self.walker.entities[acts.entities] + self.walker.relations[acts.relations]

    def _hop(
        self,
        users: torch.Tensor,
        obs: torch.Tensor,
        path: torch.Tensor,
        relation: torch.Tensor,
        acts: Actions,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(self._state(users, path, relation), obs, self._vectors(acts), acts.valid)

    def _users(self, users: torch.Tensor | None, n: int) -> torch.Tensor:
        if users is None or len(users) != n:
            raise ValueError("PGPR walks from each state's user: call it with users= (the env's slot_users)")
        return users.to(self.device, torch.int64)

    # --- sampling one walk ----------------------------------------------------------------
    def _drop(self, valid: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Upstream's action dropout: with at least 5 valid actions, each non-self-loop one is
        dropped with probability act_dropout; a row left with none keeps its own."""
        if self.cfg.act_dropout == 0:
            return valid
        keep = torch.rand(valid.shape, generator=generator, device=valid.device) >= self.cfg.act_dropout
        keep[:, 0] = True
        dropped = valid & keep
        use = (valid.sum(1) >= 5) & dropped.any(1)
        return torch.where(use[:, None], dropped, valid)

    @torch.no_grad()
    def _walk(
        self, obs: torch.Tensor, users: torch.Tensor, allowed: torch.Tensor | None, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """One sampled walk per row, every hop's slots kept for its update."""
        rows = torch.arange(len(users), device=self.device)
        path, relation = users[:, None], torch.full_like(users, self.walker.self_loop)
        hops: list[tuple[Actions, torch.Tensor]] = []
        logp = torch.zeros(len(users), device=self.device)
        self.net.train()
        self.net.draw_from(generator)
        for h in range(HOPS):
            acts = self.walker.actions(users, path, allowed if h == HOPS - 1 else None)
            acts = Actions(acts.entities, acts.relations, self._drop(acts.valid, generator))
            log_probs, _ = self._hop(users, obs, path, relation, acts)
            slot = torch.multinomial(log_probs.exp(), 1, generator=generator)[:, 0]
            logp += log_probs[rows, slot]
            relation = acts.relations[rows, slot]
            path = torch.cat([path, acts.entities[rows, slot][:, None]], 1)
            hops.append((acts, slot))
        self.net.draw_from(self.generator)
        relations = torch.stack([a.relations[rows, s] for a, s in hops], 1)
        return {
            "users": users,
            "obs": obs,
            "path": path,
            "relations": relations,
            "slots": torch.stack([s for _, s in hops], 1),
            "entities": torch.stack([a.entities for a, _ in hops], 1),
            "acts": torch.stack([a.relations for a, _ in hops], 1),
            "valid": torch.stack([a.valid for a, _ in hops], 1),
            "logp": logp,
            "success": self.walker.succeeded(path, relations, allowed),
        }

    def _items(self, walk: dict[str, torch.Tensor], allowed: torch.Tensor | None) -> torch.Tensor:
        """The walk's item where it succeeded, else the TransE-best allowed item."""
        return torch.where(
            walk["success"], self.walker.items_of(walk["path"][:, -1]), self._fill(walk["users"], allowed)
        )

    def _fill(self, users: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        scores = self.walker.user_item_scores(users)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        return scores.argmax(1)

    # --- acting -------------------------------------------------------------------------
    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        allowed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        obs = obs.to(self.device, torch.float32)
        who = self._users(users, len(obs))
        mask = None if allowed is None else allowed.to(self.device)
        if deterministic:
            return self._search(obs, who, mask)
        return self._items(self._walk(obs, who, mask, self.generator), mask)

    def explore(
        self, obs: torch.Tensor, allowed: torch.Tensor | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A sampled walk per row, remembered until ``observe`` brings its rewards."""
        obs = obs.to(self.device, torch.float32)
        mask = None if allowed is None else allowed.to(self.device)
        walk = self._walk(obs, self._users(users, len(obs)), mask, self.generator)
        walk["item"] = self._items(walk, mask)
        self._pending, self._drawn = walk, []
        return walk["item"]

    def sample_actions(
        self,
        obs: torch.Tensor,
        allowed: torch.Tensor,
        generator: torch.Generator,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Items of walks drawn from the behaviour policy with the caller's stream (CTRL's a'),
        remembered so that ``add_extra`` learns along the walk that reached each."""
        obs = obs.to(self.device, torch.float32)
        mask = allowed.to(self.device)
        walk = self._walk(obs, self._users(users, len(obs)), mask, generator)
        walk["item"] = self._items(walk, mask)
        self._drawn.append(walk)
        return walk["item"]

    def frozen_policy(self) -> Policy:
        """The beam search of a copy of the current networks."""
        frozen = copy.copy(self)
        frozen.net = copy.deepcopy(self.net).requires_grad_(False)
        return functools.partial(frozen.act, deterministic=True)

    # --- beam search ----------------------------------------------------------------------
    @torch.no_grad()
    def _search(self, obs: torch.Tensor, users: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """Upstream's beam search from each row's state, in groups of rows; the chosen item's
        path (or none, where the item was filled in) is kept in ``last_search``."""
        self.net.eval()
        parts = [
            self._beam_group(
                obs[s : s + _BEAM_USERS],
                users[s : s + _BEAM_USERS],
                None if allowed is None else allowed[s : s + _BEAM_USERS],
            )
            for s in range(0, len(users), _BEAM_USERS)
        ]
        found = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        self._counts["searched"] += len(users)
        self._counts["filled"] += float((~found["found"]).sum())
        self.last_search = found
        return found["item"]

    def _beam_group(
        self, obs: torch.Tensor, users: torch.Tensor, allowed: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        n = len(users)
        row = torch.arange(n, device=self.device)
        path, relation = users[:, None], torch.full_like(users, self.walker.self_loop)
        relations = users.new_zeros(n, 0)
        score = torch.zeros(n, device=self.device)
        for h, width in enumerate(self.cfg.beam):
            last = h == HOPS - 1
            acts = self.walker.actions(users[row], path, allowed if last else None, row if last else None)
            log_probs, _ = self._hop(users[row], obs[row], path, relation, acts)
            top = log_probs.topk(min(width, log_probs.shape[1]), dim=1)
            k = top.indices.shape[1]
            picked = acts.valid.gather(1, top.indices)
            keep = picked.flatten()
            score = (score[:, None] + top.values).flatten()[keep]
            relation = acts.relations.gather(1, top.indices).flatten()[keep]
            nxt = acts.entities.gather(1, top.indices).flatten()[keep]
            path = torch.cat([path.repeat_interleave(k, 0)[keep], nxt[:, None]], 1)
            relations = torch.cat([relations.repeat_interleave(k, 0)[keep], relation[:, None]], 1)
            row = row.repeat_interleave(k)[keep]
        return self._best_paths(users, allowed, row, path, relations, score)

    def _best_paths(
        self,
        users: torch.Tensor,
        allowed: torch.Tensor | None,
        row: torch.Tensor,
        path: torch.Tensor,
        relations: torch.Tensor,
        score: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Per row, of the items its successful paths reach, the TransE-best one and its most
        probable path; rows with none get the TransE-best allowed item and no path."""
        ok = self.walker.succeeded(path, relations, allowed, row)
        row, path, relations, score = row[ok], path[ok], relations[ok], score[ok]
        items = self.walker.items_of(path[:, -1])
        transe = self.walker.user_item_scores(users)
        fit = transe[row, items]
        # Sorted by row, then TransE score, then path probability, all descending but the row.
        order = torch.argsort(-score, stable=True)
        order = order[torch.argsort(-fit[order], stable=True)]
        order = order[torch.argsort(row[order], stable=True)]
        first = torch.ones(len(order), dtype=torch.bool, device=self.device)
        first[1:] = row[order][1:] != row[order][:-1]
        best = order[first]
        n = len(users)
        found = torch.zeros(n, dtype=torch.bool, device=self.device)
        found[row[best]] = True
        item = self._fill(users, allowed)
        item[row[best]] = items[best]
        best_path = torch.full((n, HOPS + 1), -1, dtype=torch.int64, device=self.device)
        best_rel = torch.full((n, HOPS), -1, dtype=torch.int64, device=self.device)
        best_path[row[best]], best_rel[row[best]] = path[best], relations[best]
        return {"item": item, "found": found, "path": best_path, "relations": best_rel}

    def explanations(self) -> list[str | None]:
        """The path behind each item of the last beam search, as text; None where no path
        reached an allowed item and the item was TransE's."""
        assert self.last_search is not None, "explanations follow a deterministic act"
        s = self.last_search
        return [
            self.walker.describe(p.tolist(), r.tolist()) if f else None
            for p, r, f in zip(s["path"], s["relations"], s["found"], strict=True)
        ]

    # --- collecting -----------------------------------------------------------------------
    def _reward(self, walk: dict[str, torch.Tensor], env_reward: torch.Tensor) -> torch.Tensor:
        """The walk's learning reward: the env's reward for its item (plus beta times upstream's
        soft reward) where it succeeded, 0 where the env's item was filled in."""
        reward = env_reward.to(self.device, torch.float32)
        if self.cfg.soft_reward_coef > 0:
            scores = self.walker.user_item_scores(walk["users"])
            items = self.walker.items_of(walk["path"][:, -1]).clamp_min(0)
            soft = scores.gather(1, items[:, None])[:, 0] / scores.max(1).values
            reward = reward + self.cfg.soft_reward_coef * soft.clamp_min(0)
        return torch.where(walk["success"], reward, torch.zeros_like(reward))

    def observe(self, real: Transitions) -> None:
        if self._pending is None:
            raise RuntimeError("PGPR.observe without explore: it learns from its own walks only")
        walk, self._pending = self._pending, None
        walk["reward"] = self._reward(walk, real.rewards)
        self.real.append({k: walk[k] for k in WALK})
        self._last = walk
        self._counts["walks"] += len(walk["users"])
        self._counts["failed"] += float((~walk["success"]).sum())

    def add_extra(self, extra: Transitions) -> None:
        """Synthesised rows along the walk behind their item: a twin (MACS, the random mask)
        shows its source row's item and takes that row's walk with its own state s_c; an
        alternative (CTRL) takes the drawn walk that reached its item. A row whose item no
        walk reached (a filled-in alternative) is left out."""
        if not len(extra):
            return
        if extra.source is None or self._last is None:
            raise ValueError("PGPR learns from synthesised transitions only with their real rows' source")
        source = extra.source.to(self.device)
        items = extra.actions.to(self.device).long()
        for walk, twin in ((self._last, True), *((d, False) for d in self._drawn)):
            match = walk["item"][source] == items
            if not twin:
                match &= walk["success"][source]
            if not bool(match.any()):
                continue
            picked = {k: walk[k][source[match]] for k in WALK if k != "reward"}
            if twin:
                picked["obs"] = extra.obs.to(self.device, torch.float32)[match]
            picked["reward"] = self._reward(picked, extra.rewards[match.cpu()])
            self.extra.append(picked)
            items = torch.where(match, -1, items)

    # --- learning -------------------------------------------------------------------------
    def learn(self) -> list[dict[str, float]]:
        if sum(len(w["users"]) for w in self.real) < self.cfg.batch_size:
            return []
        real, self.real = _cat(self.real), []
        extra, self.extra = (_cat(self.extra) if self.extra else None), []
        return [self.update(real, extra)]

    def update(
        self, real: dict[str, torch.Tensor], extra: dict[str, torch.Tensor] | None
    ) -> dict[str, float]:
        """One Adam step on a batch of walks, as upstream's; synthesised walks add their term."""
        self.net.train()
        losses = self._walk_loss(real, importance=False)
        loss = losses["loss"]
        if extra is not None and self.cfg.cf_coef > 0:
            cf = self._walk_loss(extra, importance=True)
            loss = loss + self.cfg.cf_coef * cf.pop("loss")
            losses.update({f"cf_{k}": v for k, v in cf.items()})
        losses["loss"] = loss
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.n_updates += 1
        sums: dict[str, float] = {}
        add_finite(
            sums,
            losses,
            f"pgpr: {{key}} became {{value}} at update {self.n_updates}; lower algo.learning_rate",
        )
        return sums

    def replay(self, walks: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The networks along stored walks, hop-major (HOPS x B rows): every slot's
        log-probability, the state values, and the log-probability of the slot taken."""
        hop_states, hop_acts = [], []
        for h in range(HOPS):
            prefix = walks["path"][:, : h + 1]
            relation = (
                walks["relations"][:, h - 1] if h else torch.full_like(walks["users"], self.walker.self_loop)
            )
            hop_states.append(self._state(walks["users"], prefix, relation))
            hop_acts.append(Actions(walks["entities"][:, h], walks["acts"][:, h], walks["valid"][:, h]))
        acts = Actions.cat(hop_acts)
        log_probs, values = self.net(
            torch.cat(hop_states), walks["obs"].repeat(HOPS, 1), self._vectors(acts), acts.valid
        )
        return log_probs, values, log_probs.gather(1, walks["slots"].T.reshape(-1, 1))[:, 0]

    def _walk_loss(self, walks: dict[str, torch.Tensor], *, importance: bool) -> dict[str, torch.Tensor]:
        """Upstream's actor-critic loss summed over hops, averaged over walks: -log pi (G - V)
        (weighted by min(rho, rho_bar) for synthesised walks), (G - V)^2, minus ent_weight
        times the entropy; G_h = gamma^(HOPS - 1 - h) R."""
        b = len(walks["users"])
        log_probs, values, logp = self.replay(walks)
        discount = self.cfg.gamma ** torch.arange(HOPS - 1, -1, -1, device=self.device, dtype=torch.float32)
        returns = (discount[:, None] * walks["reward"][None, :]).reshape(-1)
        advantage = (returns - values).detach()
        out: dict[str, torch.Tensor] = {}
        if importance:
            rho = (logp.view(HOPS, b).sum(0) - walks["logp"]).exp().detach()
            weight = rho.clamp(max=self.cfg.cf_clip).repeat(HOPS)
            advantage = advantage * weight
            out.update(rho_mean=rho.mean(), clip_frac=(rho > self.cfg.cf_clip).float().mean())
        entropy = -(log_probs.exp() * log_probs).sum(1)
        actor, critic = -(logp * advantage).sum() / b, (returns - values).square().sum() / b
        out.update(policy_loss=actor, value_loss=critic, entropy=entropy.sum() / b)
        out["loss"] = actor + critic - self.cfg.ent_weight * out["entropy"]
        return out

    def window_metrics(self) -> dict[str, float]:
        """The share of training walks that failed, and of beam-searched states (evaluation,
        MACS's queries) whose item was filled in from TransE, since the last call."""
        c, self._counts = self._counts, dict.fromkeys(self._counts, 0.0)
        out = {}
        if c["walks"]:
            out["pgpr/walk_fail_rate"] = c["failed"] / c["walks"]
        if c["searched"]:
            out["pgpr/beam_fill_rate"] = c["filled"] / c["searched"]
        return out

    # --- persistence --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "n_updates": self.n_updates,
            "graph_key": self.graph_key,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["graph_key"] != self.graph_key:
            raise ValueError(
                "the saved PGPR walked another knowledge graph (another dataset, split, kg.schema "
                "or side files)"
            )
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.n_updates = int(state["n_updates"])

    def training_state(self) -> dict[str, Any]:
        """The networks plus the walks of the update being gathered."""
        return {
            "model": self.state_dict(),
            "real": list(self.real),
            "extra": list(self.extra),
            "counts": dict(self._counts),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["model"])
        self.real, self.extra = list(state["real"]), list(state["extra"])
        self._counts = {k: float(v) for k, v in state["counts"].items()}

    def save(self, path: str | Path) -> None:
        save_agent(path, self.name, {"obs_dim": self.obs_dim, "n_items": self.n_items}, self.state_dict())

    def load(self, path: str | Path) -> None:
        sizes = {"obs_dim": self.obs_dim, "n_items": self.n_items}
        self.load_state_dict(load_agent(path, self.name, sizes, self.device))


def _cat(walks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([w[k] for w in walks]) for k in WALK}
