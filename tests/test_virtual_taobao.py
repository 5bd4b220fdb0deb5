"""VirtualTaobao re-implementation: exact parity with the original, gymnasium API, batched env."""

from __future__ import annotations

import dataclasses
import itertools
import json
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from macs_exp.envs import VIRTUAL_TAOBAO_ID
from macs_exp.envs.base import BatchedEnv
from macs_exp.envs.virtual_taobao import (
    ACTION_DIM,
    GROUP_SIZES,
    NOISE_DIM,
    OBS_DIM,
    VirtualTaobaoCore,
    VirtualTaobaoEnv,
    VirtualTaobaoVecEnv,
    load_networks,
)

TRACE_PATH = Path(__file__).parent / "fixtures" / "reference_trace_seed123.json"

# Most frequent category's share per user group, FACTS.md section 7 (20,000 users).
REFERENCE_TOP_SHARES = (0.21, 0.35, 0.31, 0.63, 0.61, 0.72, 0.98, 0.98, 0.90, 0.35, 0.83)


@pytest.fixture(scope="module")
def trace() -> dict[str, Any]:
    return json.loads(TRACE_PATH.read_text())


def _same_torch_minor(version: str) -> bool:
    return torch.__version__.split(".")[:2] == version.split(".")[:2]


def test_reproduces_the_original_simulator_trace_exactly(trace: dict[str, Any]) -> None:
    if not _same_torch_minor(trace["torch_version"]):
        pytest.skip(f"trace was recorded on torch {trace['torch_version']}; sampling kernels may differ")
    actions = np.asarray(trace["actions"], dtype=np.float32)
    env = VirtualTaobaoEnv()
    seed: int | None = 123
    n_steps = 0
    for i, record in enumerate(trace["records"]):
        if record["kind"] == "reset":
            obs, info = env.reset(seed=seed)
            seed = None
            assert int(env.core.leave.item()) == record["leave"], i
            assert info == {"CTR": 0.0}
        else:
            assert record["action_index"] == n_steps
            obs, reward, terminated, truncated, info = env.step(actions[n_steps])
            n_steps += 1
            assert reward == record["reward"], i
            assert terminated is record["done"], i
            assert truncated is False
            assert info["CTR"] == record["info_CTR"], i
        assert obs.astype(np.int64).tolist() == record["obs"], i
    assert n_steps == trace["n_steps"] == 186


@torch.no_grad()
def _reference_new_user(g: torch.Generator) -> tuple[torch.Tensor, int]:
    """The original's sampling order, spelled out with one multinomial per group."""
    nets = load_networks(torch.device("cpu"))
    logits = nets.generator(torch.rand(1, NOISE_DIM, generator=g))
    user = torch.zeros(1, sum(GROUP_SIZES))
    offset = 0
    for size in GROUP_SIZES:
        k = torch.multinomial(logits[:, offset : offset + size].softmax(1), 1, generator=g)
        user[0, offset + int(k)] = 1.0
        offset += size
    leave = torch.multinomial(nets.leave(user).softmax(1), 1, generator=g)
    return user, int(leave)


@torch.no_grad()
def _reference_page(g: torch.Generator, user: torch.Tensor, page: int, action: np.ndarray) -> tuple[int, int]:
    nets = load_networks(torch.device("cpu"))
    logits = nets.action(torch.cat((user, torch.tensor([[float(page)]]), torch.from_numpy(action)[None]), 1))
    clicks = torch.multinomial(logits[:, :11].softmax(1), 1, generator=g)
    b = torch.multinomial(logits[:, 11:].softmax(1), 1, generator=g)
    return int(clicks), int(b)


def test_batched_draws_equal_sequential_multinomials_including_rng_consumption() -> None:
    """One exponential draw per user (88 wide) and per page (21 wide) replays the original's
    11 + 1 and 1 + 1 multinomial calls, so the N=1 core stays aligned with its stream."""
    core = VirtualTaobaoCore(1)
    core.seed(2024)
    g = torch.Generator().manual_seed(2024)
    rng = np.random.default_rng(1)
    for _ in range(6):
        core.new_episodes()
        user, leave = _reference_new_user(g)
        assert torch.equal(core.user, user)
        assert int(core.leave.item()) == leave
        for page in range(5):
            action = rng.uniform(-1.5, 1.5, ACTION_DIM).astype(np.float32)
            clicks, _ = core.step(action)
            assert (int(clicks.item()), int(core.last[0, 1].item())) == _reference_page(g, user, page, action)
        assert torch.equal(core.generator.get_state(), g.get_state())


def test_gymnasium_make_and_check_env_pass_cleanly() -> None:
    for render_mode in (None, "ansi"):
        env = gym.make(VIRTUAL_TAOBAO_ID, render_mode=render_mode)
        assert isinstance(env.unwrapped, VirtualTaobaoEnv)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
        assert [str(w.message) for w in caught] == []
        env.close()


def test_spaces_types_and_observations_within_bounds() -> None:
    env = VirtualTaobaoEnv()
    assert env.observation_space.shape == (OBS_DIM,) and env.observation_space.dtype == np.float32
    assert env.observation_space.high[88:].tolist() == [10.0, 9.0, 100.0]
    assert env.action_space.shape == (ACTION_DIM,) and env.action_space.dtype == np.float32
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()
    assert env.metadata["items_per_page"] == 10 and env.metadata["reward_range"] == (0.0, 10.0)
    env.action_space.seed(5)
    obs, _ = env.reset(seed=5)
    episodes = 0
    for _ in range(300):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.dtype == np.float32 and obs in env.observation_space
        assert type(reward) is float and type(terminated) is bool and truncated is False
        assert type(info["CTR"]) is float and 0.0 <= info["CTR"] <= 1.0
        if terminated:
            episodes += 1
            obs, _ = env.reset()
            assert obs in env.observation_space
    assert episodes >= 10


def _one_hot_per_group(users: np.ndarray) -> bool:
    bounds = np.cumsum((0, *GROUP_SIZES))
    groups = [users[..., a:b].sum(-1) for a, b in itertools.pairwise(bounds)]
    return bool(np.all(np.stack(groups) == 1) and np.isin(users, (0.0, 1.0)).all())


def test_single_env_keeps_the_original_end_of_episode_quirk() -> None:
    env = VirtualTaobaoEnv(render_mode="ansi")
    obs, _ = env.reset(seed=8)
    assert env.render().startswith("user groups [")
    leave = int(env.core.leave.item())
    user = obs[:88].copy()
    total = 0.0
    while True:
        obs, reward, terminated, _, info = env.step(np.full(ACTION_DIM, -1.0, np.float32))
        total += reward
        if terminated:
            break
        assert np.array_equal(obs[:88], user)
    pages = max(1, leave)
    # A new user is already in place, last=(0, 0), but the page and click counters carry on.
    assert _one_hot_per_group(obs[:88])
    assert obs[88:].tolist() == [0.0, 0.0, float(pages)]
    assert info["CTR"] == total / pages / 10
    assert int(env.core.total_clicks.item()) == total
    _, _, _, _, info = env.step(np.zeros(ACTION_DIM, np.float32))
    assert int(env.core.pages.item()) == pages + 1


def test_actions_are_not_clipped() -> None:
    core = VirtualTaobaoCore(8)
    core.seed(0)
    core.new_episodes()
    action = np.full(ACTION_DIM, -2.0, np.float32)
    beyond = core.expected_clicks(action)
    clipped = core.expected_clicks(np.clip(action, -1.0, 1.0))
    assert not torch.allclose(beyond, clipped, atol=1e-3)


def test_envs_share_weights_and_leave_the_global_rng_alone() -> None:
    load_networks.cache_clear()
    before = torch.get_rng_state()
    env = VirtualTaobaoEnv()
    vec = VirtualTaobaoVecEnv(4)
    env.reset()
    env.step(np.zeros(ACTION_DIM, np.float32))
    vec.reset(seed=1)
    vec.step(np.zeros((4, ACTION_DIM), np.float32))
    assert torch.equal(torch.get_rng_state(), before)
    assert env.core.networks is vec.core.networks


def test_make_vec_uses_the_batched_env() -> None:
    envs = gym.make_vec(VIRTUAL_TAOBAO_ID, num_envs=8, vectorization_mode="vector_entry_point")
    vec = envs.unwrapped
    assert isinstance(vec, VirtualTaobaoVecEnv) and isinstance(vec, BatchedEnv)
    assert vec.metadata["autoreset_mode"] is gym.vector.AutoresetMode.SAME_STEP
    assert vec.metadata["items_per_page"] == 10 and vec.metadata["reward_range"] == (0.0, 10.0)
    assert envs.observation_space.shape == (8, OBS_DIM) and envs.action_space.shape == (8, ACTION_DIM)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (8, OBS_DIM) and obs.dtype == np.float32
    obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert obs.dtype == np.float32 and rewards.dtype == np.float32 and rewards.shape == (8,)
    assert terminated.dtype == np.bool_ and truncated.dtype == np.bool_ and not truncated.any()
    assert info["final_obs"].shape == (8, OBS_DIM) and info["final_obs"].dtype == np.float32
    assert info["_final_obs"].dtype == np.bool_
    envs.close()


def test_sampled_users_match_the_reference_statistics() -> None:
    """FACTS.md section 7: leave mean 7.92, P(leave=1) 13.7 %, E[clicks | zero action, p=0] 1.33."""
    n = 4000
    vec = VirtualTaobaoVecEnv(n)
    vec.reset(seed=0)
    leave = vec.core.leave.double()
    assert abs(leave.mean().item() - 7.92) < 0.6  # s.d. of leave is about 12.5
    assert abs((leave == 1).double().mean().item() - 0.137) < 0.02
    assert leave.min().item() >= 1 and leave.max().item() <= 100
    users = vec.core.user.numpy()
    assert _one_hot_per_group(users)
    bounds = np.cumsum((0, *GROUP_SIZES))
    shares = [users[:, a:b].mean(0).max() for a, b in itertools.pairwise(bounds)]
    np.testing.assert_allclose(shares, REFERENCE_TOP_SHARES, atol=0.03)

    zero = np.zeros((n, ACTION_DIM), np.float32)
    expected = vec.core.expected_clicks(zero)
    assert abs(expected.mean().item() - 1.33) < 0.08
    _, rewards, _, _, _ = vec.step(zero)
    # Sampled clicks agree with the exact expectation for the same users (s.e. about 0.03).
    assert abs(rewards.mean() - expected.mean().item()) < 0.1


def test_replacement_users_have_the_same_distribution() -> None:
    vec = VirtualTaobaoVecEnv(256)
    vec.reset(seed=1)
    zero = np.zeros((256, ACTION_DIM), np.float32)
    leaves: list[np.ndarray] = []
    while sum(map(len, leaves)) < 3000:
        _, _, terminated, _, _ = vec.step(zero)
        leaves.append(vec.core.leave.numpy()[terminated].copy())
    leave = np.concatenate(leaves)
    assert abs(leave.mean() - 7.92) < 0.8
    assert abs((leave == 1).mean() - 0.137) < 0.025


def test_vec_env_same_step_autoreset_and_final_obs() -> None:
    vec = VirtualTaobaoVecEnv(64)
    obs, _ = vec.reset(seed=3)
    actions = np.full((64, ACTION_DIM), -1.0, np.float32)
    finished = 0
    for _ in range(12):
        prev_obs, prev_leave = obs, vec.core.leave.numpy().copy()
        obs, rewards, terminated, truncated, info = vec.step(actions)
        final, mask = info["final_obs"], info["_final_obs"]
        assert np.array_equal(mask, terminated) and mask is not terminated and not truncated.any()
        done, alive = terminated, ~terminated
        # The finished users' true last observation [user, c, b, p] ...
        assert np.array_equal(final[done, :88], prev_obs[done, :88])
        assert np.array_equal(final[done, 88], rewards[done])
        assert np.array_equal(final[done, 90], np.maximum(prev_leave[done], 1))
        assert np.array_equal(final[done, 90], prev_obs[done, 90] + 1)
        # ... while the returned rows already hold the replacements' first observation.
        assert _one_hot_per_group(obs[done, :88]) and (obs[done, 88:] == 0).all()
        assert (vec.core.total_clicks.numpy()[done] == 0).all()
        assert np.array_equal(obs[alive, 90], prev_obs[alive, 90] + 1)
        assert np.array_equal(obs[alive, 88], rewards[alive])
        assert np.array_equal(obs[alive, :88], prev_obs[alive, :88])
        finished += int(done.sum())
    assert finished > 40


def _rollout(env: BatchedEnv, actions: np.ndarray) -> list[np.ndarray]:
    out = []
    for a in actions:
        obs, rewards, terminated, _, info = env.step(a)
        out += [obs, rewards, terminated, info["final_obs"]]
    return out


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_vec_env_is_deterministic_given_the_seed() -> None:
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 16, ACTION_DIM)).astype(np.float32)
    first, second, other = VirtualTaobaoVecEnv(16), VirtualTaobaoVecEnv(16), VirtualTaobaoVecEnv(16)
    obs_a, _ = first.reset(seed=11)
    obs_b, _ = second.reset(seed=11)
    obs_c, _ = other.reset(seed=12)
    assert np.array_equal(obs_a, obs_b) and not np.array_equal(obs_a, obs_c)
    _assert_same(_rollout(first, actions), _rollout(second, actions))


def _single_rollout(env: VirtualTaobaoEnv, actions: np.ndarray) -> list[Any]:
    out: list[Any] = []
    for a in actions:
        obs, reward, terminated, _, info = env.step(a)
        out.append((obs.tolist(), reward, terminated, info["CTR"]))
        if terminated:
            out.append(env.reset()[0].tolist())
    return out


def test_single_env_snapshot_restore_reproduces_the_unbranched_run() -> None:
    actions = np.random.default_rng(3).uniform(-1, 1, (70, ACTION_DIM)).astype(np.float32)
    straight, branched = VirtualTaobaoEnv(), VirtualTaobaoEnv()
    straight.reset(seed=77)
    branched.reset(seed=77)
    _single_rollout(straight, actions[:10])
    _single_rollout(branched, actions[:10])
    snapshot = branched.snapshot()
    user = snapshot.user.clone()
    detour = _single_rollout(branched, np.full((40, ACTION_DIM), -1.0, np.float32))
    assert torch.equal(snapshot.user, user)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.user = user  # type: ignore[misc]
    branched.restore(snapshot)
    expected = _single_rollout(straight, actions[10:])
    assert _single_rollout(branched, actions[10:]) == expected
    assert detour[:40] != expected[:40]


def test_vec_env_snapshot_restore_reproduces_the_unbranched_run() -> None:
    actions = np.random.default_rng(4).uniform(-1, 1, (40, 16, ACTION_DIM)).astype(np.float32)
    straight, branched = VirtualTaobaoVecEnv(16), VirtualTaobaoVecEnv(16)
    straight.reset(seed=5)
    branched.reset(seed=5)
    _rollout(straight, actions[:8])
    _rollout(branched, actions[:8])
    snapshot = branched.snapshot()
    detour = _rollout(branched, -np.ones((20, 16, ACTION_DIM), np.float32))
    branched.restore(snapshot)
    expected = _rollout(straight, actions[8:])
    _assert_same(_rollout(branched, actions[8:]), expected)
    # The detour really differed: only the clicks and b of each page depend on the action.
    assert any(not np.array_equal(x, y) for x, y in zip(detour, expected[: len(detour)], strict=True))
    with pytest.raises(ValueError, match="users"):
        VirtualTaobaoVecEnv(8).restore(snapshot)
