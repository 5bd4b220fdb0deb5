"""The paper, measured: the results page from the ledger, and the record of each piece's wall time.

    python scripts/paper.py page [--ledger docs/results/runs.csv] [--pieces docs/results/pieces.csv]
        [--out docs/results.md] [--figures docs/figures]
    python scripts/paper.py piece --name fig5 --seconds 812 --status 0 [--pieces ...]
        [--ledger ... --started <epoch seconds>]

``page`` writes the page and its figures from the ledger alone (no MLflow store) and prints one
line per section it wrote, then ``verdicts: <k> holds, <k> does not hold, <k> not testable``.
``piece`` appends one row to the pieces file (what ``make paper-*`` calls after each piece);
given ``--started``, a piece that succeeded with no run finishing into the ledger since then (every
run was already there) records nothing, so a rerun of the study keeps the pieces' real times.
Exit status 2 on a missing or malformed ledger.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from macs_exp.reports import paper
from macs_exp.schema import UserError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    page = commands.add_parser("page", help="write the results page and its figures from the ledger")
    page.add_argument("--ledger", type=Path, default=Path(paper.LEDGER))
    page.add_argument("--pieces", type=Path, default=Path(paper.PIECES))
    page.add_argument("--out", type=Path, default=Path("docs/results.md"))
    page.add_argument("--figures", type=Path, default=Path("docs/figures"))
    piece = commands.add_parser("piece", help="record a piece's wall time")
    piece.add_argument("--pieces", type=Path, default=Path(paper.PIECES))
    piece.add_argument("--name", required=True)
    piece.add_argument("--seconds", type=float, required=True)
    piece.add_argument("--status", type=int, required=True)
    piece.add_argument("--ledger", type=Path, default=Path(paper.LEDGER))
    piece.add_argument("--started", type=float, help="when the piece started, in seconds since the epoch")
    args = parser.parse_args(argv)
    try:
        if args.command == "piece":
            return _piece(args)
        written = paper.write_page(args.ledger, args.pieces, args.out, args.figures)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in written.lines:
        print(line)
    print(written.summary())
    return 0


def _piece(args: argparse.Namespace) -> int:
    if args.status == 0 and args.started is not None and not paper.ran_since(args.ledger, args.started):
        print(f"piece {args.name}: every run was already in {args.ledger}; no time recorded")
        return 0
    paper.record_piece(args.pieces, args.name, args.seconds, args.status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
