"""PGPR (``algo=pgpr``): TransE, the walk's rules (pruning, masking, patterns), the
actor-critic, beam search and its explanations, MACS's and CTRL's terms, reproducibility,
checkpoints and whole runs, on a tiny dataset in ML-100K's layout with its side files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import TINY_CTRL, TINY_MACS
from kg_files import write_ml100k
from macs_exp.agents import ItemSpace, Transitions, make_agent
from macs_exp.agents.kg_walk import HOPS
from macs_exp.agents.pgpr import PGPR
from macs_exp.app import compose_config
from macs_exp.config import Config, to_config
from macs_exp.data.kg import KnowledgeGraph
from macs_exp.data.transe import TransE, graph_embedding
from macs_exp.envs.base import BatchedEnv
from macs_exp.envs.factory import make_batched_env
from macs_exp.schema import ConfigError
from macs_exp.trainer.run import evaluation_env, knowledge_graph, rating_data, run_experiment

TINY_PGPR = [
    "algo=pgpr",
    "env=ml100k",
    "trainer.total_steps=300",
    "trainer.eval_every=150",
    "trainer.log_every=100",
    "trainer.progress=none",
    "trainer.explain_users=4",
    "algo.batch_size=8",
    "algo.hidden=[32,16]",
    "algo.context_dim=8",
    "kg.transe_epochs=3",
    "kg.transe_dim=16",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ml100k(tmp_path_factory.mktemp("ml100k"))


def pgpr_config(data_dir: Path, cache: Path, *overrides: str) -> Config:
    return to_config(
        compose_config([*TINY_PGPR, f"env.data_dir={data_dir}", f"data.cache_dir={cache}", *overrides])
    )


def built(data_dir: Path, cache: Path, *overrides: str, seed: int = 0) -> tuple[PGPR, BatchedEnv, Config]:
    """A PGPR agent over the tiny dataset's graph and a training env of 4 slots."""
    config = pgpr_config(data_dir, cache, "env.num_envs=4", *overrides)
    data = rating_data(config)
    graph = knowledge_graph(config, data)
    env = make_batched_env(config.env, config.env.num_envs, "cpu", data=data)
    items = ItemSpace(env.item_features(), graph)
    agent = make_agent(config.algo, env.single_observation_space, env.single_action_space, "cpu", seed, items)
    assert isinstance(agent, PGPR)
    return agent, env, config


def graph_of(agent: PGPR) -> KnowledgeGraph:
    return agent.walker.graph


def is_edge(graph: KnowledgeGraph, head: int, relation: int, tail: int) -> bool:
    row = slice(graph.indptr[head], graph.indptr[head + 1])
    return bool(((graph.neighbors[row] == tail) & (graph.edge_relations[row] == relation)).any())


# --- TransE -------------------------------------------------------------------------------
def test_transe_loss_falls_and_ranks_training_edges_above_corrupted_ones(
    data_dir: Path, tmp_path: Path
) -> None:
    # Small batches, so that the tiny graph gets enough steps (upstream's 64 is for big graphs).
    config = pgpr_config(data_dir, tmp_path, "kg.transe_epochs=50", "kg.transe_batch_size=16")
    graph = knowledge_graph(config, rating_data(config))
    assert graph is not None
    kg, embedding = graph
    assert embedding.stats["transe_last_epoch_loss"] < 0.8 * embedding.stats["transe_first_epoch_loss"]
    heads, relations, tails = kg.canonical_edges()
    liked = relations == kg.relations.index("liked")
    users, items = heads[liked], tails[liked]
    e, w = embedding.entities, embedding.relations
    scores = (e[users] + w[kg.relations.index("liked")]) @ e[kg.n_users : kg.n_users + kg.n_items].T
    true = scores[torch.arange(len(users)), torch.as_tensor(items - kg.n_users)]
    # The share of items a training edge's item outscores, upstream's ranking score: well above
    # chance (0.5); 0.58 after 3 epochs.
    assert float((scores < true[:, None]).float().mean()) > 0.75


def test_transe_is_cached_by_graph_and_settings(data_dir: Path, tmp_path: Path) -> None:
    config = pgpr_config(data_dir, tmp_path)
    kg = knowledge_graph(config, rating_data(config))
    assert kg is not None
    again = graph_embedding(kg[0], config.kg, tmp_path)
    assert torch.equal(again.entities, kg[1].entities)
    assert len(list(tmp_path.glob("transe-*.pt"))) == 1
    config.kg.transe_epochs = 1
    other = graph_embedding(kg[0], config.kg, tmp_path)
    assert not torch.equal(other.entities, kg[1].entities) and len(list(tmp_path.glob("transe-*.pt"))) == 2


def test_transe_scores_a_triple_as_upstream() -> None:
    model = TransE(5, 2, 3)
    h, r, t = torch.tensor([1]), torch.tensor([1]), torch.tensor([[4]])
    expected = (model.entities.weight[1] + model.relations.weight[1]) @ model.entities.weight[4]
    assert torch.allclose(model.scores(h, r, t)[0, 0], expected + model.bias.weight[1 * 5 + 4, 0])


def test_transe_closed_form_gradients_are_autograds() -> None:
    torch.manual_seed(0)
    model = TransE(12, 3, 4)
    with torch.no_grad():
        for table in (model.entities, model.relations, model.bias):
            table.weight.normal_()
    edges = torch.tensor([[0, 1, 5], [0, 2, 7], [3, 1, 5]])
    negatives = torch.tensor([[6, 6], [8, 5], [9, 10]])
    model.loss(edges, negatives).backward()
    loss, grads = model.gradients(edges, negatives)
    assert torch.allclose(loss, model.loss(edges, negatives))
    for table, (rows, grad) in zip((model.entities, model.relations, model.bias), grads, strict=True):
        assert table.weight.grad is not None
        expected = table.weight.grad.clone()
        expected[rows] -= grad
        assert torch.allclose(expected, torch.zeros_like(expected), atol=1e-6)


# --- the walk -------------------------------------------------------------------------------
def _walks(agent: PGPR, env: BatchedEnv, steps: int) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    obs, _ = env.reset(seed=0)
    out = []
    for _ in range(steps):
        allowed = env.allowed_items()
        items = agent.explore(torch.as_tensor(obs), allowed, env.slot_users())
        assert agent._pending is not None
        out.append((agent._pending, allowed))
        assert bool(allowed[torch.arange(len(items)), items].all()), "an excluded item was recommended"
        obs, rewards, terminated, truncated, _ = env.step(items.numpy())
        agent.observe(
            Transitions(
                torch.as_tensor(obs),
                items,
                torch.as_tensor(rewards),
                torch.as_tensor(obs),
                torch.as_tensor(terminated),
                torch.as_tensor(truncated),
            )
        )
    return out


@pytest.mark.parametrize("candidates", ["catalog", "rated"])
def test_walks_stay_on_the_graph_and_end_at_allowed_items_along_patterns(
    candidates: str, data_dir: Path, tmp_path: Path
) -> None:
    agent, env, _ = built(data_dir, tmp_path, f"env.candidates={candidates}")
    graph = graph_of(agent)
    successes = 0
    for walk, allowed in _walks(agent, env, 20):
        for row in range(len(walk["users"])):
            path, rels = walk["path"][row].tolist(), walk["relations"][row].tolist()
            assert path[0] == int(walk["users"][row])
            for h in range(HOPS):
                if rels[h] == agent.walker.self_loop:
                    assert path[h + 1] == path[h]
                else:
                    assert is_edge(graph, path[h], rels[h], path[h + 1])
            assert len(
                set(p for p, r in zip(path[1:], rels, strict=True) if r != agent.walker.self_loop)
            ) == sum(r != agent.walker.self_loop for r in rels), "a walk revisited an entity"
            if bool(walk["success"][row]):
                successes += 1
                names = tuple(graph.relations[r] for r in rels)
                assert names in graph.patterns
                assert bool(allowed[row, path[-1] - graph.n_users])
    assert successes > 0


def test_pruning_keeps_the_best_scored_edges_in_upstream_order(data_dir: Path, tmp_path: Path) -> None:
    agent, _, _ = built(data_dir, tmp_path, "algo.max_acts=3")
    full, _, _ = built(data_dir, tmp_path, "algo.max_acts=250")
    users = torch.arange(6)
    pruned = agent.walker.actions(users, users[:, None], None)
    every = full.walker.actions(users, users[:, None], None)
    assert pruned.entities.shape == (6, 4)
    assert bool(pruned.valid[:, 0].all()), "the self-loop is always slot 0"
    for row in range(6):
        kept = pruned.entities[row, 1:][pruned.valid[row, 1:]]
        options = every.entities[row, 1:][every.valid[row, 1:]]
        scores = agent.walker._pruning_scores(users[row : row + 1], options[None])[0]
        best = options[scores.topk(min(3, len(options))).indices]
        assert sorted(kept.tolist()) == sorted(best.tolist())
        key = pruned.relations[row, 1:][pruned.valid[row, 1:]] * 10**6 + kept
        assert torch.equal(key, key.sort().values)


def test_beam_search_recommends_allowed_items_and_explains_them(data_dir: Path, tmp_path: Path) -> None:
    agent, env, _ = built(data_dir, tmp_path, "env.candidates=rated")
    obs, _ = env.reset(seed=3)
    graph = graph_of(agent)
    for _ in range(5):
        allowed = env.allowed_items()
        items = agent.act(torch.as_tensor(obs), True, allowed, env.slot_users())
        assert bool(allowed[torch.arange(len(items)), items].all())
        for row, text in enumerate(agent.explanations()):
            if text is None:
                continue
            assert text.startswith(str(graph.entity_names[int(env.slot_users()[row])]))
            assert text.endswith(str(graph.entity_names[graph.n_users + int(items[row])]))
        obs, *_ = env.step(items.numpy())


def test_a_greedy_walk_without_users_fails_by_name(data_dir: Path, tmp_path: Path) -> None:
    agent, env, _ = built(data_dir, tmp_path)
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="users="):
        agent.act(torch.as_tensor(obs), True, env.allowed_items())


# --- learning -------------------------------------------------------------------------------
def test_rewarded_walks_become_more_likely(data_dir: Path, tmp_path: Path) -> None:
    overrides = ("algo.dropout=0", "algo.act_dropout=0", "algo.learning_rate=1e-2")
    agent, env, _ = built(data_dir, tmp_path, *overrides)
    walks = [w for w, _ in _walks(agent, env, 8)]
    batch = {k: torch.cat([w[k] for w in walks]) for k in walks[0] if k != "item"}
    changes = []
    for reward in (1.0, 0.0):
        twin, _, _ = built(data_dir, tmp_path, *overrides)
        batch["reward"] = torch.full((len(batch["users"]),), reward)
        with torch.no_grad():
            before = twin.replay(batch)[2].sum()
        for _ in range(20):
            losses = twin.update(batch, None)
        with torch.no_grad():
            changes.append(float(twin.replay(batch)[2].sum() - before))
    # The same 32 walks: rewarded, their log-probability rises (by 2.6); unrewarded, it falls
    # (by 2.1: the critic's start is above 0).
    assert changes[0] > 2.0 and changes[1] < changes[0] - 4.0
    assert set(losses) >= {"policy_loss", "value_loss", "entropy", "loss"}


def test_twins_and_alternatives_add_the_counterfactual_term(data_dir: Path, tmp_path: Path) -> None:
    agent, env, _ = built(data_dir, tmp_path, "algo.dropout=0", "algo.batch_size=4")
    obs, _ = env.reset(seed=0)
    obs_t, allowed, users = torch.as_tensor(obs), env.allowed_items(), env.slot_users()
    items = agent.explore(obs_t, allowed, users)
    others = allowed.clone()
    others[torch.arange(len(items)), items] = False
    alternatives = agent.sample_actions(obs_t, others, torch.Generator().manual_seed(1), users)
    real = Transitions(
        obs_t, items, torch.ones(4), obs_t, torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)
    )
    agent.observe(real)
    every = torch.ones(4, dtype=torch.bool)
    agent.add_extra(real.derived(every, continues_real=True, obs=obs_t + 0.1, rewards=torch.zeros(4)))
    agent.add_extra(real.derived(every, continues_real=False, actions=alternatives, rewards=torch.ones(4)))
    reached = int(agent._drawn[0]["success"].sum())
    assert sum(len(w["users"]) for w in agent.extra) == 4 + reached
    (losses,) = agent.learn()
    assert "cf_policy_loss" in losses and math.isfinite(losses["cf_policy_loss"])
    # Without dropout the alternatives' walks were drawn by this very policy: rho = 1, and
    # the twins' only differ by their state's context.
    assert losses["cf_rho_mean"] > 0.0 and losses["cf_clip_frac"] <= 1.0


def test_walk_fail_rate_is_reported_and_restarted(data_dir: Path, tmp_path: Path) -> None:
    agent, env, _ = built(data_dir, tmp_path)
    walks = _walks(agent, env, 5)
    failed = sum(float((~w["success"]).sum()) for w, _ in walks) / sum(len(w["users"]) for w, _ in walks)
    assert agent.window_metrics()["pgpr/walk_fail_rate"] == pytest.approx(failed)
    assert agent.window_metrics() == {}


# --- persistence ----------------------------------------------------------------------------
def test_checkpoints_round_trip_with_weights_only(data_dir: Path, tmp_path: Path) -> None:
    agent, env, _ = built(data_dir, tmp_path)
    _walks(agent, env, 5)
    agent.learn()  # 20 walks: one update of all of them
    _walks(agent, env, 3)
    agent.save(tmp_path / "agent.pt")
    fresh, _, _ = built(data_dir, tmp_path, seed=5)
    fresh.load(tmp_path / "agent.pt")
    obs, _ = env.reset(seed=9)
    args = (torch.as_tensor(obs), True, env.allowed_items(), env.slot_users())
    assert torch.equal(agent.act(*args), fresh.act(*args))
    torch.save(agent.training_state(), tmp_path / "state.pt")
    fresh.load_training_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert len(fresh.real) == len(agent.real) == 3


def test_a_saved_pgpr_refuses_another_graph(data_dir: Path, tmp_path: Path) -> None:
    agent, _, _ = built(data_dir, tmp_path)
    agent.save(tmp_path / "agent.pt")
    other_dir = write_ml100k(tmp_path / "other", seed=1)
    other, _, _ = built(other_dir, tmp_path)
    with pytest.raises(ValueError, match=r"knowledge graph|items"):
        other.load(tmp_path / "agent.pt")


# --- configuration --------------------------------------------------------------------------
def test_a_table_without_side_files_or_a_simulator_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kg\.schema"):
        run_experiment(
            compose_config(["algo=pgpr", "env=tiny_ratings", "tracking.enabled=false"]), tmp_path / "a"
        )
    with pytest.raises(ConfigError, match="knowledge graph"):
        run_experiment(
            compose_config(["algo=pgpr", "env=synthetic", "tracking.enabled=false"]), tmp_path / "b"
        )


def test_eval_users_limits_the_evaluation_to_the_first_test_users(data_dir: Path, tmp_path: Path) -> None:
    for eval_users, served in (("null", 30), ("3", 3)):
        config = pgpr_config(data_dir, tmp_path, f"env.eval_users={eval_users}")
        env, ranking = evaluation_env(config, torch.device("cpu"), rating_data(config))
        assert env.num_envs == served and ranking is not None
        assert env.slot_users().tolist() == list(range(served))


@pytest.mark.parametrize(("key", "value"), [("beam", "[25,5]"), ("actor", "tree"), ("max_acts", "0")])
def test_bad_settings_fail_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"algo.{key}"):
        to_config(compose_config(["algo=pgpr", f"algo.{key}={value}"]))


# --- whole runs -----------------------------------------------------------------------------
def _run(data_dir: Path, tmp_path: Path, *overrides: str) -> tuple[object, MlflowClient]:
    cfg = compose_config(
        [
            *TINY_PGPR,
            *TINY_MACS,
            *TINY_CTRL,
            f"env.data_dir={data_dir}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"tracking.dir={tmp_path / 'outputs'}",
            f"expert.cache_dir={tmp_path / 'experts'}",
            *overrides,
        ]
    )
    result = run_experiment(cfg, tmp_path / "run")
    return result, MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")


@pytest.mark.slow
def test_a_run_logs_table1_the_graph_and_explanations(data_dir: Path, tmp_path: Path) -> None:
    result, client = _run(data_dir, tmp_path, "mode=baseline")
    run = client.get_run(result.run_id)  # type: ignore[attr-defined]
    assert run.info.status == "FINISHED" and run.data.tags["algo"] == "pgpr"
    for metric in (
        "test/precision",
        "test/recall",
        "test/ndcg",
        "pgpr/walk_fail_rate",
        "pgpr/beam_fill_rate",
    ):
        assert 0 <= run.data.metrics[metric] <= 1
    assert int(float(run.data.params["kg.stats.entities.user"])) == 30
    lines = [json.loads(line) for line in (tmp_path / "run" / "explanations.jsonl").read_text().splitlines()]
    assert {line["user"] for line in lines} == {1, 2, 3, 4} and len(lines) == 4 * 10
    assert any(line["path"] for line in lines)
    artifacts = [a.path for a in client.list_artifacts(result.run_id)]  # type: ignore[attr-defined]
    assert "explanations.jsonl" in artifacts


@pytest.mark.slow
def test_a_run_is_reproducible_from_its_seed(data_dir: Path, tmp_path: Path) -> None:
    first, _ = _run(data_dir, tmp_path / "a", "mode=baseline", "tracking.enabled=false")
    second, _ = _run(data_dir, tmp_path / "b", "mode=baseline", "tracking.enabled=false")
    learned = {k: v for k, v in first.history.items() if not k.startswith("perf/")}  # type: ignore[attr-defined]
    assert learned and all(second.history[k] == v for k, v in learned.items())  # type: ignore[attr-defined]


@pytest.mark.slow
def test_evaluating_once_after_training_gives_the_same_table1_numbers(data_dir: Path, tmp_path: Path) -> None:
    """Table I on ML-1M and Douban-Book evaluates every run once, after training (PGPR's beam
    search over every test user costs minutes there): its numbers are the last evaluation of a
    run that evaluates every 150 user-steps from step 0, -J's counterfactual queries included."""
    often, _ = _run(data_dir, tmp_path / "a", "mode=joint", "tracking.enabled=false")
    once, _ = _run(
        data_dir,
        tmp_path / "b",
        "mode=joint",
        "tracking.enabled=false",
        "trainer.eval_every=${trainer.total_steps}",
        "trainer.eval_at_start=false",
    )
    table = [k for k in often.history if k.startswith("test/")]  # type: ignore[attr-defined]
    assert len(often.history[table[0]]) == 3  # type: ignore[attr-defined]
    assert all(once.history[k] == often.history[k][-1:] for k in table)  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "candidates"),
    [
        *((m, "catalog") for m in ("expert", "joint", "ctrl", "random_mask")),
        *((m, "rated") for m in ("baseline", "joint", "ctrl")),
    ],
)
def test_every_mode_runs_under_both_protocols(
    mode: str, candidates: str, data_dir: Path, tmp_path: Path
) -> None:
    result, client = _run(data_dir, tmp_path, f"mode={mode}", f"env.candidates={candidates}")
    run = client.get_run(result.run_id)  # type: ignore[attr-defined]
    assert run.info.status == "FINISHED"
    assert 0 <= run.data.metrics["test/precision"] <= 1
    assert math.isfinite(run.data.metrics["train/policy_loss"])
    if mode != "baseline":
        assert run.data.metrics["cf/transitions"] > 0
        assert math.isfinite(run.data.metrics["train/cf_policy_loss"])


@pytest.mark.slow
def test_joint_without_augmentation_is_the_baseline(data_dir: Path, tmp_path: Path) -> None:
    base, _ = _run(data_dir, tmp_path / "a", "mode=baseline", "tracking.enabled=false")
    joint, _ = _run(data_dir, tmp_path / "b", "mode=joint", "macs.augment_prob=0", "tracking.enabled=false")
    for key, values in base.history.items():  # type: ignore[attr-defined]
        if key.startswith(("test/", "eval/", "train/")):
            assert joint.history[key] == values, key  # type: ignore[attr-defined]
    assert np.isfinite([v for _, v in base.history["test/precision"]]).all()  # type: ignore[attr-defined]
