"""The env-step budget of a cost-matched baseline: the mean final ``perf/env_steps`` of the
FINISHED MACS runs of an experiment, printed as one integer and nothing else.

    python scripts/cost_budget.py --experiment fig4 [--modes expert,joint] [--algo ddpg]
        [--env ml100k] [--protocol rated] [--data-dir data/ml-100k] [--tracking-uri URI]
        [--ledger docs/results/runs.csv]

    python -m macs_exp -m +experiment=fig4 mode=baseline trainer.budget=env_steps \\
        trainer.total_steps=$(python scripts/cost_budget.py --experiment fig4)

Exit status: 0 printed, 2 no such run (or no such experiment), with ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from macs_exp.reports.cost import MACS_MODES, mean_env_steps
from macs_exp.reports.runs import add_store_args, client_for, ledger_runs, load_runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_store_args(parser)
    parser.add_argument(
        "--modes",
        default=",".join(MACS_MODES),
        help="comma-separated modes to average (default: %(default)s)",
    )
    parser.add_argument("--algo", default=None, help="only runs of this algo (default: every algo)")
    parser.add_argument("--env", default=None, help="only runs on this env (default: every env)")
    parser.add_argument(
        "--protocol",
        default=None,
        help="only runs of this env.candidates (runs without it count as catalog; default: every one)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="only runs with this env.data_dir (default: every folder)"
    )
    parser.add_argument(
        "--ledger", default=None, help="read the runs from this results ledger instead of the MLflow store"
    )
    args = parser.parse_args(argv)

    modes = [m for m in args.modes.split(",") if m]
    try:
        runs = (
            load_runs(client_for(args), args.experiment)
            if args.ledger is None
            else ledger_runs(args.ledger, args.experiment)
        )
        budget = mean_env_steps(
            runs, modes, args.algo, args.env, protocol=args.protocol, data_dir=args.data_dir
        )
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
