"""Explanations: for a sample of test users, what an agent that explains itself (``Explains``:
PGPR's paths) recommended at each step of one episode, and why, as JSON lines.

The sample is the first ``trainer.explain_users`` users of the test split, in one env of their
own, so that writing explanations never reruns the whole evaluation; each line is one step of
one user: the user's and the item's ids as the ratings file spells them, the env's reward, and
the explanation (null where the agent had none, e.g. an item PGPR filled in from TransE).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from macs_exp.agents import Agent, Explains
from macs_exp.envs.base import BatchedEnv, allowed_items, slot_users

EXPLANATIONS_FILE = "explanations.jsonl"


@torch.no_grad()
def write_explanations(
    agent: Agent, env: BatchedEnv, path: Path, seed: int, ids: tuple[np.ndarray, np.ndarray] | None
) -> Path | None:
    """One episode of every slot of ``env`` under the deterministic policy, each step's
    explanation written to ``path``; ``ids`` maps dense (user, item) indices to the file's.
    None (and no file) for an agent that does not explain itself."""
    if not isinstance(agent, Explains):
        return None
    obs, _ = env.reset(seed=seed)
    active = np.ones(env.num_envs, dtype=bool)
    lines = []
    step = 0
    while active.any():
        users = slot_users(env)
        actions = agent.act(torch.as_tensor(obs), deterministic=True, allowed=allowed_items(env), users=users)
        texts = agent.explanations()
        obs, rewards, terminated, truncated, info = env.step(actions.cpu().numpy())
        for row in np.flatnonzero(active):
            user = int(users[row]) if users is not None else int(row)
            item = int(info["item"][row])
            lines.append(
                {
                    "user": _file_id(ids[0], user) if ids else user,
                    "step": step,
                    "item": _file_id(ids[1], item) if ids else item,
                    "reward": float(rewards[row]),
                    "path": texts[row],
                }
            )
        active &= ~(terminated | truncated)
        step += 1
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _file_id(ids: np.ndarray, index: int) -> int | str:
    value = ids[index]
    return int(value) if np.issubdtype(ids.dtype, np.integer) else str(value)
