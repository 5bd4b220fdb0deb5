"""Progress reporting: a bar on a terminal, periodic plain lines in logs and CI."""

from __future__ import annotations

import logging
import sys
import time

from macs_exp.trainer.config import PROGRESS_MODES

log = logging.getLogger("macs_exp")

_SHOWN = ("eval/ctr", "eval/episode_reward", "perf/steps_per_s")


class Progress:
    def __init__(self, mode: str, total: int, desc: str) -> None:
        if mode not in PROGRESS_MODES:
            raise ValueError(f"trainer.progress={mode!r}: choose auto, bar, log or none")
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.total = total
        self.desc = desc
        self.start = time.perf_counter()
        self.latest: dict[str, float] = {}
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, smoothing=0.1)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def report(self, step: int, metrics: dict[str, float]) -> None:
        """Called once per logging window with the newest figures."""
        self.latest.update(metrics)
        shown = {k: v for k, v in self.latest.items() if k in _SHOWN}
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
        elif self.mode == "log":
            parts = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
            elapsed = time.perf_counter() - self.start
            log.info("%s step %d/%d (%.0f s) %s", self.desc, step, self.total, elapsed, parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
