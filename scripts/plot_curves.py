"""Learning curves over seeds, as the paper's Fig. 4 (modes), Fig. 5 (hidden size of pi_c) and
Fig. 6 (threshold epsilon_1), from the runs of an MLflow experiment.

    python scripts/plot_curves.py --experiment fig4 [--sweep-id ID ...] [--figure fig4|fig5|fig6]
        [--metric eval/ctr] [--x user_steps|env_steps] [--tracking-uri URI] [--out-dir outputs/figures]
        [--no-log]

--x env_steps puts each evaluation at the env steps its run had taken by then (perf/env_steps:
real steps, MACS's counterfactual queries and stage 2), so MACS is charged for its simulator
calls; runs that never logged perf/env_steps are skipped with a note.

Writes ``<out-dir>/<experiment>-<figure>-<env>.png`` per env (``...-env_steps.png`` with ``--x env_steps``)
and prints each path; unless
--no-log, logs them under ``figures/`` of the parent runs of the sweeps the plotted runs belong to.
Exit status: 0 done, 2 nothing to plot (unknown experiment, metric or param missing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from macs_exp.reports.curves import FIGURES, X_AXES, CurvesError, store_histories, write_figures
from macs_exp.reports.runs import (
    add_selection_args,
    client_for,
    load_selection,
    log_to_sweeps,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_selection_args(parser)
    parser.add_argument("--figure", choices=FIGURES, default="fig4")
    parser.add_argument(
        "--metric",
        default=None,
        help="metric key; default: eval/ctr, else test/precision, else eval/episode_reward",
    )
    parser.add_argument(
        "--x", choices=X_AXES, default="user_steps", help="x axis of the curves (default: %(default)s)"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/figures"))
    args = parser.parse_args(argv)

    client = client_for(args)
    # Only the selection's LookupError means "nothing to read"; a KeyError from a bug must not.
    try:
        runs = load_selection(client, args.experiment, args.sweep_ids)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        written = write_figures(
            store_histories(client),
            runs,
            experiment=args.experiment,
            figure=args.figure,
            out_dir=args.out_dir,
            metric=args.metric,
            x=args.x,
        )
    except CurvesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for figure in written:
        print(f"wrote {figure.path} ({figure.metric}, {figure.runs} runs)")
    if not args.no_log:
        for figure in written:
            parents = log_to_sweeps(client, args.experiment, figure.sweep_ids, [figure.path], "figures")
            if parents:
                print(f"logged {figure.path.name} to sweep parent runs {', '.join(parents)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
