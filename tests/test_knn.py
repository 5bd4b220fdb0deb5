"""algo.action_mapping=knn (Wolpertinger): the k-NN over allowed items, the exact item actions the
rating env honours, the allowed items it reports, the refusals, runs of every mode with it, and
that it learns an item the env's argmax cannot reach."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import TINY_MACS, transitions
from macs_exp.agents import ItemSpace, make_agent
from macs_exp.agents.base import OffPolicyConfig
from macs_exp.agents.knn import KnnMapping
from macs_exp.app import compose_config
from macs_exp.config import to_config
from macs_exp.data.dataset import RatingData
from macs_exp.envs.base import allowed_items
from macs_exp.envs.rating import RatingVecEnv
from macs_exp.schema import ConfigError
from macs_exp.trainer.run import run_experiment

N_ITEMS, DIM = 12, 3
# Item 0 lies inside the others' convex hull: no direction makes the env's argmax show it.
BEST = 0


def features() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(N_ITEMS, DIM, generator=g).clamp(-1, 1)
    f[BEST] = torch.tensor([0.01, -0.02, 0.03])
    return f


def agent_cfg(algo: str, mapping: str, *overrides: str) -> OffPolicyConfig:
    cfg = OmegaConf.to_object(
        compose_config(
            [f"algo={algo}", f"algo.action_mapping={mapping}", "algo.net_arch=[32,32]", *overrides]
        ).algo
    )
    assert isinstance(cfg, OffPolicyConfig)
    return cfg


def test_candidates_are_the_k_nearest_allowed_items_by_inner_product() -> None:
    f = features()
    mapping = KnnMapping(ItemSpace(f), 4, torch.zeros(DIM), torch.ones(DIM))
    proto = torch.randn(6, DIM, generator=torch.Generator().manual_seed(1))
    allowed = torch.rand(6, N_ITEMS, generator=torch.Generator().manual_seed(2)) < 0.5
    allowed[:, 1] = True
    cand, valid = mapping.candidates(proto, allowed)
    for row in range(6):
        n_allowed = int(allowed[row].sum())
        expected = (proto[row] @ f.T).masked_fill(~allowed[row], -torch.inf).argsort(descending=True)
        kept = cand[row][valid[row]]
        assert len(kept) == min(4, n_allowed) and bool(allowed[row, kept].all())
        assert set(kept.tolist()) == set(expected[: len(kept)].tolist())
    # k=1 is the env's own rule: the allowed item with the highest inner product.
    one = KnnMapping(ItemSpace(f), 1, torch.zeros(DIM), torch.ones(DIM))
    nearest = (proto @ f.T).masked_fill(~allowed, -torch.inf).argmax(1)
    assert torch.equal(one.candidates(proto, allowed)[0][:, 0], nearest)


@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac"])
def test_actions_are_allowed_items_own_features(algo: str) -> None:
    f = features()
    allowed = torch.ones(5, N_ITEMS, dtype=torch.bool)
    allowed[:, :6] = False
    space = gym.spaces.Box(-1.0, 1.0, (DIM,), np.float32)
    agent = make_agent(agent_cfg(algo, "knn"), space, space, "cpu", 0, ItemSpace(f))
    obs = torch.rand(5, DIM)
    frozen = agent.frozen_policy()
    for actions in (
        agent.explore(obs, allowed),
        agent.act(obs, allowed=allowed),
        agent.act(obs, deterministic=True, allowed=allowed),
        frozen(obs, allowed=allowed),
    ):
        match = (actions[:, None, :] == f[None]).all(-1)
        assert bool((match.sum(1) == 1).all()), "every action is exactly one item's features"
        assert not bool(match[:, :6].any()), "excluded items are never chosen"


def test_knn_without_a_catalogue_is_refused() -> None:
    space = gym.spaces.Box(-1.0, 1.0, (DIM,), np.float32)
    with pytest.raises(ConfigError, match=r"^algo\.action_mapping=knn"):
        make_agent(agent_cfg("ddpg", "knn"), space, space, "cpu", 0)
    with pytest.raises(ConfigError, match=r"^macs\.algo\.action_mapping=knn"):
        to_config(compose_config(["env=synthetic", "macs.algo.action_mapping=knn"]))
    with pytest.raises(ConfigError, match=r"^algo\.knn_k="):
        to_config(compose_config(["env=tiny_ratings", "algo.knn_k=0"]))


def one_best_item(n_users: int = 24) -> RatingData:
    """Every user rated a few random items 1-3 and, last, item BEST 5: showing BEST is optimal."""
    rng = np.random.default_rng(0)
    others = [rng.choice(np.arange(1, N_ITEMS), 3, replace=False) for _ in range(n_users)]
    train_items = np.concatenate([np.append(o, BEST) for o in others])
    train_ratings = np.tile(np.array([1.0, 2.0, 3.0, 5.0], np.float32), n_users)
    return RatingData(
        name="one-best",
        n_users=n_users,
        n_items=N_ITEMS,
        item_features=features().numpy(),
        train_indptr=np.arange(0, 4 * n_users + 1, 4),
        train_items=train_items,
        train_ratings=train_ratings,
        test_indptr=np.arange(n_users + 1),
        test_items=np.array([o[0] for o in others]),
        test_ratings=np.ones(n_users, np.float32),
        positive_threshold=4.0,
        rating_min=1.0,
        rating_max=5.0,
    )


def test_the_env_shows_an_allowed_item_given_its_features_and_reports_which_are_allowed() -> None:
    env = RatingVecEnv(6, one_best_item(), episode_length=3)
    features = env.item_features()
    env.reset(seed=0)
    for step in range(3):
        allowed = allowed_items(env)
        assert allowed is not None and allowed.shape == (6, N_ITEMS)
        if step == 0:
            # The mask is what the env does: item j's features show j exactly where j is allowed.
            for j in range(N_ITEMS):
                snapshot = env.snapshot()
                _, _, _, _, info = env.step(features[j].expand(6, DIM).numpy())
                env.restore(snapshot)
                assert np.array_equal(info["item"] == j, allowed[:, j].numpy()), j
        excluded = torch.where(allowed, N_ITEMS, torch.arange(N_ITEMS)).min(1).values
        wanted = torch.where(allowed, torch.arange(N_ITEMS), N_ITEMS).min(1).values
        # An excluded item's features fall back to the argmax, which never shows it.
        snapshot = env.snapshot()
        _, _, _, _, info = env.step(features[excluded.clamp(max=N_ITEMS - 1)].numpy())
        assert not allowed.gather(1, torch.from_numpy(info["item"])[:, None]).logical_not().any()
        env.restore(snapshot)
        _, _, _, _, info = env.step(features[wanted].numpy())
        assert np.array_equal(info["item"], wanted.numpy()), "an allowed item's features show it"
        if step < 2:
            assert not allowed_items(env)[torch.arange(6), torch.from_numpy(info["item"])].any()


def first_step_hits(algo: str, mapping: str) -> float:
    """Trains on one-step episodes and returns the share of test slots shown BEST."""
    env = RatingVecEnv(8, one_best_item(), episode_length=1)
    cfg = agent_cfg(algo, mapping, "algo.learning_starts=64", "algo.gradient_steps=-1", "algo.batch_size=32")
    space = env.single_observation_space
    agent = make_agent(cfg, space, env.single_action_space, "cpu", 0, ItemSpace(env.item_features()))
    obs, _ = env.reset(seed=0)
    for _ in range(60):
        o = torch.from_numpy(obs)
        actions = agent.explore(o, allowed_items(env))
        obs, rewards, terminated, _, info = env.step(actions.numpy())
        next_obs = torch.from_numpy(info["final_obs"])
        agent.observe(
            transitions(o, actions, torch.from_numpy(rewards), next_obs, torch.from_numpy(terminated))
        )
        agent.learn()
    obs, _ = env.reset(seed=1)
    actions = agent.act(torch.from_numpy(obs), deterministic=True, allowed=allowed_items(env))
    _, _, _, _, info = env.step(actions.numpy())
    return float((info["item"] == BEST).mean())


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac"])
def test_knn_learns_the_best_item_that_argmax_cannot_reach(algo: str) -> None:
    assert first_step_hits(algo, "argmax") == 0.0
    assert first_step_hits(algo, "knn") > 0.5


@pytest.mark.slow
@pytest.mark.parametrize(("algo", "mode"), [("ddpg", "joint"), ("sac", "expert")])
def test_runs_with_knn_recommender_pi_c_and_expert(
    algo: str, mode: str, tiny: list[str], tmp_path: Path
) -> None:
    """Every place an agent acts on a rating env (training, evaluation, MACS's stage 2 and its
    "what if" steps) gives it the env's allowed items: a run of each mode finishes with knn
    everywhere, and the recommender's test precision is a real measurement."""
    knn = [f"{key}.action_mapping=knn" for key in ("algo", "macs.algo", "expert.algo")]
    overrides = [f"algo={algo}", f"mode={mode}", "env=tiny_ratings", *tiny, *TINY_MACS, *knn]
    result = run_experiment(compose_config(overrides), tmp_path / "run")
    assert 0.0 < result.final_eval["test/precision"] <= 1.0
    if mode == "joint":
        assert (tmp_path / "run" / "pi_c.pt").exists(), "stage 2 ran with a knn pi_c"
