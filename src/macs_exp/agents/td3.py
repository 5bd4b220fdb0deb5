"""TD3 (Fujimoto et al., 2018): twin critics, delayed actor updates, target smoothing."""

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
from macs_exp.agents.networks import DeterministicActor, QEnsemble, randn
from macs_exp.schema import Rules


@dataclass
class DDPGConfig(OffPolicyConfig):
    """DDPG's schema lives here, as TD3's base: DDPG is TD3 with its three additions off."""

    # Std of the Gaussian exploration noise, in units of half the action range (0 disables it).
    action_noise: float = MISSING

    def rules(self) -> Rules:
        return {**super().rules(), "action_noise": (self.action_noise >= 0, "0 or more")}


@dataclass
class TD3Config(DDPGConfig):
    n_critics: int = MISSING
    policy_delay: int = MISSING
    target_policy_noise: float = MISSING
    target_noise_clip: float = MISSING

    def rules(self) -> Rules:
        return {
            **super().rules(),
            "n_critics": (self.n_critics >= 1, "at least 1"),
            "policy_delay": (self.policy_delay >= 1, "at least 1"),
            "target_policy_noise": (self.target_policy_noise >= 0, "0 or more"),
            "target_noise_clip": (self.target_noise_clip >= 0, "0 or more"),
        }


@plugins.agent("td3", TD3Config, order=30)
class TD3(OffPolicyAgent):
    name = "td3"
    cfg: TD3Config

    def __init__(
        self,
        cfg: TD3Config,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        device: torch.device | str,
        seed: int,
        items: ItemSpace | None = None,
    ) -> None:
        super().__init__(cfg, observation_space, action_space, device, seed, items)
        self.actor = DeterministicActor(self.obs_dim, self.act_dim, cfg.net_arch).to(self.device)
        self.critic = QEnsemble(self.obs_dim, self.act_dim, cfg.net_arch, cfg.n_critics).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = Adam(self.actor.parameters(), cfg.actor_learning_rate)
        self.critic_optimizer = Adam(self.critic.parameters(), cfg.learning_rate)
        self._wire()
        self._last_actor_loss = torch.zeros(())

    def _wire(self) -> None:
        self.actor_params = list(self.actor.parameters())
        self.update_critic_target = SoftUpdate(self.critic_target, self.critic, self.cfg.tau)
        self.update_actor_target = SoftUpdate(self.actor_target, self.actor, self.cfg.tau)

    def _policy(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        action = self.actor(obs)
        if deterministic or self.cfg.action_noise <= 0:
            return action
        noise = randn(action.shape, self.generator, self.device)
        return (action + self.cfg.action_noise * noise).clamp(-1.0, 1.0)

    def _train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One update; every reduction counts from the last dimension, so that the same lines
        train one agent and a seed stack (losses of shape () or (K,))."""
        cfg = self.cfg
        with torch.no_grad():
            next_actions = self.actor_target(batch.next_obs)
            if cfg.target_policy_noise > 0:
                noise = randn(next_actions.shape, self.generator, self.device)
                noise = (cfg.target_policy_noise * noise).clamp(-cfg.target_noise_clip, cfg.target_noise_clip)
                next_actions = (next_actions + noise).clamp(-1.0, 1.0)
            next_q = self._target_values(batch.next_obs, next_actions)
            target_q = batch.rewards + cfg.gamma * (1.0 - batch.dones) * next_q

        q = self.critic(batch.obs, batch.actions)
        critic_loss = ((q - target_q.unsqueeze(-2)) ** 2).mean(dim=-1).sum(dim=-1)
        self.critic_optimizer.zero_grad()
        critic_loss.sum().backward()
        self.critic_optimizer.step()

        # n_updates counts completed updates; SB3 trains the actor on every policy_delay-th one.
        if (self.n_updates + 1) % cfg.policy_delay == 0:
            actor_loss = -self.critic(batch.obs, self.actor(batch.obs))[..., 0, :].mean(dim=-1)
            self.actor_optimizer.zero_grad()
            # Gradients for the actor only: the critic's weight gradients would be discarded.
            actor_loss.sum().backward(inputs=self.actor_params)
            self.actor_optimizer.step()
            self.update_critic_target()
            self.update_actor_target()
            self._last_actor_loss = actor_loss.detach()
        return {"critic_loss": critic_loss.detach(), "actor_loss": self._last_actor_loss}

    def modules(self) -> dict[str, torch.nn.Module | Adam]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "actor_target": self.actor_target,
            "critic_target": self.critic_target,
            "actor_optimizer": self.actor_optimizer,
            "critic_optimizer": self.critic_optimizer,
        }
