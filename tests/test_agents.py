from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import transitions
from macs_exp.agents import DivergenceError, make_agent
from macs_exp.agents.buffer import ReplayBuffer
from macs_exp.app import compose_config

OBS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
ACT = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
ALGOS = ["ddpg", "td3", "sac"]


def agent_cfg(algo: str, *overrides: str):
    base = [
        f"algo={algo}",
        "algo.net_arch=[32,32]",
        "algo.batch_size=64",
        "algo.buffer_size=5000",
        *overrides,
    ]
    return OmegaConf.to_object(compose_config(base).algo)


def test_buffer_wraps_around_and_keeps_fields_apart() -> None:
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1, device=torch.device("cpu"))
    for start in (0, 3, 6):
        k = torch.arange(start, start + 3, dtype=torch.float32)
        buf.add(k[:, None].repeat(1, 2), -k[:, None], 10 * k, 100 + k[:, None].repeat(1, 2), (k % 2))
    assert len(buf) == 5 and buf.pos == 4
    assert sorted(buf.data[:, 0].tolist()) == [4, 5, 6, 7, 8]
    batch = buf.sample(256, torch.Generator().manual_seed(0))
    assert torch.equal(batch.actions[:, 0], -batch.obs[:, 0])
    assert torch.equal(batch.rewards, 10 * batch.obs[:, 0])
    assert torch.equal(batch.next_obs, 100 + batch.obs)
    assert torch.equal(batch.dones, batch.obs[:, 0] % 2)


@pytest.mark.parametrize("algo", ALGOS)
def test_actions_are_batched_bounded_and_reproducible(algo: str) -> None:
    a1 = make_agent(agent_cfg(algo), OBS, ACT, "cpu", seed=3)
    a2 = make_agent(agent_cfg(algo), OBS, ACT, "cpu", seed=3)
    obs = torch.rand(7, 4) * 2 - 1
    for deterministic in (True, False):
        x, y = a1.act(obs, deterministic), a2.act(obs, deterministic)
        assert x.shape == (7, 2)
        assert torch.equal(x, y)
        assert bool((x.abs() <= 2.0).all())
    assert not torch.equal(a1.act(obs), a1.act(obs, deterministic=True))


@pytest.mark.parametrize("algo", ALGOS)
def test_learns_the_best_action_of_a_contextual_bandit(algo: str) -> None:
    """Reward -(a - 1.5 * obs[:2])^2, episodes of one step: the optimum is known exactly."""
    agent = make_agent(agent_cfg(algo, "algo.actor_learning_rate=3e-3", "algo.tau=0.05"), OBS, ACT, "cpu", 0)
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        obs = torch.rand(64, 4, generator=g) * 2 - 1
        actions = torch.rand(64, 2, generator=g) * 4 - 2
        reward = -((actions - 1.5 * obs[:, :2]) ** 2).sum(1)
        agent.store(transitions(obs, actions, reward, obs, torch.ones(64)))
    agent.update(1500)
    test_obs = torch.rand(256, 4, generator=g) * 2 - 1
    err = (agent.act(test_obs, deterministic=True) - 1.5 * test_obs[:, :2]).abs().mean().item()
    assert err < 0.25, f"{algo} mean action error {err:.3f}"


@pytest.mark.parametrize("algo", ALGOS)
def test_checkpoint_round_trip(algo: str, tmp_path: Path) -> None:
    agent = make_agent(agent_cfg(algo), OBS, ACT, "cpu", seed=0)
    agent.store(
        transitions(
            torch.rand(100, 4), torch.rand(100, 2), torch.rand(100), torch.rand(100, 4), torch.zeros(100)
        )
    )
    agent.update(5)
    agent.save(tmp_path / "a.pt")
    other = make_agent(agent_cfg(algo), OBS, ACT, "cpu", seed=99)
    other.load(tmp_path / "a.pt")
    obs = torch.rand(5, 4)
    assert torch.equal(agent.act(obs, deterministic=True), other.act(obs, deterministic=True))
    assert other.n_updates == 5
    # The restored optimiser and generator continue exactly where the original stopped.
    other.buffer, agent_losses = agent.buffer, agent.update(3)
    assert other.update(3) == agent_losses


def test_loading_another_algorithm_is_refused(tmp_path: Path) -> None:
    make_agent(agent_cfg("td3"), OBS, ACT, "cpu", 0).save(tmp_path / "td3.pt")
    with pytest.raises(ValueError, match="td3"):
        make_agent(agent_cfg("sac"), OBS, ACT, "cpu", 0).load(tmp_path / "td3.pt")


@pytest.mark.parametrize("algo", ALGOS)
def test_nan_rewards_stop_training_with_a_clear_error(algo: str) -> None:
    agent = make_agent(agent_cfg(algo), OBS, ACT, "cpu", 0)
    agent.store(
        transitions(
            torch.rand(64, 4),
            torch.rand(64, 2),
            torch.full((64,), float("nan")),
            torch.rand(64, 4),
            torch.zeros(64),
        )
    )
    with pytest.raises(DivergenceError, match="critic_loss became nan at update 1"):
        agent.update(2)


@pytest.mark.parametrize(
    ("algo", "override", "key"),
    [
        ("ddpg", "algo.batch_size=0", "algo.batch_size"),
        ("td3", "algo.gamma=1.5", "algo.gamma"),
        ("td3", "algo.policy_delay=0", "algo.policy_delay"),
        ("sac", "algo.gradient_steps=0", "algo.gradient_steps"),
        ("sac", "algo.net_arch=[64,0]", "algo.net_arch"),
        ("ddpg", "algo.action_noise=-0.1", "algo.action_noise"),
    ],
)
def test_impossible_hyperparameters_are_rejected_by_name(algo: str, override: str, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        make_agent(agent_cfg(algo, override), OBS, ACT, "cpu", 0)


def test_lean_adam_matches_torch_adam() -> None:
    from macs_exp.agents.base import Adam

    torch.manual_seed(0)
    ours = [torch.randn(5, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    opt_ours, opt_theirs = Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    for step in range(5):
        for group, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            loss = sum(((p - step) ** 2).sum() for p in group)
            loss.backward()
            opt.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
    restored = Adam([p.detach().clone() for p in ours], lr=1e-2)
    restored.load_state_dict(opt_ours.state_dict())
    assert torch.equal(restored.exp_avg_sq[0], opt_ours.exp_avg_sq[0]) and restored.steps[1].item() == 5
