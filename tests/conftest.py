from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Small budgets that still exercise warm-up, updates, logging windows and evaluations.
TINY = [
    "trainer.total_steps=400",
    "trainer.eval_every=200",
    "trainer.eval_episodes=16",
    "trainer.log_every=100",
    "trainer.progress=none",
    "algo.learning_starts=100",
    "algo.batch_size=32",
    "algo.buffer_size=10000",
]


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    return [*TINY, f"tracking.dir={tmp_path / 'outputs'}"]
