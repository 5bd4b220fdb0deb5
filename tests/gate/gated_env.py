"""VirtualTaobao with a gate: a stop at a known point of a run, held for as long as a test likes.

A kill test must signal a job while it trains. Polling MLflow for RUNNING runs and signalling
then is a race: a job can finish (or be closing its run) between two polls. Instead, when the
``stop_at``-th env step of a process comes (all its envs count: training, evaluation, stage 2),
and ``<gate_dir>/hold`` exists, the process touches ``<gate_dir>/stopped-<pid>-<token>`` and
waits in ``step()`` until the test touches ``<gate_dir>/go-<pid>-<token>`` or deletes ``hold``.
A signal the test sends meanwhile always lands mid-run, inside training. The token tells two
stops apart even if the kernel hands a dead job's pid to a new one.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from macs_exp.envs.virtual_taobao import VirtualTaobaoVecEnv

# Long enough for any test to decide, short enough that a test that forgot its gate fails (the
# run raises) instead of hanging.
HOLD_LIMIT_S = 300.0
POLL_S = 0.02

_steps = 0


class GatedVirtualTaobaoVecEnv(VirtualTaobaoVecEnv):
    def __init__(
        self, num_envs: int, device: str | torch.device = "cpu", *, gate_dir: str, stop_at: int
    ) -> None:
        super().__init__(num_envs, device)
        self.gate_dir = Path(gate_dir)
        self.stop_at = stop_at

    def step(
        self, actions: np.ndarray | torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        global _steps
        _steps += 1
        if _steps == self.stop_at and (self.gate_dir / "hold").exists():
            self._wait_at_gate()
        return super().step(actions)

    def _wait_at_gate(self) -> None:
        name = f"{os.getpid()}-{uuid.uuid4().hex}"
        go = self.gate_dir / f"go-{name}"
        (self.gate_dir / f"stopped-{name}").touch()
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not go.exists() and (self.gate_dir / "hold").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"held at the gate {self.gate_dir} for {HOLD_LIMIT_S:.0f} s")
            time.sleep(POLL_S)
