"""SAC (Haarnoja et al., 2018) with a learned entropy coefficient, following SB3's choices.

Under ``action_mapping=knn`` the squashed Gaussian samples the proto-action and the critic then
picks among its nearest items: the entropy bonus spreads the proto-actions (which widens the
items that reach the candidate set), not the distribution over items, which is not modelled.
The critic's target therefore leaves the bonus out: it learns the value of the items chosen,
and the actor alone is regularised. With the bonus in (tried on the one-best-item test env of
tests/test_knn.py), its high-variance, item-independent term swamped the items' rewards while
the entropy coefficient was large, and SAC never chose the best item again after warm-up.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from omegaconf import MISSING

from macs_exp import plugins
from macs_exp.agents.base import Adam, OffPolicyAgent, OffPolicyConfig, SoftUpdate
from macs_exp.agents.buffer import Batch
from macs_exp.agents.items import ItemSpace
from macs_exp.agents.networks import QEnsemble, SquashedGaussianActor
from macs_exp.schema import Rules


@dataclass
class SACConfig(OffPolicyConfig):
    n_critics: int = MISSING
    # "auto", "auto_<init>" (learned, starting at <init>) or a fixed number, as in SB3.
    ent_coef: str = MISSING
    # "auto" (= -dim(action)) or a number.
    target_entropy: str = MISSING
    target_update_interval: int = MISSING
    log_std_min: float = MISSING
    log_std_max: float = MISSING

    def rules(self) -> Rules:
        return {
            **super().rules(),
            "n_critics": (self.n_critics >= 1, "at least 1"),
            "ent_coef": (
                self.ent_coef == "auto" or _number(self.ent_coef.removeprefix("auto_")) is not None,
                "'auto', 'auto_<initial value>' or a number (e.g. 0.1)",
            ),
            "target_entropy": (
                self.target_entropy == "auto" or _number(self.target_entropy) is not None,
                "'auto' or a number (e.g. -3)",
            ),
            "target_update_interval": (self.target_update_interval >= 1, "at least 1"),
        }


@plugins.agent("sac", SACConfig, order=20)
class SAC(OffPolicyAgent):
    name = "sac"
    cfg: SACConfig

    def __init__(
        self,
        cfg: SACConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        device: torch.device | str,
        seed: int,
        items: ItemSpace | None = None,
    ) -> None:
        super().__init__(cfg, observation_space, action_space, device, seed, items)
        self.actor = SquashedGaussianActor(
            self.obs_dim, self.act_dim, cfg.net_arch, cfg.log_std_min, cfg.log_std_max
        ).to(self.device)
        self.critic = QEnsemble(self.obs_dim, self.act_dim, cfg.net_arch, cfg.n_critics).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = Adam(self.actor.parameters(), cfg.actor_learning_rate)
        self.critic_optimizer = Adam(self.critic.parameters(), cfg.learning_rate)
        self._wire()

        # The schema's rules have checked that these parse.
        self.target_entropy = (
            -float(self.act_dim) if cfg.target_entropy == "auto" else float(cfg.target_entropy)
        )
        self.learn_ent_coef = cfg.ent_coef.startswith("auto")
        if self.learn_ent_coef:
            init = float(cfg.ent_coef.split("_", 1)[1]) if "_" in cfg.ent_coef else 1.0
            self.log_ent_coef = torch.tensor([init], device=self.device).log().requires_grad_(True)
            self.ent_coef_optimizer: Adam | None = Adam([self.log_ent_coef], cfg.learning_rate)
        else:
            self.log_ent_coef = torch.tensor([float(cfg.ent_coef)], device=self.device).log()
            self.ent_coef_optimizer = None

    def _wire(self) -> None:
        self.actor_params = list(self.actor.parameters())
        self.update_critic_target = SoftUpdate(self.critic_target, self.critic, self.cfg.tau)

    def member_tensors(self) -> tuple[str, ...]:
        return ("log_ent_coef",)

    def _policy(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor(obs, deterministic, self.generator)[0]

    def _train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One update; every reduction counts from the last dimension, so that the same lines
        train one agent and a seed stack (losses of shape () or (K,))."""
        cfg = self.cfg
        actions_pi, log_prob = self.actor(batch.obs, generator=self.generator)
        losses: dict[str, torch.Tensor] = {}
        if self.ent_coef_optimizer is not None:
            ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean(dim=-1)
            self.ent_coef_optimizer.zero_grad()
            ent_coef_loss.sum().backward()
            self.ent_coef_optimizer.step()
            losses["ent_coef_loss"] = ent_coef_loss.detach()
        ent_coef = self.log_ent_coef.detach().exp()

        with torch.no_grad():
            next_actions, next_log_prob = self.actor(batch.next_obs, generator=self.generator)
            next_q = self._target_values(batch.next_obs, next_actions)
            if self.mapping is None:
                # Under knn the bonus is left out: the item is a deterministic function of the
                # proto-action, so log pi(proto) is not the item policy's entropy (module doc).
                next_q = next_q - ent_coef * next_log_prob
            target_q = batch.rewards + cfg.gamma * (1.0 - batch.dones) * next_q

        q = self.critic(batch.obs, batch.actions)
        critic_loss = 0.5 * ((q - target_q.unsqueeze(-2)) ** 2).mean(dim=-1).sum(dim=-1)
        self.critic_optimizer.zero_grad()
        critic_loss.sum().backward()
        self.critic_optimizer.step()

        q_pi = self.critic(batch.obs, actions_pi).min(dim=-2).values
        actor_loss = (ent_coef * log_prob - q_pi).mean(dim=-1)
        self.actor_optimizer.zero_grad()
        # Gradients for the actor only: the critic's weight gradients would be discarded.
        actor_loss.sum().backward(inputs=self.actor_params)
        self.actor_optimizer.step()

        if (self.n_updates + 1) % cfg.target_update_interval == 0:
            self.update_critic_target()
        losses.update(
            critic_loss=critic_loss.detach(), actor_loss=actor_loss.detach(), ent_coef=ent_coef[..., 0]
        )
        return losses

    def modules(self) -> dict[str, torch.nn.Module | Adam]:
        mods: dict[str, torch.nn.Module | Adam] = {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "actor_optimizer": self.actor_optimizer,
            "critic_optimizer": self.critic_optimizer,
        }
        if self.ent_coef_optimizer is not None:
            mods["ent_coef_optimizer"] = self.ent_coef_optimizer
        return mods

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_ent_coef": self.log_ent_coef.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_ent_coef.copy_(state["log_ent_coef"])


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
