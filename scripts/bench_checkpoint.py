"""What checkpoints cost: the size of ``checkpoint.pt`` and the time to write it, at every
checkpoint of one run, and the time to load the last one.

    python scripts/bench_checkpoint.py [OVERRIDES...]

The overrides are the main app's; the default is a paper-scale VirtualTaobao run of DDPG-J
(``algo=ddpg mode=joint env=virtual_taobao``, 30,000 user-steps, a checkpoint every 5,000),
tracked into a temporary store. Prints one line per checkpoint and a summary.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from macs_exp.app import compose_config
from macs_exp.trainer import trainer
from macs_exp.trainer.checkpoint import load_checkpoint
from macs_exp.trainer.process import configure_torch
from macs_exp.trainer.run import run_experiment

DEFAULTS = ["algo=ddpg", "mode=joint", "env=virtual_taobao", "trainer.progress=none", "trainer.resume=null"]


def main(overrides: list[str]) -> None:
    writes: list[tuple[int, float, int]] = []
    original = trainer.Trainer._save

    def timed(self: trainer.Trainer, loop: trainer._Loop, window: trainer._Window, result: object) -> None:
        t0 = time.perf_counter()
        original(self, loop, window, result)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        assert self.checkpointing is not None
        # Kept aside (untimed): a finished run deletes its checkpoint.
        kept = self.checkpointing.path.with_name(f"bench-{loop.steps}.pt")
        kept.write_bytes(self.checkpointing.path.read_bytes())
        writes.append((loop.steps, seconds, kept.stat().st_size))

    trainer.Trainer._save = timed  # type: ignore[method-assign]
    configure_torch(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config([*DEFAULTS, f"tracking.dir={tmp}/outputs", *overrides])
        t0 = time.perf_counter()
        run_experiment(cfg, Path(tmp) / "run")
        total = time.perf_counter() - t0
        for steps, seconds, size in writes:
            print(f"checkpoint at {steps:>7} user-steps: {size / 2**20:7.1f} MiB written in {seconds:.2f} s")
        spent = sum(s for _, s, _ in writes)
        print(f"run: {total:.0f} s, of which checkpoints {spent:.1f} s ({100 * spent / total:.1f}%)")
        if writes:
            t0 = time.perf_counter()
            load_checkpoint(Path(tmp) / "run" / f"bench-{writes[-1][0]}.pt")
            print(f"loading the last: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
