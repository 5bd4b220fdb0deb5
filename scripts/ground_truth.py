"""The ground-truth study of docs/macs.md ("Where MACS can learn"): does stage 2 move pi_c's
counterfactual change onto the trivial components?

    python scripts/ground_truth.py --env synthetic --seeds 0-4 [--configs paper,eq9,per_step]
        [--stage2-steps 4000] [--ledger docs/results/runs.csv] [OVERRIDE ...]

For each configuration (``paper``: the macs group's defaults, the paper's; ``eq9``: the same
with macs.replay=eq9; ``per_step``: conf/macs/per_step.yaml) and each seed, pi_c is trained
against the env's oracle for --stage2-steps user-steps, and the script prints the trivial-change
fraction on a fixed probe of 256 users before and after, ``macs/reward_std`` and the share of
saturated pi_c action components; then mean ± std over the seeds. Extra Hydra overrides (e.g.
``env.num_envs=32``) apply to every configuration. With ``--ledger``, each seed's outcome is a
row of that results ledger (experiment ``ground_truth``, mode = the configuration's name), and a
seed whose config the ledger already holds is read from it instead of trained again (``make
paper-ground-truth``). Exit status 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence

from omegaconf import OmegaConf

from macs_exp.app import compose_config
from macs_exp.macs.ground_truth import GroundTruth, Summary, measure
from macs_exp.tracking import ledger
from macs_exp.trainer.process import configure_torch

EXPERIMENT = "ground_truth"
# The ledger's metric names: ground_truth/<column>.
PREFIX = "ground_truth/"
# GroundTruth's measured fields, in its order after the seed.
FIELDS = ("before", "after", "reward_std", "saturation")
CONFIGS = {"paper": [], "eq9": ["macs.replay=eq9"], "per_step": ["macs=per_step"]}
COLUMNS = ("before", "after", "gain", "reward_std", "saturation")


def seed_list(text: str) -> list[int]:
    """``0-4`` or ``0,2,5``."""
    if "-" in text:
        low, high = text.split("-", 1)
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def run_config(
    env: str, name: str, seeds: Sequence[int], stage2_steps: int, extra: list[str], book: str | None = None
) -> Summary:
    overrides = [f"env={env}", *CONFIGS[name], f"macs.stage2_steps={stage2_steps}", *extra]
    cfg = compose_config([*overrides, f"tracking.experiment={EXPERIMENT}"])
    env_cfg, macs = OmegaConf.to_object(cfg.env), OmegaConf.to_object(cfg.macs)
    recorded = {e.config_hash: e for e in ledger.read(book)} if book else {}
    print(
        f"\n## env={env} config={name} ({' '.join(CONFIGS[name]) or 'defaults'}) stage2_steps={stage2_steps}"
    )
    print("| seed | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    results: list[GroundTruth] = []
    for seed in seeds:
        one = compose_config([*overrides, f"tracking.experiment={EXPERIMENT}", f"seed={seed}"])
        known = recorded.get(ledger.config_hash(one))
        if known is not None:
            result = GroundTruth(seed, *(known.metrics[f"{PREFIX}{c}"] for c in FIELDS))
        else:
            started = time.monotonic()
            result = measure(env_cfg, macs, seed)  # type: ignore[arg-type]
            if book:
                _record(book, one, name, result, time.monotonic() - started, stage2_steps)
        results.append(result)
        print(f"| {seed} | " + " | ".join(f"{getattr(result, c):.3f}" for c in COLUMNS) + " |", flush=True)
    summary = Summary(results)
    cells = " | ".join("{:.3f} ± {:.3f}".format(*summary.column(c)) for c in COLUMNS)
    print(f"| mean ± std (n={len(results)}) | {cells} |")
    print(f"raised on every seed: {'yes' if summary.raised_on_every_seed() else 'no'}")
    return summary


def _record(book: str, cfg: object, name: str, result: GroundTruth, seconds: float, steps: int) -> None:
    """One ledger row per seed: the study's numbers as metrics at the last stage-2 step."""
    values = {f"{PREFIX}{c}": float(getattr(result, c)) for c in COLUMNS}
    row = ledger.entry(
        cfg,  # type: ignore[arg-type]
        history={k: [(steps, v)] for k, v in values.items()},
        key_metric=f"{PREFIX}after",
        wall_time_s=seconds,
        seeds_in_process=1,
        run_id=None,
    )
    ledger.append(book, dataclasses.replace(row, mode=name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--env", default="synthetic", help="an env option with trivial_mask and oracle_actions"
    )
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-4"))
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}"
    )
    parser.add_argument("--stage2-steps", type=int, default=4000)
    parser.add_argument("--ledger", default=None, help="record each seed in this results ledger")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every configuration")
    args = parser.parse_args(argv)
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or args.stage2_steps < 1:
        print(
            f"error: --configs {unknown} unknown (choose from {', '.join(CONFIGS)})"
            if unknown
            else "error: --stage2-steps must be at least 1",
            file=sys.stderr,
        )
        return 2
    configure_torch(1)
    for name in names:
        run_config(args.env, name, args.seeds, args.stage2_steps, args.overrides, args.ledger)
    return 0


if __name__ == "__main__":
    sys.exit(main())
