"""VirtualTaobao re-implementation: exact parity with the original, gymnasium API, batched env."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
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
    _inverse_cdf,
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


@pytest.mark.parametrize("exact_rng", [False, True])
def test_sampled_users_match_the_reference_statistics(exact_rng: bool) -> None:
    """FACTS.md section 7: leave mean 7.92, P(leave=1) 13.7 %, E[clicks | zero action, p=0] 1.33."""
    n = 4000
    vec = VirtualTaobaoVecEnv(n, exact_rng=exact_rng)
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


@pytest.mark.parametrize("exact_rng", [False, True])
def test_replacement_users_have_the_same_distribution(exact_rng: bool) -> None:
    vec = VirtualTaobaoVecEnv(256, exact_rng=exact_rng)
    vec.reset(seed=1)
    zero = np.zeros((256, ACTION_DIM), np.float32)
    leaves: list[np.ndarray] = []
    while sum(map(len, leaves)) < 3000:
        _, _, terminated, _, _ = vec.step(zero)
        leaves.append(vec.core.leave.numpy()[terminated].copy())
    leave = np.concatenate(leaves)
    assert abs(leave.mean() - 7.92) < 0.8
    assert abs((leave == 1).mean() - 0.137) < 0.025


@pytest.mark.parametrize("exact_rng", [False, True])
def test_vec_env_same_step_autoreset_and_final_obs(exact_rng: bool) -> None:
    vec = VirtualTaobaoVecEnv(64, exact_rng=exact_rng)
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


@pytest.mark.parametrize("exact_rng", [False, True])
def test_vec_env_is_deterministic_given_the_seed(exact_rng: bool) -> None:
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 16, ACTION_DIM)).astype(np.float32)
    first, second, other = (VirtualTaobaoVecEnv(16, exact_rng=exact_rng) for _ in range(3))
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


@pytest.mark.parametrize("exact_rng", [False, True])
def test_vec_env_snapshot_restore_reproduces_the_unbranched_run(exact_rng: bool) -> None:
    actions = np.random.default_rng(4).uniform(-1, 1, (40, 16, ACTION_DIM)).astype(np.float32)
    straight, branched = (
        VirtualTaobaoVecEnv(16, exact_rng=exact_rng),
        VirtualTaobaoVecEnv(16, exact_rng=exact_rng),
    )
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


def test_inverse_cdf_never_draws_a_vanishing_class_even_at_the_uniform_extremes() -> None:
    largest_below_one = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
    uniform = torch.tensor([0.0, 2.0**-24, 0.5, largest_below_one]).unsqueeze(1)
    inf = math.inf
    cases = {
        # -inf classes first, between and last, as padding puts them.
        (-inf, 0.0, -inf, 0.0, -inf): {1, 3},
        # Spreads like A's, far beyond float32's range once exponentiated.
        (-1e5, 0.0, -1e5): {1},
        (2e4, -3e4, 2e4 - 1.0): {0, 2},
    }
    for logits, allowed in cases.items():
        draws = _inverse_cdf(torch.tensor(logits).repeat(len(uniform), 1), uniform)
        assert set(draws.tolist()) <= allowed, logits
    # u = 0 takes the last class of positive weight, u close to 1 the first.
    assert _inverse_cdf(torch.tensor([[1.0, 2.0, -inf]] * 2), uniform[[0, 3]]).tolist() == [1, 0]


def _z_scores(counts_a: np.ndarray, counts_b: np.ndarray, n: int) -> np.ndarray:
    """Two-sample z-scores of category frequencies, over categories seen at all."""
    pooled = (counts_a + counts_b) / (2 * n)
    seen = pooled > 0
    se = np.sqrt(pooled[seen] * (1 - pooled[seen]) * 2 / n)
    return (counts_a[seen] - counts_b[seen]) / n / se


def test_fast_and_exact_sampling_draw_users_from_the_same_distribution() -> None:
    n = 20_000
    fast, exact = VirtualTaobaoCore(n, exact_rng=False), VirtualTaobaoCore(n, exact_rng=True)
    for core in (fast, exact):
        core.seed(5)
        core.new_episodes()
    assert _one_hot_per_group(fast.user.numpy())
    # Each of the 88 user categories, then the commonest page budgets: |z| >= 5 in any of
    # them would be a real mismatch, not chance.
    z = _z_scores(fast.user.sum(0).numpy(), exact.user.sum(0).numpy(), n)
    assert np.abs(z).max() < 5
    leave_fast, leave_exact = fast.leave.numpy(), exact.leave.numpy()
    se = np.sqrt((leave_fast.var() + leave_exact.var()) / n)
    assert abs(leave_fast.mean() - leave_exact.mean()) < 5 * se
    counts = [np.bincount(leave, minlength=101)[[1, 2, 3, 5, 10]] for leave in (leave_fast, leave_exact)]
    assert np.abs(_z_scores(*counts, n)).max() < 5


@pytest.mark.parametrize("exact_rng", [False, True])
def test_click_and_b_draws_follow_the_action_model_at_a_fixed_state(exact_rng: bool) -> None:
    """20,000 copies of one user on one page under one action: the sampled clicks and b
    match A's softmax probabilities, and the mean click count ``expected_clicks``."""
    probe = VirtualTaobaoCore(64)
    probe.seed(0)
    probe.new_episodes()
    nets = load_networks(torch.device("cpu"))
    zero = np.zeros(ACTION_DIM, np.float32)
    with torch.no_grad():
        logits = nets.action(torch.cat((probe.user, probe.pages[:, None], torch.zeros(64, ACTION_DIM)), 1))
    click_probs, b_probs = logits[:, :11].softmax(1), logits[:, 11:].softmax(1)
    # The user whose click count is least predictable, for a demanding comparison.
    user = int(torch.special.entr(click_probs).sum(1).argmax())
    assert click_probs[user].max() < 0.6 and b_probs[user].max() < 0.99

    n = 20_000
    core = VirtualTaobaoCore(n, exact_rng=exact_rng)
    core.seed(1)
    core.user.copy_(probe.user[user].expand(n, -1))
    core.pages.zero_()
    expected = core.expected_clicks(zero)
    clicks, _ = core.step(zero)
    clicks, b = clicks.numpy(), core.last[:, 1].numpy().astype(np.int64)
    for draws, probs in ((clicks, click_probs[user]), (b, b_probs[user])):
        freq = np.bincount(draws, minlength=len(probs)) / n
        p = probs.double().numpy()
        assert freq[p < 1e-9].sum() == 0
        relevant = p > 1e-4
        z = (freq - p)[relevant] / np.sqrt(p * (1 - p) / n)[relevant]
        assert np.abs(z).max() < 5
    assert abs(clicks.mean() - expected[0].item()) < 5 * clicks.std() / np.sqrt(n)


def test_exact_vec_env_at_n1_replays_the_original_draws_keeping_the_auto_sampled_user() -> None:
    """With ``exact_rng`` the vec env draws like the original env, except that the user the
    original samples on termination becomes the next episode's user instead of being
    discarded by ``reset()``, whose own draw is skipped."""
    actions = np.random.default_rng(6).uniform(-1, 1, (80, ACTION_DIM)).astype(np.float32)
    vec, single = VirtualTaobaoVecEnv(1, exact_rng=True), VirtualTaobaoEnv()
    obs, _ = vec.reset(seed=21)
    single_obs, _ = single.reset(seed=21)
    g = torch.Generator().manual_seed(21)
    user, leave = _reference_new_user(g)
    assert np.array_equal(obs[0], single_obs) and np.array_equal(obs[0, :88], user[0].numpy())
    page, episodes, single_in_step = 0, 0, True
    for action in actions:
        clicks, b = _reference_page(g, user, page, action)
        page += 1
        obs, rewards, terminated, _, info = vec.step(action[None])
        assert rewards[0] == clicks and terminated[0] == (page >= leave)
        assert info["final_obs"][0].tolist() == [*user[0].tolist(), clicks, b, page]
        if single_in_step:
            single_obs, single_reward, _, _, _ = single.step(action)
            assert single_reward == rewards[0]
        if terminated[0]:
            if single_in_step:
                # Same user as the single env's discarded one, but its counters start afresh.
                assert np.array_equal(obs[0, :88], single_obs[:88])
                assert single_obs[88:].tolist() == [0, 0, page] and obs[0, 88:].tolist() == [0, 0, 0]
                single_in_step = False
            user, leave = _reference_new_user(g)
            page, episodes = 0, episodes + 1
            assert obs[0].tolist() == [*user[0].tolist(), 0, 0, 0]
        else:
            assert obs[0].tolist() == [*user[0].tolist(), clicks, b, page]
            if single_in_step:
                assert np.array_equal(obs[0], single_obs)
    assert episodes >= 5 and not single_in_step


def test_reset_with_a_seed_replays_the_run_whatever_the_pool_held() -> None:
    actions = np.random.default_rng(7).uniform(-1, 1, (25, 32, ACTION_DIM)).astype(np.float32)
    vec = VirtualTaobaoVecEnv(32)
    first = [vec.reset(seed=9)[0], *_rollout(vec, actions)]
    # The pool is now part used; a seeded reset must not hand out its leftovers.
    assert 0 < vec.snapshot().pool_position < len(vec.snapshot().user_pool.rows)
    second = [vec.reset(seed=9)[0], *_rollout(vec, actions)]
    _assert_same(first, second)


def test_vec_env_snapshot_restore_across_a_user_pool_refill() -> None:
    n = 64
    rng = np.random.default_rng(8)
    straight, branched = VirtualTaobaoVecEnv(n), VirtualTaobaoVecEnv(n)
    straight.reset(seed=10)
    branched.reset(seed=10)
    # Step both until the pool is nearly used up, so that the next steps refill it.
    while True:
        state = branched.snapshot()
        if len(state.user_pool.rows) - state.pool_position < 3 * n:
            break
        a = rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32)
        _assert_same(_rollout(straight, a[None]), _rollout(branched, a[None]))
    pool_before = [t.clone() for t in state.user_pool]
    actions = rng.uniform(-1, 1, (30, n, ACTION_DIM)).astype(np.float32)

    detour = _rollout(branched, -np.ones((30, n, ACTION_DIM), np.float32))
    assert branched.snapshot().user_pool is not state.user_pool  # the detour refilled the pool
    branched.restore(state)
    # Restoring reinstates the pool itself, not a copy, and the pool was never written to.
    assert branched.snapshot().user_pool is state.user_pool
    assert all(torch.equal(t, before) for t, before in zip(state.user_pool, pool_before, strict=True))
    straight_pool = straight.snapshot().user_pool
    expected = _rollout(straight, actions)
    assert straight.snapshot().user_pool is not straight_pool  # the straight run refilled too
    _assert_same(_rollout(branched, actions), expected)
    assert any(not np.array_equal(x, y) for x, y in zip(detour, expected, strict=True))


@pytest.mark.parametrize("exact_rng", [False, True])
def test_returned_arrays_are_fresh_every_step(exact_rng: bool) -> None:
    """The trainer keeps the previous observation while it steps again."""
    vec = VirtualTaobaoVecEnv(32, exact_rng=exact_rng)
    actions = np.random.default_rng(9).uniform(-1, 1, (6, 32, ACTION_DIM)).astype(np.float32)
    obs, _ = vec.reset(seed=12)
    kept = [obs]
    for a in actions:
        obs, rewards, terminated, truncated, info = vec.step(a)
        kept += [obs, rewards, terminated, truncated, info["final_obs"], info["_final_obs"]]
    copies = [x.copy() for x in kept]
    _rollout(vec, actions)
    _assert_same(kept, copies)
    assert not any(np.shares_memory(x, y) for x, y in itertools.combinations(kept, 2))
