"""Process-wide torch settings, made once where a training process starts (the CLI, a sweep's
job child), never inside a run: an expert trained on a run's behalf shares its process."""

from __future__ import annotations

import torch


def configure_torch(threads: int) -> None:
    torch.set_num_threads(threads)
    # Adam's second-moment estimates of rarely-used weights decay into subnormal floats, which
    # the CPU handles tens of times slower: left alone, updates slow down as training goes on.
    torch.set_flush_denormal(True)
