"""SIGTERM, the signal ``kill``, SLURM's time limits and preemption send.

Outside a training loop it raises ``Terminated`` at once, so that the run is recorded KILLED
with its traceback instead of staying RUNNING forever. Inside one (``graceful_stop``) it only
asks the loop to stop: the loop finishes its vector step, writes a checkpoint and then raises
``Terminated``, so that ``trainer.resume`` can continue the run. A second SIGTERM while a
stop is pending raises at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from macs_exp.tracking.mlflow_tracker import Terminated


@dataclass
class _StopState:
    # Training loops running in this process (an expert trained on a run's behalf nests one).
    loops: int = 0
    requested: bool = False


_state = _StopState()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Handles SIGTERM as the module docstring says while the block runs (main thread only:
    signal handlers can be set nowhere else)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if _state.loops and not _state.requested:
            _state.requested = True
            return
        raise Terminated(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def graceful_stop() -> Iterator[Callable[[], bool]]:
    """Marks a training loop as running; yields a function telling whether a stop was asked.
    The request is cleared when the last running loop ends: the seeds of a seed-parallel group
    run their loops side by side, and each must see the stop and checkpoint before it ends."""
    _state.loops += 1
    try:
        yield lambda: _state.requested
    finally:
        _state.loops -= 1
        if not _state.loops:
            _state.requested = False
