"""TPGR: tree-structured policy gradient (Chen et al., AAAI 2019), after the official code
(chenhaokun/TPGR) and ``shared/methods/TPGR.md``; docs/tpgr.md has every choice made here.

An item is chosen by walking a balanced clustering tree of the env's items (``agents.tree``)
from the root to a leaf; each internal node has its own linear softmax over its children, all
held as one (nodes, hidden, children) tensor. At each node the policy's probabilities are
weighted by the share of still-allowed items under each child (upstream's exhausted-subtree
mask, fed from the env's ``allowed`` items), so excluded and repeated items are never drawn.
Training samples from that distribution, evaluation takes its argmax at every node.

Learning is REINFORCE over whole episodes: every ``batch_episodes`` finished episodes, discounted
returns minus a learned state value, standardised over the batch, weight the log-probability of
the masked distribution that was sampled from; upstream's pull of every visited node's softmax
toward uniform and its L2 are added, and there is one Adam step per time step of the batch, as
upstream. Synthesised transitions (MACS's twins, CTRL's alternatives) enter through a
truncated importance-weighted term (docs/macs.md, "On-policy recommenders").
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from omegaconf import MISSING
from torch import nn
from torch.nn import functional as F

from macs_exp import plugins
from macs_exp.agents.base import add_finite
from macs_exp.agents.episodes import EpisodeBatch, Episodes
from macs_exp.agents.items import ItemSpace
from macs_exp.agents.networks import MLP
from macs_exp.agents.protocol import AgentConfig, Policy, Transitions
from macs_exp.agents.saved import load_agent, save_agent
from macs_exp.agents.tree import SPLITS, ItemTree, build_tree, children_for
from macs_exp.schema import ConfigError, Rules, check

ENCODERS = ("gru", "mlp")
BASELINES = ("value", "none")


@dataclass
class TPGRConfig(AgentConfig):
    """TPGR's hyperparameters, upstream's names in the comments (its ``config`` file)."""

    learning_rate: float = MISSING  # LEARNING_RATE
    gamma: float = MISSING  # DISCOUNT_FACTOR
    weight_decay: float = MISSING  # the L2 factor
    uniform_coef: float = MISSING  # ENTROPY_FACTOR: an MSE to the uniform node policy
    batch_episodes: int = MISSING  # episodes per update (upstream: users x episodes)
    tree_split: str = MISSING  # CLUSTERING_TYPE: pca | kmeans | random
    tree_depth: int = MISSING  # TREE_DEPTH
    # CHILD_NUM; null: the fewest that give every item a leaf, ceil(n_items^(1/depth)).
    tree_children: int | None = MISSING
    encoder: str = MISSING  # gru over the state's items | mlp over the whole state
    encoder_dim: int = MISSING
    baseline: str = MISSING  # value: a learned V(s) | none: the batch's mean return
    cf_coef: float = MISSING  # lambda_cf, the weight of the synthesised transitions' term
    cf_clip: float = MISSING  # rho_bar, where their importance weights are truncated

    def rules(self) -> Rules:
        return {
            "learning_rate": (self.learning_rate > 0, "positive"),
            "gamma": (0 <= self.gamma <= 1, "in [0, 1]"),
            "weight_decay": (self.weight_decay >= 0, "0 or more"),
            "uniform_coef": (self.uniform_coef >= 0, "0 or more"),
            "batch_episodes": (self.batch_episodes >= 2, "at least 2 (returns are standardised over them)"),
            "tree_split": (self.tree_split in SPLITS, f"one of {', '.join(SPLITS)}"),
            "tree_depth": (self.tree_depth >= 1, "at least 1"),
            "tree_children": (self.tree_children is None or self.tree_children >= 2, "null or at least 2"),
            "encoder": (self.encoder in ENCODERS, f"one of {', '.join(ENCODERS)}"),
            "encoder_dim": (self.encoder_dim >= 1, "at least 1"),
            "baseline": (self.baseline in BASELINES, f"one of {', '.join(BASELINES)}"),
            "cf_coef": (self.cf_coef >= 0, "0 or more"),
            "cf_clip": (self.cf_clip > 0, "positive"),
        }


class TreePolicy(nn.Module):
    """The state encoder, the node policies and the value baseline."""

    def __init__(self, obs_dim: int, token_dim: int, cfg: TPGRConfig, tree: ItemTree) -> None:
        super().__init__()
        h = cfg.encoder_dim
        self.tokens = obs_dim // token_dim if cfg.encoder == "gru" else 0
        self.token_dim = token_dim
        self.gru = nn.GRU(token_dim, h, batch_first=True) if self.tokens else None
        self.mlp = MLP(obs_dim, h, [h]) if not self.tokens else None
        bound = 1.0 / math.sqrt(h)
        self.node_weight = nn.Parameter(torch.empty(tree.n_nodes, h, tree.children).uniform_(-bound, bound))
        self.node_bias = nn.Parameter(torch.zeros(tree.n_nodes, tree.children))
        self.value = MLP(h, 1, [h])
        self.tree = tree

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        if self.gru is not None:
            _, last = self.gru(obs.view(obs.shape[0], self.tokens, self.token_dim))
            return last[0]
        assert self.mlp is not None
        return torch.tanh(self.mlp(obs))

    def walk(
        self,
        h: torch.Tensor,
        allowed: torch.Tensor,
        *,
        codes: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Root to leaf for each row of ``h``: along the given ``codes`` (B, depth), by drawing
        (``generator``) or greedily. Returns the codes, the log-probability of the masked
        distribution along them (B,), and upstream's MSE of the raw node softmaxes to uniform."""
        tree, rows = self.tree, torch.arange(h.shape[0], device=h.device)
        # A row with nothing allowed (a caller's mask: CTRL's alternatives to a rated episode's
        # last candidate) walks over every item, so it still ends at an item's leaf.
        some = allowed.any(1, keepdim=True)
        if not bool(some.all()):
            allowed = torch.where(some, allowed, torch.ones_like(allowed))
        leaves = tree.leaf_mask(allowed)
        prefix = torch.zeros(h.shape[0], dtype=torch.int64, device=h.device)
        logp = torch.zeros(h.shape[0], device=h.device)
        uniform = torch.zeros((), device=h.device)
        chosen = []
        for level in range(tree.depth):
            counts = tree.child_counts(leaves, level, prefix)
            node = tree.level_offset(level) + prefix
            logits = torch.bmm(h[:, None, :], self.node_weight[node])[:, 0] + self.node_bias[node]
            probs = F.softmax(logits, dim=-1)
            masked = probs.clamp_min(1e-30) * counts
            masked = masked / masked.sum(-1, keepdim=True)
            if codes is not None:
                child = codes[:, level]
            elif generator is not None:
                child = torch.multinomial(masked.detach(), 1, generator=generator)[:, 0]
            else:
                child = masked.argmax(-1)
            logp = logp + masked[rows, child].clamp_min(1e-30).log()
            uniform = uniform + (probs - 1.0 / tree.children).square().mean()
            chosen.append(child)
            prefix = prefix * tree.children + child
        return torch.stack(chosen, 1), logp, uniform / tree.depth


@plugins.agent("tpgr", TPGRConfig, order=40)
class TPGR:
    name = "tpgr"

    def __init__(
        self,
        cfg: TPGRConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        device: torch.device | str,
        seed: int,
        items: ItemSpace | None = None,
    ) -> None:
        check(cfg, "algo")
        if items is None:
            raise ConfigError(
                "algo=tpgr chooses items itself and needs an env with an item catalogue "
                "(env.id=MACS/Rating-v0: env=ml100k, ml1m, douban_book, bookcrossing, tiny_ratings)"
            )
        if not isinstance(observation_space, gym.spaces.Box):
            raise TypeError("TPGR needs a Box observation space")
        self.cfg = cfg
        self.device = torch.device(device)
        self.obs_dim = int(observation_space.shape[0])
        self.n_items = items.n_items
        token_dim = int(items.features.shape[1])
        if cfg.encoder == "gru" and self.obs_dim % token_dim:
            raise ConfigError(
                f"algo.encoder=gru reads the state as items of {token_dim} features, but it has "
                f"{self.obs_dim} values; use algo.encoder=mlp"
            )
        children = children_for(self.n_items, cfg.tree_depth, cfg.tree_children)
        if children**cfg.tree_depth < self.n_items:
            raise ConfigError(
                f"algo.tree_children={children} with algo.tree_depth={cfg.tree_depth} gives "
                f"{children**cfg.tree_depth} leaves for {self.n_items} items; raise either, or set "
                "algo.tree_children=null"
            )
        features = items.features.cpu().numpy()
        self.tree = build_tree(features, cfg.tree_depth, children, cfg.tree_split, seed).to(self.device)
        torch.manual_seed(seed)
        self.policy = TreePolicy(self.obs_dim, token_dim, cfg, self.tree).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.episodes: Episodes | None = None
        self._pending: dict[str, torch.Tensor] | None = None
        self.n_updates = 0

    # --- acting -------------------------------------------------------------------------
    def _allowed(self, obs: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        if allowed is None:
            return torch.ones(obs.shape[0], self.n_items, dtype=torch.bool, device=self.device)
        return allowed.to(self.device)

    def _draw(
        self, obs: torch.Tensor, allowed: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Items (N,) int64 drawn with ``generator`` (greedy without one) and their log-probability."""
        with torch.no_grad():
            codes, logp, _ = self.policy.walk(self.policy.encode(obs), allowed, generator=generator)
        return self.tree.items(codes), logp

    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        allowed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        obs = obs.to(self.device, torch.float32)
        return self._draw(obs, self._allowed(obs, allowed), None if deterministic else self.generator)[0]

    def explore(
        self, obs: torch.Tensor, allowed: torch.Tensor | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A draw from the masked tree policy, remembered (with its mask and probability) until
        ``observe`` brings its rewards."""
        obs = obs.to(self.device, torch.float32)
        mask = self._allowed(obs, allowed)
        items, logp = self._draw(obs, mask, self.generator)
        self._pending = {"obs": obs, "item": items, "allowed": mask, "logp": logp}
        return items

    def sample_actions(
        self,
        obs: torch.Tensor,
        allowed: torch.Tensor,
        generator: torch.Generator,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Items drawn from the behaviour policy with the caller's stream (CTRL's a')."""
        obs = obs.to(self.device, torch.float32)
        return self._draw(obs, allowed.to(self.device), generator)[0]

    def frozen_policy(self) -> Policy:
        """The greedy walk of a copy of the current networks."""
        frozen = copy.copy(self)
        frozen.policy = copy.deepcopy(self.policy).requires_grad_(False)
        return functools.partial(frozen.act, deterministic=True)

    # --- collecting -----------------------------------------------------------------------
    def observe(self, real: Transitions) -> None:
        if self._pending is None:
            raise RuntimeError("TPGR.observe without explore: it learns from its own draws only")
        if self.episodes is None:
            self.episodes = Episodes(len(real), self.cfg.gamma)
        step, self._pending = self._pending, None
        step["reward"] = real.rewards.to(self.device, torch.float32)
        self.episodes.add_real(step, (real.terminated | real.truncated).to(self.device))

    def add_extra(self, extra: Transitions) -> None:
        """Synthesised rows, attached to the real rows they came from (``Transitions.source``),
        with the behaviour policy's log-probability of their action at the source row's state."""
        if not len(extra):
            return
        if extra.source is None or self.episodes is None:
            raise ValueError("TPGR learns from synthesised transitions only with their real rows' source")
        source = extra.source.to(self.device)
        last = self.episodes.real[-1]
        items = extra.actions.to(self.device).long()
        with torch.no_grad():
            codes = self.tree.codes[items]
            _, logp, _ = self.policy.walk(
                self.policy.encode(last["obs"][source]), last["allowed"][source], codes=codes
            )
        rows = {
            "obs": extra.obs.to(self.device, torch.float32),
            "item": items,
            "reward": extra.rewards.to(self.device, torch.float32),
            "next_obs": extra.next_obs.to(self.device, torch.float32),
            "terminated": extra.terminated.to(self.device),
            "continues": torch.full((len(extra),), extra.continues_real, device=self.device),
            "logp": logp,
        }
        self.episodes.add_extra(rows, source)

    # --- learning -------------------------------------------------------------------------
    def learn(self) -> list[dict[str, float]]:
        if self.episodes is None or self.episodes.n_finished < self.cfg.batch_episodes:
            return []
        return [self.update(self.episodes.take())]

    def update(self, batch: EpisodeBatch) -> dict[str, float]:
        """One Adam step per time step of the batch, as upstream; returns the mean losses."""
        real, extra = batch.real, batch.extra
        scale = self._advantage_scale(real)
        sums: dict[str, float] = {}
        steps = torch.unique(real["t"])
        for t in steps:
            at_t = real["t"] == t
            extra_t = real["t"][extra["at"]] == t if extra else None
            losses = self._loss(real, at_t, extra, extra_t, scale)
            self.optimizer.zero_grad()
            losses["loss"].backward()
            self.optimizer.step()
            self.n_updates += 1
            add_finite(
                sums,
                losses,
                f"tpgr: {{key}} became {{value}} at update {self.n_updates}; lower algo.learning_rate",
            )
        return {k: v / len(steps) for k, v in sums.items()}

    def _advantage_scale(self, real: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The standardisation of the batch, fixed before its updates: the offset of a return
        (the state's value, or the batch's mean return) is per row; the spread is the batch's."""
        with torch.no_grad():
            if self.cfg.baseline == "value":
                offset = self.policy.value(self.policy.encode(real["obs"]))[:, 0]
            else:
                offset = real["ret"].mean().expand_as(real["ret"])
            spread = (real["ret"] - offset).std(correction=0).clamp_min(1e-6)
        return offset, spread

    def _loss(
        self,
        real: dict[str, torch.Tensor],
        rows: torch.Tensor,
        extra: dict[str, torch.Tensor],
        extra_rows: torch.Tensor | None,
        scale: tuple[torch.Tensor, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        offset, spread = scale
        codes = self.tree.codes
        h = self.policy.encode(real["obs"][rows])
        _, logp, uniform = self.policy.walk(h, real["allowed"][rows], codes=codes[real["item"][rows]])
        advantage = (real["ret"][rows] - offset[rows]) / spread
        policy_loss = -(logp * advantage).mean()
        loss = policy_loss + self.cfg.uniform_coef * uniform
        losses = {"policy_loss": policy_loss, "uniform_loss": uniform}
        if self.cfg.baseline == "value":
            value = self.policy.value(h.detach())[:, 0]
            losses["value_loss"] = F.mse_loss(value, real["ret"][rows])
            loss = loss + losses["value_loss"]
        if extra_rows is not None and bool(extra_rows.any()) and self.cfg.cf_coef > 0:
            cf = self._extra_loss(real, {k: v[extra_rows] for k, v in extra.items()}, spread)
            losses.update(cf)
            loss = loss + self.cfg.cf_coef * cf["cf_loss"]
        losses["loss"] = loss
        return losses

    def _extra_loss(
        self, real: dict[str, torch.Tensor], extra: dict[str, torch.Tensor], spread: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """-min(rho, rho_bar) A log pi(a | s) over synthesised rows. A row that continues its
        source's real trajectory returns r + gamma G_{t+1}; one with a generated next state
        r + gamma V(s') (0 after a real end). Its offset is its own state's value (or the
        batch's mean return), its spread the real rows'."""
        h = self.policy.encode(extra["obs"])
        allowed = real["allowed"][extra["at"]]
        _, logp, _ = self.policy.walk(h, allowed, codes=self.tree.codes[extra["item"]])
        with torch.no_grad():
            if self.cfg.baseline == "value":
                bootstrap = self.policy.value(self.policy.encode(extra["next_obs"]))[:, 0]
                offset = self.policy.value(h)[:, 0]
            else:
                bootstrap = torch.zeros_like(extra["reward"])
                offset = real["ret"].mean().expand_as(extra["reward"])
            future = torch.where(extra["continues"], real["next_ret"][extra["at"]], bootstrap)
            future = future.masked_fill(extra["terminated"] & ~extra["continues"], 0.0)
            advantage = (extra["reward"] + self.cfg.gamma * future - offset) / spread
            rho = (logp - extra["logp"]).exp()
            weight = rho.clamp(max=self.cfg.cf_clip)
        return {
            "cf_loss": -(weight * advantage * logp).mean(),
            "cf_rho_mean": rho.mean(),
            "cf_clip_frac": (rho > self.cfg.cf_clip).float().mean(),
        }

    # --- persistence --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "n_updates": self.n_updates,
            "tree_codes": self.tree.codes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not torch.equal(state["tree_codes"], self.tree.codes):
            raise ValueError(
                "the saved TPGR was built over another item tree (another catalogue, tree_split, "
                "tree_depth, tree_children or seed)"
            )
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.n_updates = int(state["n_updates"])

    def training_state(self) -> dict[str, Any]:
        """The networks plus the episodes still being collected."""
        return {
            "model": self.state_dict(),
            "episodes": None if self.episodes is None else self.episodes.state(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["model"])
        if state["episodes"] is not None:
            self.episodes = Episodes(len(state["episodes"]["episode"]), self.cfg.gamma)
            self.episodes.load_state(state["episodes"])

    def save(self, path: str | Path) -> None:
        save_agent(path, self.name, {"obs_dim": self.obs_dim, "n_items": self.n_items}, self.state_dict())

    def load(self, path: str | Path) -> None:
        sizes = {"obs_dim": self.obs_dim, "n_items": self.n_items}
        self.load_state_dict(load_agent(path, self.name, sizes, self.device))
