"""The schema of the ``trainer`` group: budget, evaluation and logging cadence."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from macs_exp.schema import Rules, Schema
from macs_exp.trainer.budget import BUDGETS

PROGRESS_MODES = ("auto", "bar", "log", "none")


@dataclass
class TrainerConfig(Schema):
    # The run's budget: user-steps (transitions collected from the real environment), or, with
    # budget=env_steps, env steps of every kind (real, MACS queries, stage 2).
    total_steps: int = MISSING
    budget: str = MISSING
    eval_every: int = MISSING
    # Whether the untrained policy is evaluated too (step 0, where curves start). Off, a run with
    # eval_every >= total_steps evaluates once, after training: where one evaluation of every test
    # user is costly (PGPR on ML-1M), that is the final number at a fraction of the cost.
    eval_at_start: bool = MISSING
    eval_episodes: int = MISSING
    # The evaluation users are drawn from their own stream, the same for every
    # evaluation and every training seed, so that curves are comparable.
    eval_seed: int = MISSING
    # Training metrics are averaged over windows of this many user-steps.
    log_every: int = MISSING
    # auto: a progress bar on a terminal, plain log lines otherwise.
    progress: str = MISSING
    # Threads for torch on the CPU; small networks are fastest with few.
    torch_threads: int = MISSING
    # The full training state is written to <run dir>/checkpoint.pt every this many user-steps
    # (0: only when the run is sent SIGTERM), and removed when the run finishes.
    checkpoint_every: int = MISSING
    # Continue a stopped run from its checkpoint: its folder, its MLflow run id, or "auto" (this
    # run's own folder if it holds a checkpoint, else a fresh start: a requeued job). null: start afresh.
    resume: str | None = MISSING
    # After training, an agent that explains its recommendations (algo=pgpr) writes why it chose
    # each item for this many test users to explanations.jsonl (0: none).
    explain_users: int = MISSING
    # Seeds trained at once in this process, counting up from ``seed`` (unless ``seeds`` lists
    # them): one batched update for all, one MLflow run each.
    parallel_seeds: int = MISSING

    def rules(self) -> Rules:
        rules: Rules = {
            key: (getattr(self, key) >= 1, "at least 1")
            for key in (
                "total_steps",
                "eval_every",
                "eval_episodes",
                "log_every",
                "torch_threads",
                "parallel_seeds",
            )
        }
        rules["checkpoint_every"] = (self.checkpoint_every >= 0, "0 (only on SIGTERM) or more")
        rules["explain_users"] = (self.explain_users >= 0, "0 (none) or more")
        rules["budget"] = (self.budget in BUDGETS, f"one of {', '.join(BUDGETS)}")
        rules["progress"] = (self.progress in PROGRESS_MODES, f"one of {', '.join(PROGRESS_MODES)}")
        return rules
