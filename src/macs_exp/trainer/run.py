"""One experiment from a composed config: the composition root.

This is the only module that wires the pieces together (data, envs, the agent, the mode's
augmenter, tracking, the trainer); envs, agents, augmenters and tracking know nothing of each
other. It converts and checks the config once, and builds what the options name through the
plug-in registry, so it has no branch on an algorithm or a mode.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Generator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from macs_exp import plugins
from macs_exp.agents import Agent, AgentConfig, ItemSpace, Updates, make_agent
from macs_exp.config import Config, to_config
from macs_exp.data import load_rating_data
from macs_exp.data.dataset import RatingData
from macs_exp.data.kg import KnowledgeGraph, load_knowledge_graph
from macs_exp.data.transe import GraphEmbedding, graph_embedding
from macs_exp.envs.base import BatchedEnv, ItemCatalogue
from macs_exp.envs.config import RatingEnvConfig
from macs_exp.envs.counting import CountingEnv, StepCounter
from macs_exp.envs.factory import make_batched_env
from macs_exp.envs.rating import RatingVecEnv
from macs_exp.metrics import ranking_metrics
from macs_exp.schema import ConfigError
from macs_exp.tracking import Tracker, flatten, ledger, plot_learning_curve, tracked_run
from macs_exp.tracking.tags import GROUP_SEEDS_TAG, ROLE_RUN
from macs_exp.trainer.augmenter import AugmenterContext
from macs_exp.trainer.budget import Budget
from macs_exp.trainer.checkpoint import CHECKPOINT_FILE, Checkpointing
from macs_exp.trainer.explain import EXPLANATIONS_FILE, write_explanations
from macs_exp.trainer.progress import Progress
from macs_exp.trainer.result import TrainResult
from macs_exp.trainer.resume import check_resumable, find_checkpoint
from macs_exp.trainer.trainer import Ranking, Trainer, Training, drive

log = logging.getLogger("macs_exp")

# What an agent that walks a knowledge graph is lent: the graph and its TransE embedding.
Graph = tuple[KnowledgeGraph, GraphEmbedding]

# What a run leaves in its output folder besides its checkpoints: its resolved config, and the
# MLflow run that recorded it (null with tracking.enabled=false), which links a later
# evaluation of its checkpoints (``macs_exp.evaluate``) back to it.
CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"


def run_experiment(
    cfg: DictConfig, output_dir: str | Path, *, tags: Mapping[str, str] | None = None
) -> TrainResult:
    """Trains one agent as ``cfg`` says. ``tags`` are added to (and may override) the run's
    own ``run_tags``: ``mlflow.parentRunId`` nests it under another run, ``role`` marks what
    it is for reports. Bad values raise ``ConfigError`` before any work (and before a run opens).
    With ``trainer.resume`` it continues a stopped run, in that run's folder and MLflow run."""
    return drive(experiment(cfg, output_dir, tags=tags))


def experiment(cfg: DictConfig, output_dir: str | Path, *, tags: Mapping[str, str] | None = None) -> Training:
    """``run_experiment`` as a generator that yields its agent whenever its updates are due
    (``macs_exp.trainer.trainer.Training``): what seed-parallel training drives, one per seed."""
    started = time.monotonic()
    config = to_config(cfg)
    device = torch_device(config.device)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    resume = find_checkpoint(config.trainer.resume, Path(output_dir), config.tracking)
    if resume is not None:
        output_dir = resume.folder
        check_resumable(resume, config_yaml)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / CONFIG_FILE).write_text(config_yaml)
    # Data problems (a missing file, a malformed row) surface here, before a run is opened.
    data = rating_data(config)
    graph = knowledge_graph(config, data)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    params = flatten({str(k): v for k, v in resolved.items()} if isinstance(resolved, dict) else {})
    if data is not None:
        params.update({f"data.stats.{k}": str(v) for k, v in data.stats.items()})
    if graph is not None:
        stats = {**graph[0].stats, **graph[1].stats}
        params.update({f"kg.stats.{k}": str(v) for k, v in stats.items()})
    title = f"{config.algo.name} / {config.mode.name} / {config.env.name} / seed {config.seed}"
    all_tags = {**run_tags(cfg), "run_dir": str(output_dir.resolve()), **(tags or {})}
    if resume is not None:
        all_tags["resumed_from_step"] = str(resume.steps)
    run_id = resume.run_id if resume is not None else None
    with tracked_run(config.tracking, params, all_tags, config_yaml, run_id) as tracker:
        (output_dir / RUN_FILE).write_text(json.dumps({"run_id": tracker.run_id}) + "\n")
        progress = Progress(config.trainer.progress, config.trainer.total_steps, title)
        checkpointing = Checkpointing(
            output_dir / CHECKPOINT_FILE,
            config.trainer.checkpoint_every,
            {"run_id": tracker.run_id or "", "config": config_yaml},
            None if resume is None else resume.state,
        )
        try:
            agent, result = yield from _train(
                cfg, config, device, (data, graph), tracker, progress, output_dir, checkpointing
            )
        finally:
            progress.close()
        result.run_id = tracker.run_id
        _report(result, agent, tracker, output_dir, title)
    if config.tracking.ledger is not None and all_tags["role"] == ROLE_RUN:
        group = all_tags.get(GROUP_SEEDS_TAG)
        row = ledger.entry(
            cfg,
            history=result.history,
            key_metric=result.key_metric,
            wall_time_s=time.monotonic() - started,
            seeds_in_process=len(group.split(",")) if group else 1,
            run_id=result.run_id,
        )
        ledger.append(config.tracking.ledger, row)
    # A finished run has nothing left to resume; its agent is in agent.pt.
    checkpointing.path.unlink(missing_ok=True)
    return result


def _train(
    raw: DictConfig,
    config: Config,
    device: torch.device,
    sources: tuple[RatingData | None, Graph | None],
    tracker: Tracker,
    progress: Progress,
    output_dir: Path,
    checkpointing: Checkpointing,
) -> Generator[Agent, Updates, tuple[Agent, TrainResult]]:
    """Builds the envs, the agent, the mode's augmenter and the trainer, trains, and has an
    agent that explains itself explain its choices for a sample of test users."""
    env_cfg = config.env
    data, graph = sources
    budget = Budget(config.trainer.budget, config.trainer.total_steps, StepCounter())
    with ExitStack() as envs:

        def make_probe_env() -> BatchedEnv:
            """An env like the run's, closed with the run's envs."""
            made = make_batched_env(env_cfg, env_cfg.num_envs, str(device), data=data)
            envs.callback(made.close)
            return made

        def make_env() -> BatchedEnv:
            """An env like the run's, whose steps are its cost (as all but the evaluation's and
            the probes' are)."""
            return CountingEnv(make_probe_env(), budget.counter)

        env = make_env()
        eval_env, ranking = evaluation_env(config, device, data)
        envs.callback(eval_env.close)
        items = item_space(env, graph)

        def agent_for(algo: AgentConfig, seed: int) -> Agent:
            return agent_for_env(algo, env, device, seed, items)

        agent = agent_for(config.algo, config.seed)
        context = AugmenterContext(
            raw=raw,
            cfg=config,
            env=env,
            make_env=make_env,
            make_probe_env=make_probe_env,
            make_agent=agent_for,
            agent=agent,
            seed=config.seed,
            tracker=tracker,
            train_run=run_experiment,
            output_dir=output_dir,
            budget=budget,
        )
        trainer = Trainer(
            agent=agent,
            env=env,
            eval_env=eval_env,
            cfg=config.trainer,
            tracker=tracker,
            seed=config.seed,
            checkpoint_dir=output_dir,
            augmenter=plugins.mode_plugin(config.mode.name).factory(context),
            progress=progress,
            ranking=ranking,
            budget=budget,
            checkpointing=checkpointing,
        )
        result = yield from trainer.run()
        if data is not None and config.trainer.explain_users:
            _explain(
                agent,
                config,
                device,
                data,
                min(config.trainer.explain_users, eval_env.num_envs),
                output_dir,
                tracker,
            )
        return agent, result


def _explain(
    agent: Agent,
    config: Config,
    device: torch.device,
    data: RatingData,
    n: int,
    output_dir: Path,
    tracker: Tracker,
) -> None:
    """The first ``n`` test users' episodes, explained by an agent that explains itself."""
    sample = make_batched_env(config.env, n, str(device), data=data, split="test")
    try:
        ids = None if data.user_ids is None or data.item_ids is None else (data.user_ids, data.item_ids)
        written = write_explanations(
            agent, sample, output_dir / EXPLANATIONS_FILE, config.trainer.eval_seed, ids
        )
    finally:
        sample.close()
    if written is not None:
        tracker.log_artifact(written)


def _report(result: TrainResult, agent: Agent, tracker: Tracker, output_dir: Path, title: str) -> None:
    """Saves the final agent, draws the learning curve and logs both with the best checkpoint."""
    agent.save(output_dir / "agent.pt")
    # The key metric, and recall beside precision on the offline datasets.
    shown = [k for k in (result.key_metric, "test/recall") if k in result.history]
    curve = plot_learning_curve(
        {k: result.history[k] for k in shown}, output_dir / "learning_curve.png", title
    )
    # The agent, its best checkpoint, and whatever the mode saved (pi_c.pt).
    for path in (curve, *sorted(output_dir.glob("*.pt"))):
        if path.exists():
            tracker.log_artifact(path, "checkpoints" if path.suffix == ".pt" else None)
    log.info("finished %s: final %s", title, _fmt(result.final_eval))
    if tracker.run_id:
        log.info("MLflow run %s (make ui to browse)", tracker.run_id)


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """The tags reports select runs by (see ``macs_exp.reports.runs``) and the run's name; read
    straight from the config so that a job failing before its run opens can still be recorded
    under them."""
    return {
        "mlflow.runName": run_name(cfg),
        "role": ROLE_RUN,
        "algo": str(cfg.algo.name),
        "mode": str(cfg.mode.name),
        "env": str(cfg.env.name),
        "seed": str(cfg.seed),
        # Where the job runs, to find (or kill) the process behind a run of a sweep.
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        **_git_tags(),
    }


def evaluation_env(
    config: Config, device: torch.device, data: RatingData | None
) -> tuple[BatchedEnv, Ranking | None]:
    """The env a run's agent is evaluated in and, on the offline datasets, the ranking that
    scores it (Table I). Shared by the training loop and ``macs_exp.evaluate``, so that a saved
    agent meets the users it met in training: every test user of the test split offline,
    trainer.eval_episodes users of the evaluation stream on a simulator. Its steps are no cost
    of the run; the caller closes it."""
    if data is None:
        return make_batched_env(config.env, config.trainer.eval_episodes, str(device)), None
    assert isinstance(config.env, RatingEnvConfig)
    eval_env = make_batched_env(config.env, config.env.eval_users, str(device), data=data, split="test")
    return eval_env, _ranking(eval_env, data)


def item_space(env: BatchedEnv, graph: Graph | None = None) -> ItemSpace | None:
    """The env's catalogue, for agents that choose items themselves (algo.action_mapping=knn),
    with the dataset's knowledge graph for those that walk one."""
    return ItemSpace(env.item_features(), graph) if isinstance(env, ItemCatalogue) else None


def knowledge_graph(config: Config, data: RatingData | None) -> Graph | None:
    """The dataset's knowledge graph and its TransE embedding (both cached under
    data.cache_dir), built only for an agent that walks one (``AgentConfig.needs_graph``) on a
    rating env; side-file problems surface here, before a run is opened."""
    if not type(config.algo).needs_graph or data is None:
        return None
    assert isinstance(config.env, RatingEnvConfig)
    graph = load_knowledge_graph(config.env, config.data, config.kg, data)
    return graph, graph_embedding(graph, config.kg, config.data.cache_dir)


def agent_for_env(
    algo: AgentConfig, env: BatchedEnv, device: torch.device, seed: int, items: ItemSpace | None
) -> Agent:
    """An agent of ``algo`` for ``env``'s spaces, given ``items``, the env's ``item_space``."""
    return make_agent(algo, env.single_observation_space, env.single_action_space, device, seed, items)


def run_name(cfg: DictConfig) -> str:
    """``tracking.run_name``, else ``<algo>-<mode>-<env>-s<seed>``: what tells runs apart in the
    MLflow UI's lists and chart legends, which show names rather than tags."""
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    return f"{cfg.algo.name}-{cfg.mode.name}-{cfg.env.name}-s{cfg.seed}"


def _ranking(eval_env: BatchedEnv, data: RatingData) -> Ranking:
    """The Table I metrics of what the test split's slots (one per test user) were shown."""
    if not isinstance(eval_env, RatingVecEnv):
        raise TypeError(
            f"a rating dataset is served by {RatingVecEnv.__name__}, not {type(eval_env).__name__}"
        )
    return functools.partial(ranking_metrics, users=eval_env.users, data=data)


def rating_data(config: Config) -> RatingData | None:
    """The preprocessed dataset of a rating env (None for the simulators)."""
    if not isinstance(config.env, RatingEnvConfig):
        return None
    return load_rating_data(config.env, config.data)


def torch_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(
            f"device={name!r} is not a torch device (use cpu, cuda, cuda:0, mps): {err}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but torch sees no CUDA GPU; use device=cpu")
    return device


def _git_tags() -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"git_commit": commit, "mlflow.source.git.commit": commit}


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
