"""MACS/Synthetic-v0's random streams: users come from the env's own generator only."""

from __future__ import annotations

import numpy as np
import torch

from macs_exp.envs.synthetic import SyntheticVecEnv


def test_seeded_reset_draws_users_uniformly_from_the_seed() -> None:
    env = SyntheticVecEnv(3, essential_dim=2, trivial_dim=2)
    obs, _ = env.reset(seed=5)
    expected = 2 * torch.rand((3, 4), generator=torch.Generator().manual_seed(5)) - 1
    np.testing.assert_array_equal(obs, expected.numpy())


def test_unseeded_reset_continues_the_envs_stream() -> None:
    first, second = SyntheticVecEnv(2), SyntheticVecEnv(2)
    seeded = [env.reset(seed=7)[0] for env in (first, second)]
    unseeded = [env.reset()[0] for env in (first, second)]
    np.testing.assert_array_equal(unseeded[0], unseeded[1])
    assert not np.array_equal(unseeded[0], seeded[0])
    # The next users of the seed-7 stream, not a fresh seed.
    stream = torch.Generator().manual_seed(7)
    torch.rand((2, 8), generator=stream)
    np.testing.assert_array_equal(unseeded[0], (2 * torch.rand((2, 8), generator=stream) - 1).numpy())


def test_unseeded_envs_leave_torchs_global_generator_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    env = SyntheticVecEnv(4)
    env.reset()
    env.step(np.zeros((4, 8), np.float32))
    env.reset(seed=None)
    assert torch.equal(torch.get_rng_state(), before)
