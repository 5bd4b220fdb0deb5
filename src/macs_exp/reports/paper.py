"""The paper, measured: docs/results.md and its figures, drawn from the results ledger alone.

``make paper`` runs every preset at the paper's scale into the ledger (``macs_exp.tracking.ledger``)
and then writes the page: for each claim of the paper, the paper's numbers where it gives them,
ours (n, mean ± std, Welch p) and a verdict.
"""

from __future__ import annotations

import csv
import socket
import time
from pathlib import Path

from macs_exp.tracking import ledger

LEDGER = "docs/results/runs.csv"
PIECES = "docs/results/pieces.csv"
PIECE_COLUMNS = ("piece", "commit", "finished_at", "wall_time_s", "status", "host")


def record_piece(path: str | Path, name: str, seconds: float, status: int) -> None:
    """Appends a piece's wall time (one ``make paper-*`` target) to the pieces file."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    new = not file.exists() or file.stat().st_size == 0
    with file.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if new:
            writer.writerow(PIECE_COLUMNS)
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        writer.writerow([name, ledger.git_commit(), finished, f"{seconds:.0f}", status, socket.gethostname()])
