"""``make results-smoke``: the paper pipeline end to end at a tiny budget (slow tier).

One cell of each figure and table runs through the ledger as ``make paper`` runs it (seed packs,
tracking.ledger), the ground-truth study records one seed, and the page is drawn from that
ledger alone. The test checks that every section, figure and verdict line is there, never the
numbers: at this budget they mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY, TINY_MACS, run_script
from macs_exp.app import compose_config
from macs_exp.reports import paper
from macs_exp.tracking import ledger
from macs_exp.trainer.parallel import run_seeds

pytestmark = pytest.mark.slow

# (preset and cell, seeds packed in one process)
CELLS = (
    (["+experiment=fig4", "algo=ddpg", "mode=baseline"], 2),
    (["+experiment=fig4", "algo=ddpg", "mode=expert"], 2),
    (["+experiment=fig5_hidden", "macs.algo.net_arch=[64,64]"], 1),
    (["+experiment=fig6_threshold", "macs.threshold_frac=0.4"], 1),
    (["+experiment=table1", "env=tiny_ratings", "algo=ddpg", "mode=baseline"], 2),
)


def test_the_pipeline_writes_every_section_figure_and_verdict(tmp_path: Path) -> None:
    book = tmp_path / "docs" / "results" / "runs.csv"
    common = [
        *TINY,
        *TINY_MACS,
        "trainer.eval_episodes=8",
        f"tracking.ledger={book}",
        f"tracking.dir={tmp_path / 'outputs'}",
        f"expert.cache_dir={tmp_path / 'experts'}",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    for k, (cell, seeds) in enumerate(CELLS):
        run_seeds(compose_config([*cell, *common, f"trainer.parallel_seeds={seeds}"]), tmp_path / f"job{k}")
    truth = run_script(
        "ground_truth.py", "--seeds", "0", "--configs", "paper", "--stage2-steps", "40", "--ledger", str(book)
    )
    assert truth.returncode == 0, truth.stderr
    experiments = sorted({e.experiment for e in ledger.read(book)})
    assert experiments == ["fig4", "fig5_hidden", "fig6_threshold", "ground_truth", "table1"]

    out = tmp_path / "docs" / "results.md"
    done = run_script(
        "paper.py", "page", "--ledger", str(book), "--out", str(out), "--figures", str(out.parent / "figures")
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    for title, _ in paper.SECTIONS:
        assert f"## {title}" in text, title
    assert "#### Final eval CTR on VirtualTaobao" in text
    assert "#### Table I, ours" in text
    assert "#### Precision beside the paper's: tiny_ratings" in text
    assert "| synthetic | paper |" in text
    figures = {p.name for p in (out.parent / "figures").iterdir()}
    assert figures == {
        "fig4-fig4-virtual_taobao.png",
        "fig4-fig4-virtual_taobao-env_steps.png",
        "fig5_hidden-fig5-virtual_taobao.png",
        "fig6_threshold-fig6-virtual_taobao.png",
    }
    lines = text.splitlines()
    start = lines.index("| claim | verdict | evidence |") + 2
    claims = lines[start : lines.index("", start)]
    assert len(claims) == 10
    assert {line.split(" | ")[1] for line in claims} <= {paper.HOLDS, paper.FAILS, paper.UNTESTABLE}
    assert done.stdout.splitlines()[-1].startswith("verdicts: ")
