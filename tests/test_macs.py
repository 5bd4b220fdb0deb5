"""MACS's pieces against hand-computed values: the reward-distribution KL, Eqs. 11-12, the
threshold schedule, the random mask, and counterfactual queries that leave trajectories alone."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import transitions
from macs_exp.agents import make_agent
from macs_exp.app import compose_config
from macs_exp.envs.base import env_info
from macs_exp.envs.factory import make_batched_env
from macs_exp.envs.gym_batched import GymBatchedEnv
from macs_exp.macs import (
    ThresholdSchedule,
    intervene,
    kl_divergence,
    random_mask,
    reward_histograms,
    reward_kl,
    scale_rewards,
    synthesis_reward,
)

# R = [0, 0, 1] and R' = [1, 1, 1] over two bins, smoothed by 0.5 per bin:
# P(R) = (2.5, 1.5) / 4 and P(R') = (0.5, 3.5) / 4.
KL_R_PRIME_R = 0.125 * math.log(0.125 / 0.625) + 0.875 * math.log(0.875 / 0.375)  # 0.54021
KL_R_R_PRIME = 0.625 * math.log(0.625 / 0.125) + 0.375 * math.log(0.375 / 0.875)  # 0.68816


def test_histograms_put_each_integer_reward_in_its_own_bin() -> None:
    rewards = torch.tensor([[0.0, 1, 2, 9, 10, 10, 12, -3]])
    counts = reward_histograms(rewards, (0.0, 10.0), 11)
    assert counts.tolist() == [[2, 1, 1, 0, 0, 0, 0, 0, 0, 1, 3]]
    weights = torch.tensor([[1, 1, 1, 1, 0, 0, 1, 1]])
    assert reward_histograms(rewards, (0.0, 10.0), 11, weights).tolist() == [
        [2, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    ]


def test_kl_matches_hand_computed_values_in_both_directions() -> None:
    observed = torch.tensor([[0.0, 0.0, 1.0]])
    intervened = torch.tensor([[1.0, 1.0, 1.0]])
    eq11 = reward_kl(observed, intervened, (0.0, 1.0), 2, 0.5, "eq11")
    alg2 = reward_kl(observed, intervened, (0.0, 1.0), 2, 0.5, "algorithm2")
    assert eq11.item() == pytest.approx(KL_R_PRIME_R, abs=1e-9)
    assert alg2.item() == pytest.approx(KL_R_R_PRIME, abs=1e-9)
    assert pytest.approx(0.540206, abs=1e-6) == KL_R_PRIME_R
    with pytest.raises(ValueError, match=r"macs\.kl_direction='sideways'"):
        reward_kl(observed, intervened, (0.0, 1.0), 2, 0.5, "sideways")


def test_kl_is_per_user_and_ignores_invalid_intervened_rewards() -> None:
    observed = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    # User 1's last intervened reward does not exist (its intervention ended the episode).
    intervened = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    kl = reward_kl(observed, intervened, (0.0, 1.0), 2, 0.5, "eq11", valid)
    assert kl[0].item() == pytest.approx(KL_R_PRIME_R)
    # R' = [1, 1] -> (0.5, 2.5) / 3; R = [1, 1, 1] -> (0.5, 3.5) / 4.
    expected = (0.5 / 3) * math.log((0.5 / 3) / 0.125) + (2.5 / 3) * math.log((2.5 / 3) / 0.875)
    assert kl[1].item() == pytest.approx(expected)


def test_identical_distributions_have_zero_kl() -> None:
    counts = torch.tensor([3.0, 0.0, 7.0])
    assert kl_divergence(counts, counts, 0.5).item() == pytest.approx(0.0, abs=1e-12)


def test_rewards_of_eq11_and_eq12() -> None:
    kl = torch.tensor([KL_R_PRIME_R, 0.0])
    eq11 = synthesis_reward(kl, 0.1)
    assert eq11.tolist() == pytest.approx([1 / (KL_R_PRIME_R + 0.1), 10.0])
    assert eq11[0].item() == pytest.approx(1.561997, abs=1e-5)
    scaled = scale_rewards(torch.tensor([3.0, 10.0]), (0.0, 10.0))
    assert scaled.tolist() == pytest.approx([0.3, 1.0])
    eq12 = synthesis_reward(kl, 0.1, scaled)
    assert eq12.tolist() == pytest.approx([0.3 + 1.561997, 11.0], abs=1e-5)


def test_threshold_schedule_starts_at_40_percent_and_rises_by_10() -> None:
    schedule = ThresholdSchedule((0.0, 10.0), 0.4, 0.1, window=3)
    assert schedule.threshold == pytest.approx(4.0)
    schedule.observe(np.array([5.0, 5.0]))
    assert not schedule.reached()  # the window is not full yet
    schedule.observe(np.array([2.0]))
    assert schedule.mean_score == pytest.approx(4.0) and schedule.reached()
    schedule.advance()
    assert (schedule.threshold, schedule.runs) == (pytest.approx(5.0), 1)
    assert not schedule.reached()
    schedule.observe(np.array([8.0]))  # the window is now [5, 2, 8]
    assert schedule.reached()
    shifted = ThresholdSchedule((-10.0, 0.0), 0.4, 0.1, window=1)
    assert shifted.threshold == pytest.approx(-6.0) and shifted.delta == pytest.approx(1.0)


def test_random_mask_zeroes_exactly_the_share_asked_for() -> None:
    obs = torch.arange(1, 41, dtype=torch.float32).reshape(2, 20)
    masked = random_mask(obs, 0.25, torch.Generator().manual_seed(0))
    assert ((masked == 0).sum(1) == 5).all()
    kept = masked != 0
    assert torch.equal(masked[kept], obs[kept])
    again = random_mask(obs, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(masked, again)
    assert torch.equal(random_mask(obs, 0.0, torch.Generator()), obs)
    small = random_mask(torch.ones(4, 3), 0.1, torch.Generator().manual_seed(0))
    assert ((small == 0).sum(1) == 1).all()  # round(0.3) = 0, but a mask must mask something


def test_episode_scores_follow_the_declared_score() -> None:
    vtb = make_batched_env(OmegaConf.to_object(compose_config().env), 2, "cpu")
    info = env_info(vtb, "MACS/VirtualTaobao-v0")
    assert (info.reward_range, info.reward_bins, info.score, info.score_range) == (
        (0.0, 10.0),
        11,
        "mean_reward",
        (0.0, 10.0),
    )
    assert info.episode_scores(np.array([45.0, 9.0]), np.array([5, 1])).tolist() == [9.0, 9.0]


def test_env_without_declarations_is_refused_with_the_fix() -> None:
    env = GymBatchedEnv("Pendulum-v1", 1)
    with pytest.raises(ValueError, match=r"Pendulum-v1.*reward_range.*env.metadata.reward_range"):
        env_info(env, "Pendulum-v1")


def _trajectory(env, actions: np.ndarray, query: bool) -> list[np.ndarray]:
    obs, _ = env.reset(seed=3)
    out = [obs.copy()]
    rng = np.random.default_rng(1)
    low, high = env.single_action_space.low, env.single_action_space.high
    for a in actions:
        if query:
            other = rng.uniform(low, high, size=a.shape).astype(np.float32)
            intervene(env, other, a)
        obs, reward, terminated, truncated, info = env.step(a)
        out += [
            obs.copy(),
            np.asarray(reward).copy(),
            terminated.copy(),
            truncated.copy(),
            info["final_obs"].copy(),
        ]
    return out


@pytest.mark.parametrize(
    "overrides",
    [
        ["env=virtual_taobao"],
        ["env=virtual_taobao", "+env.kwargs.exact_rng=true"],
        ["env=synthetic"],
        ["env=session"],
        ["env=pendulum"],
    ],
    ids=["vtb-fast", "vtb-exact", "synthetic", "session", "pendulum"],
)
def test_counterfactual_queries_leave_the_real_trajectory_unchanged(overrides: list[str]) -> None:
    env_cfg = OmegaConf.to_object(compose_config(overrides).env)
    n = 4
    plain, queried = make_batched_env(env_cfg, n, "cpu"), make_batched_env(env_cfg, n, "cpu")
    space = plain.single_action_space
    rng = np.random.default_rng(0)
    # Long enough to cross episode ends (Synthetic's and Session's are 10 steps; VTB users leave at random).
    actions = rng.uniform(space.low, space.high, size=(25, n, space.shape[0])).astype(np.float32)
    a, b = _trajectory(plain, actions, query=False), _trajectory(queried, actions, query=True)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_intervention_steps_from_the_same_state_and_restores_it() -> None:
    env = make_batched_env(OmegaConf.to_object(compose_config(["env=synthetic"]).env), 3, "cpu")
    obs, _ = env.reset(seed=0)
    move = np.zeros((3, 8), dtype=np.float32)
    move[:, 5] = 1.0  # a purely trivial intervention
    s_c, _, terminated, truncated = intervene(env, move, move)
    np.testing.assert_allclose(s_c - obs, 0.5 * move, atol=1e-6)
    assert not (terminated | truncated).any()
    np.testing.assert_array_equal(env.state.numpy(), obs)


def test_frozen_policy_ignores_later_updates() -> None:
    space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    cfg = OmegaConf.to_object(compose_config(["algo=td3", "algo.batch_size=4"]).algo)
    agent = make_agent(cfg, space, space, "cpu", 0)
    obs = torch.rand(5, 3)
    frozen = agent.frozen_policy()
    before = frozen(obs)
    for _ in range(8):
        agent.store(transitions(obs, torch.rand(5, 3), torch.rand(5), obs, torch.zeros(5, dtype=torch.bool)))
    agent.update(4)
    assert not torch.equal(agent.act(obs, deterministic=True), before)
    assert torch.equal(frozen(obs), before)
