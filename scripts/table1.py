"""Table I of the paper from the runs of an experiment in MLflow.

    python scripts/table1.py --experiment table1 [--sweep-id ID ...] [--out-dir outputs/tables]

Prints the markdown table, writes ``<out-dir>/<stem>.{md,csv,tex}`` and logs them under
``tables/`` of the sweeps' parent runs. The last line is ``cells: <k> complete, ...``. Holes
(failed, running or missing seeds) are shown in the table and do not change the exit code;
an unknown experiment or an empty selection exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from macs_exp.reports.runs import (
    add_selection_args,
    client_for,
    load_selection,
    log_to_sweeps,
)
from macs_exp.reports.table1 import (
    build_table,
    output_stem,
    summary_line,
    to_markdown,
    write_tables,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_selection_args(parser)
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/tables"), help="where the files go")
    args = parser.parse_args(argv)

    client = client_for(args)
    try:
        frame = load_selection(client, args.experiment, args.sweep_ids)
    except LookupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    table = build_table(frame)
    title = f"Table I: {output_stem(args.experiment, args.sweep_ids)}"
    print(to_markdown(table, title))
    paths = write_tables(table, args.out_dir, output_stem(args.experiment, args.sweep_ids), title)
    print("\nwrote " + ", ".join(str(p) for p in paths))
    if not args.no_log:
        parents = log_to_sweeps(client, args.experiment, frame["sweep_id"].unique(), paths, "tables")
        if parents:
            print(f"logged to tables/ of sweep parent run(s) {', '.join(parents)}")
        else:
            print("not logged: the runs belong to no sweep with a parent run")
    print(summary_line(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
