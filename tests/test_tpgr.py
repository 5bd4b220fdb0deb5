"""TPGR (``algo=tpgr``): the tree, masking, the policy gradient, item-id actions in the rating
env, MACS's and CTRL's terms, reproducibility and checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import TINY_CTRL, TINY_MACS
from macs_exp.agents import ItemSpace, Transitions, make_agent
from macs_exp.agents.episodes import Episodes
from macs_exp.agents.tpgr import TPGR, TPGRConfig
from macs_exp.agents.tree import build_tree, children_for
from macs_exp.app import compose_config
from macs_exp.config import to_config
from macs_exp.envs.factory import make_batched_env
from macs_exp.schema import ConfigError
from macs_exp.trainer.run import rating_data, run_experiment

TINY_TPGR = [
    "algo=tpgr",
    "env=tiny_ratings",
    "trainer.total_steps=400",
    "trainer.eval_every=200",
    "trainer.log_every=100",
    "trainer.progress=none",
    "algo.batch_episodes=4",
]


def tpgr_config(*overrides: str) -> TPGRConfig:
    algo = to_config(compose_config(["algo=tpgr", *overrides])).algo
    assert isinstance(algo, TPGRConfig)
    return algo


def agent_over(features: torch.Tensor, obs_dim: int, *overrides: str, seed: int = 0) -> TPGR:
    space = gym.spaces.Box(-1.0, 1.0, (obs_dim,), np.float32)
    action = gym.spaces.Box(-1.0, 1.0, (features.shape[1],), np.float32)
    agent = make_agent(tpgr_config(*overrides), space, action, "cpu", seed, ItemSpace(features))
    assert isinstance(agent, TPGR)
    return agent


# --- the tree -----------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["pca", "kmeans", "random"])
@pytest.mark.parametrize(
    ("n_items", "depth", "children"), [(1682, 2, None), (97, 3, None), (50, 2, 9), (7, 1, None)]
)
def test_the_tree_is_balanced_and_gives_every_item_one_leaf(
    split: str, n_items: int, depth: int, children: int | None
) -> None:
    features = np.random.default_rng(n_items).normal(size=(n_items, 5))
    c = children_for(n_items, depth, children)
    tree = build_tree(features, depth, c, split, seed=0)
    assert c**depth >= n_items and (children is not None or (c - 1) ** depth < n_items)
    # One leaf per item, no leaf shared, and the leaf numbering matches the codes.
    assert len(set(tree.leaf_of_item.tolist())) == n_items
    assert torch.equal(tree.item_of_leaf[tree.leaf_of_item], torch.arange(n_items))
    assert int((tree.item_of_leaf >= 0).sum()) == n_items
    # Balanced: at every node, the children's item counts differ by at most one.
    everything = torch.ones(1, n_items, dtype=torch.bool)
    for level in range(depth):
        counts = tree.subtree_counts(tree.leaf_mask(everything), level).view(-1, c)
        occupied = counts[counts.sum(1) > 0]
        assert (occupied.max(1).values - occupied.min(1).values <= 1).all(), (level, occupied)


def test_pca_splits_along_the_main_axis() -> None:
    """Items spread along one direction: the root's first child holds the lowest ones."""
    x = np.linspace(-1, 1, 16)
    features = np.stack((x, 0.01 * np.sin(7 * x)), 1)
    tree = build_tree(features, 2, 4, "pca", seed=0)
    roots = tree.codes[:, 0].numpy()
    assert sorted(map(tuple, np.split(roots, 4))) == [(0,) * 4, (1,) * 4, (2,) * 4, (3,) * 4]


# --- masking ------------------------------------------------------------------------------
def test_masking_never_draws_an_excluded_item() -> None:
    """Over random states and random masks (down to a single allowed item), every draw and every
    greedy walk is an allowed item."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(300, 6, generator=g)
    agent = agent_over(features, 18)
    for trial in range(40):
        obs = torch.randn(64, 18, generator=g)
        keep = torch.rand(64, 300, generator=g) < [0.5, 0.05, 0.003, 0.9][trial % 4]
        keep[torch.arange(64), torch.randint(300, (64,), generator=g)] = True
        for deterministic in (False, True):
            items = agent.act(obs, deterministic=deterministic, allowed=keep)
            assert keep[torch.arange(64), items].all()
        alt = agent.sample_actions(obs, keep, torch.Generator().manual_seed(trial))
        assert keep[torch.arange(64), alt].all()
    # A row with nothing allowed (CTRL's alternatives to a rated episode's last candidate) still
    # gets an item of the catalogue (the caller marks it invalid), never an empty leaf's -1.
    nothing = torch.zeros(8, 300, dtype=torch.bool)
    for draw in range(5):
        alt = agent.sample_actions(
            torch.randn(8, 18, generator=g), nothing, torch.Generator().manual_seed(draw)
        )
        assert ((alt >= 0) & (alt < 300)).all()
        assert (agent.act(torch.randn(8, 18, generator=g), allowed=nothing) >= 0).all()


@pytest.mark.parametrize("candidates", ["catalog", "rated"])
def test_episodes_never_repeat_an_item_or_show_the_history(candidates: str) -> None:
    cfg = to_config(compose_config(["algo=tpgr", "env=tiny_ratings", f"env.candidates={candidates}"]))
    data = rating_data(cfg)
    env = make_batched_env(cfg.env, 32, "cpu", data=data)
    agent = make_agent(
        cfg.algo,
        env.single_observation_space,
        env.single_action_space,
        "cpu",
        0,
        ItemSpace(env.item_features()),
    )
    obs, _ = env.reset(seed=0)
    shown: list[set[int]] = [set() for _ in range(32)]
    for _ in range(60):
        allowed = env.allowed_items()
        items = agent.explore(torch.as_tensor(obs), allowed)
        assert allowed[torch.arange(32), items].all()
        obs, _, terminated, truncated, info = env.step(items.numpy())
        assert np.array_equal(info["item"], items.numpy())
        for slot, item in enumerate(items.tolist()):
            assert item not in shown[slot]
            shown[slot].add(item)
        for slot in np.flatnonzero(terminated | truncated):
            shown[slot] = set()


# --- the policy gradient ------------------------------------------------------------------
def test_the_policy_gradient_moves_probability_to_the_better_arm() -> None:
    """Two arms, one-step episodes, arm 1 pays 1 and arm 0 pays 0."""
    features = torch.eye(2)
    agent = agent_over(features, 2, "algo.batch_episodes=32", "algo.learning_rate=0.05", "algo.baseline=none")
    obs = torch.ones(32, 2)
    every = torch.ones(32, 2, dtype=torch.bool)

    def p_better() -> float:
        with torch.no_grad():
            _, logp, _ = agent.policy.walk(
                agent.policy.encode(obs[:1]), every[:1], codes=agent.tree.codes[1:2]
            )
        return float(logp.exp())

    before = p_better()
    for _ in range(30):
        items = agent.explore(obs, every)
        rewards = (items == 1).float()
        done = torch.ones(32, dtype=torch.bool)
        agent.observe(Transitions(obs, items, rewards, obs, torch.zeros(32, dtype=torch.bool), done))
        assert len(agent.learn()) == 1
    assert before == pytest.approx(0.5, abs=0.15)
    assert p_better() > 0.9


def test_returns_are_discounted_within_each_episode() -> None:
    episodes = Episodes(2, gamma=0.5)
    for t, done in enumerate(([False, False], [False, True], [True, False])):
        step = {
            "obs": torch.zeros(2, 1),
            "item": torch.zeros(2, dtype=torch.int64),
            "allowed": torch.ones(2, 1, dtype=torch.bool),
            "logp": torch.zeros(2),
            "reward": torch.tensor([1.0, 2.0]) * (t + 1),
        }
        episodes.add_real(step, torch.tensor(done))
    assert episodes.n_finished == 2
    batch = episodes.take()
    # Slot 0: rewards 1, 2, 3 -> G = 1 + 1 + 0.75, 2 + 1.5, 3; slot 1: rewards 2, 4 -> 4, 4.
    columns = (batch.real[k].tolist() for k in ("row", "ret", "next_ret"))
    got = sorted(zip(*columns, strict=True))
    assert got == [(0, 2.75, 3.5), (1, 4.0, 4.0), (2, 3.5, 3.0), (3, 4.0, 0.0), (4, 3.0, 0.0)]
    # Slot 1's new episode (started at step 3) stays for a later batch.
    assert len(episodes.real[0]["row"]) == 1


def _batch_with_extras(agent: TPGR, continues: bool) -> None:
    """One batch of one-step episodes, each real row with a synthesised twin."""
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(8, agent.obs_dim, generator=g)
    every = torch.ones(8, agent.n_items, dtype=torch.bool)
    items = agent.explore(obs, every)
    real = Transitions(
        obs,
        items,
        torch.rand(8, generator=g),
        obs,
        torch.zeros(8, dtype=torch.bool),
        torch.ones(8, dtype=torch.bool),
    )
    agent.observe(real)
    twins = real.derived(
        torch.ones(8, dtype=torch.bool),
        continues_real=continues,
        obs=obs + 0.5 * torch.randn(obs.shape, generator=g),
        rewards=torch.rand(8, generator=g),
    )
    agent.add_extra(twins)


@pytest.mark.parametrize("continues", [True, False])
def test_the_counterfactual_term_changes_the_gradient(continues: bool) -> None:
    features = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    grads = {}
    for coef in ("0", "1"):
        agent = agent_over(features, 6, "algo.batch_episodes=8", f"algo.cf_coef={coef}")
        _batch_with_extras(agent, continues)
        batch = agent.episodes.take()
        assert len(batch.extra["at"]) == 8
        losses = agent._loss(
            batch.real,
            batch.real["t"] == 0,
            batch.extra,
            torch.ones(8, dtype=torch.bool),
            agent._advantage_scale(batch.real),
        )
        agent.optimizer.zero_grad()
        losses["loss"].backward()
        grads[coef] = agent.policy.node_weight.grad.clone()
        if coef == "1":
            assert float(losses["cf_rho_mean"]) > 0 and 0 <= float(losses["cf_clip_frac"]) <= 1
    assert not torch.allclose(grads["0"], grads["1"])


# --- item ids in the rating env -------------------------------------------------------------
@pytest.mark.parametrize("candidates", ["catalog", "rated"])
def test_item_ids_act_as_their_feature_vectors(candidates: str) -> None:
    cfg = to_config(compose_config(["env=tiny_ratings", f"env.candidates={candidates}"]))
    data = rating_data(cfg)
    by_id, by_features = (make_batched_env(cfg.env, 16, "cpu", data=data) for _ in range(2))
    by_id.reset(seed=4)
    by_features.reset(seed=4)
    features = by_id.item_features()
    rng = np.random.default_rng(0)
    for _ in range(25):
        ids = rng.integers(0, features.shape[0], 16)
        chosen = by_id.choose_items(torch.as_tensor(ids), by_id.allowed_items())
        a = by_id.step(ids)
        b = by_features.step(features[ids].numpy())
        assert np.array_equal(a[4]["item"], b[4]["item"]) and np.array_equal(a[1], b[1])
        assert np.array_equal(chosen.numpy(), a[4]["item"])
    with pytest.raises(ValueError, match="outside the catalogue"):
        by_id.step(np.full(16, features.shape[0]))


# --- configs --------------------------------------------------------------------------------
def test_tpgr_refuses_an_env_without_items(tmp_path: Path) -> None:
    cfg = compose_config(["algo=tpgr", "env=synthetic", "tracking.enabled=false"])
    with pytest.raises(ConfigError, match="item catalogue"):
        run_experiment(cfg, tmp_path)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("algo.gamma=2", "algo.gamma"),
        ("algo.tree_split=ward", "algo.tree_split"),
        ("algo.batch_episodes=1", "algo.batch_episodes"),
        ("algo.tree_children=1", "algo.tree_children"),
    ],
)
def test_invalid_settings_name_their_key(override: str, key: str, tmp_path: Path) -> None:
    cfg = compose_config([*TINY_TPGR, override, "tracking.enabled=false"])
    with pytest.raises(ConfigError, match=key):
        run_experiment(cfg, tmp_path)


def test_too_few_leaves_say_which_keys_to_raise(tmp_path: Path) -> None:
    cfg = compose_config([*TINY_TPGR, "algo.tree_children=3", "tracking.enabled=false"])
    with pytest.raises(ConfigError, match=r"algo\.tree_children=3"):
        run_experiment(cfg, tmp_path)


# --- runs, reproducibility, checkpoints -------------------------------------------------------
def _history(tmp_path: Path, *overrides: str) -> dict[str, list]:
    cfg = compose_config([*TINY_TPGR, "tracking.enabled=false", *overrides])
    result = run_experiment(cfg, tmp_path)
    return {k: v for k, v in result.history.items() if not k.startswith("perf/")}


@pytest.mark.slow
def test_a_run_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    first = _history(tmp_path / "a")
    assert _history(tmp_path / "b") == first
    assert _history(tmp_path / "c", "seed=1") != first
    assert "train/policy_loss" in first and first["test/precision"]


@pytest.mark.slow
def test_joint_without_augmentation_equals_the_baseline(tmp_path: Path) -> None:
    baseline = _history(tmp_path / "a", "mode=baseline")
    joint = _history(tmp_path / "b", "mode=joint", "macs.augment_prob=0", *TINY_MACS)
    assert {k: v for k, v in joint.items() if not k.startswith(("macs/", "cf/"))} == baseline
    augmented = _history(tmp_path / "c", "mode=joint", *TINY_MACS)
    assert augmented["cf/transitions"][-1][1] > 0 and "train/cf_loss" in augmented
    assert augmented["train/policy_loss"] != baseline["train/policy_loss"]


@pytest.mark.slow
def test_ctrl_draws_alternatives_from_the_policy(tmp_path: Path) -> None:
    history = _history(tmp_path, "mode=ctrl", *TINY_CTRL)
    assert history["ctrl/fits"][-1][1] >= 1 and history["cf/transitions"][-1][1] > 0
    assert "train/cf_rho_mean" in history
    # Drawn at the behaviour policy's current iterate, a' has importance weight about 1.
    assert all(0.5 < v < 2.0 for _, v in history["train/cf_rho_mean"])


def test_checkpoints_round_trip_with_weights_only(tmp_path: Path) -> None:
    cfg = compose_config([*TINY_TPGR, "tracking.enabled=false"])
    run_experiment(cfg, tmp_path)
    config = to_config(cfg)
    data = rating_data(config)
    env = make_batched_env(config.env, 16, "cpu", data=data)
    items = ItemSpace(env.item_features())
    fresh = make_agent(config.algo, env.single_observation_space, env.single_action_space, "cpu", 5, items)
    state = torch.load(tmp_path / "agent.pt", weights_only=True)
    assert state["algo"] == "tpgr"
    obs, _ = env.reset(seed=0)
    fresh.load(tmp_path / "agent.pt")
    trained = make_agent(config.algo, env.single_observation_space, env.single_action_space, "cpu", 0, items)
    trained.load(tmp_path / "agent.pt")
    allowed = env.allowed_items()
    assert torch.equal(
        fresh.act(torch.as_tensor(obs), True, allowed), trained.act(torch.as_tensor(obs), True, allowed)
    )
    # The training state (with running episodes) survives a weights-only round trip too.
    trained.explore(torch.as_tensor(obs), allowed)
    n = len(obs)
    trained.observe(
        Transitions(
            torch.as_tensor(obs),
            torch.zeros(n, dtype=torch.int64),
            torch.ones(n),
            torch.as_tensor(obs),
            torch.zeros(n, dtype=torch.bool),
            torch.zeros(n, dtype=torch.bool),
        )
    )
    torch.save(trained.training_state(), tmp_path / "state.pt")
    fresh.load_training_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert fresh.episodes is not None and json.dumps(fresh.episodes.state()["counters"]) == "[16, 16]"


def test_a_saved_tpgr_refuses_another_catalogue(tmp_path: Path) -> None:
    features = torch.randn(30, 3)
    agent_over(features, 6).save(tmp_path / "a.pt")
    with pytest.raises(ValueError, match="items"):
        agent_over(torch.randn(40, 3), 6).load(tmp_path / "a.pt")


# Catalog baseline and joint runs are the reproducibility and joint-equality tests' own.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "candidates"),
    [
        ("expert", "catalog"),
        ("ctrl", "catalog"),
        *((m, "rated") for m in ("baseline", "expert", "joint", "ctrl")),
    ],
)
def test_every_mode_runs_under_both_protocols_and_logs_table1(
    mode: str, candidates: str, tmp_path: Path
) -> None:
    cfg = compose_config(
        [
            *TINY_TPGR,
            *TINY_MACS,
            *TINY_CTRL,
            f"mode={mode}",
            f"env.candidates={candidates}",
            f"tracking.dir={tmp_path / 'outputs'}",
            f"expert.cache_dir={tmp_path / 'experts'}",
        ]
    )
    result = run_experiment(cfg, tmp_path / "run")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["algo"] == "tpgr"
    for metric in ("test/precision", "test/recall", "test/accuracy", "test/ndcg", "test/hit_rate"):
        assert 0 <= run.data.metrics[metric] <= 1
    assert math.isfinite(run.data.metrics["train/policy_loss"])
    if mode != "baseline":
        assert run.data.metrics["cf/transitions"] > 0
