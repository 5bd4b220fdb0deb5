"""docs/results.md from a ledger alone: its sections, figures and verdicts (macs_exp.reports.paper)."""

from __future__ import annotations

import calendar
import csv
import os
import runpy
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from macs_exp.reports import paper
from macs_exp.tracking import ledger

SEEDS = range(5)


def _row(experiment: str, algo: str, mode: str, seed: int, final: float, **params: str) -> ledger.Entry:
    """A finished run whose eval CTR climbs to ``final``; ``swing`` in params makes it zigzag."""
    swing = float(params.pop("swing", "0"))
    steps = range(0, 30001, 2500)
    curve = [(s, final * s / 30000 + (swing if i % 2 else 0.0)) for i, s in enumerate(steps)]
    key = f"{experiment}-{algo}-{mode}-{seed}-{sorted(params.items())}"
    return ledger.Entry(
        config_hash=key,
        experiment=experiment,
        algo=algo,
        mode=mode,
        env="virtual_taobao",
        seed=seed,
        commit="c0ffee",
        finished_at="2026-12-06T00:00:00Z",
        wall_time_s=60.0,
        seeds_in_process=5,
        run_id="",
        params={"trainer.budget": "user_steps", **params},
        metrics={"eval/ctr": final, "perf/env_steps": 30000.0},
        curves={"eval/ctr": curve, "perf/env_steps": [(s, float(s)) for s in steps]},
    )


def _noise(seed: int) -> float:
    return float(np.random.default_rng(seed).normal(0, 0.01))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, paper.Page]:
    root = tmp_path_factory.mktemp("paper")
    book = root / "runs.csv"
    finals = {"baseline": 0.5, "expert": 0.8, "joint": 0.5, "random_mask": 0.6}
    for seed in SEEDS:
        for algo in ("ddpg", "sac", "td3"):
            for mode, value in finals.items():
                ledger.append(book, _row("fig4", algo, mode, seed, value + _noise(seed)))
            cost = _row(
                "fig4", algo, "baseline", seed, 0.5 + _noise(seed + 9), **{"trainer.budget": "env_steps"}
            )
            ledger.append(book, cost)
        for width, value in ((64, 0.6), (128, 0.8), (256, 0.5)):
            net = {"macs.algo.net_arch": f"[{width}, {width}]"}
            ledger.append(book, _row("fig5_hidden", "ddpg", "expert", seed, value + _noise(seed), **net))
        for frac, value, swing in ((0.2, 0.5, 0.3), (0.4, 0.6, 0.0), (0.6, 0.8, 0.0), (0.8, 0.6, 0.0)):
            knobs = {"macs.threshold_frac": str(frac), "swing": str(swing)}
            ledger.append(book, _row("fig6_threshold", "ddpg", "joint", seed, value + _noise(seed), **knobs))
        truth = ledger.Entry(
            **{
                **_row("ground_truth", "ddpg", "paper", seed, 0.0).__dict__,
                "env": "synthetic",
                "metrics": {
                    "ground_truth/before": 0.3 + _noise(seed),
                    "ground_truth/after": 0.6 + _noise(seed + 1),
                    "ground_truth/gain": 0.3,
                    "ground_truth/reward_std": 1.0,
                    "ground_truth/saturation": 0.0,
                },
            }
        )
        ledger.append(book, truth)
    paper.record_piece(root / "pieces.csv", "fig5", 754, 0)
    out = root / "docs" / "results.md"
    written = paper.write_page(book, root / "pieces.csv", out, root / "docs" / "figures")
    return out, written


def _verdict(text: str, claim: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {claim} |")]
    return line.split(" | ")[1]


def test_every_claim_has_its_verdict(page: tuple[Path, paper.Page]) -> None:
    out, written = page
    text = out.read_text()
    expected = {
        "Fig. 4: -E and -J beat the baselines online": paper.FAILS,  # -J ties its baseline
        "Fig. 4 at equal simulator cost: -E and -J beat the (=cost) baselines": paper.FAILS,
        "Fig. 4: the random mask beats the baselines": paper.HOLDS,
        "Fig. 4: the random mask loses to MACS (-E and -J)": paper.FAILS,  # -J is below it
        "Table I: -E/-J beat every baseline on every dataset": paper.UNTESTABLE,
        "Table I: MACS beats CTRL": paper.UNTESTABLE,
        "Fig. 5: hidden size 128 is best": paper.HOLDS,
        "Fig. 6: ε1 = 4 is best": paper.FAILS,  # 6 is, in this ledger
        "Fig. 6: ε1 = 2 is unstable": paper.HOLDS,
        "Mechanism: pi_c moves its change onto the trivial components (paper's configuration)": paper.HOLDS,
    }
    for claim, verdict in expected.items():
        assert _verdict(text, claim) == verdict, claim
    assert written.summary() == "verdicts: 4 holds, 4 does not hold, 2 not testable"
    assert "not run yet" in text
    # -J ties its baseline in this ledger: measured, not significant, and not leaning either way for sure.
    assert "do not show it at p < 0.05;" in text


def test_the_page_shows_tables_figures_and_the_study_so_far(page: tuple[Path, paper.Page]) -> None:
    out, written = page
    text = out.read_text()
    for title, _ in paper.SECTIONS:
        assert f"## {title}" in text
    assert "| fig4 | 75 | 105 |" in text
    assert "| fig5 | 12.6 min | ok |" in text
    assert "| fig5_hidden | 15 | 15 | 13 min |" in text
    assert "runs per commit: `c0ffee` (" in text and "-dirty" not in text
    # Fig. 4's table with its changes and p-values, Fig. 5's finals, the ground truth's columns.
    assert "| DDPG-E | **0.8" in text
    assert "| [64, 64] | 0.60" in text.split("| [128, 128] | 0.80")[0]
    assert "| synthetic | paper | 0.3" in text
    # Beside Table I: what data each dataset's rows read, and how often its runs evaluate.
    assert "- ML-1M: the original ratings.dat is not here." in text
    assert "cost-matched baseline evaluate once, after training" in text
    figures = sorted(p.name for p in (out.parent / "figures").iterdir())
    assert figures == [
        "fig4-fig4-virtual_taobao-env_steps.png",
        "fig4-fig4-virtual_taobao.png",
        "fig5_hidden-fig5-virtual_taobao.png",
        "fig6_threshold-fig6-virtual_taobao.png",
    ]
    for name in figures:
        assert f"](figures/{name})" in text
        assert (out.parent / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written.lines[-1].startswith(f"wrote {out}")


def test_the_paper_numbers_sit_beside_ours(tmp_path: Path) -> None:
    book = tmp_path / "runs.csv"
    for seed in range(3):
        for mode, value in (("baseline", 0.40), ("expert", 0.45)):
            row = _row(
                "table1", "ddpg", mode, seed, 0.0, **{"env.candidates": "rated", "env.data_dir": "ml-100k"}
            )
            ledger.append(
                book,
                ledger.Entry(
                    **{**row.__dict__, "env": "ml100k", "metrics": {"test/precision": value + _noise(seed)}}
                ),
            )
    out = tmp_path / "results.md"
    written = paper.write_page(book, tmp_path / "none.csv", out, tmp_path / "figures")
    text = out.read_text()
    assert "#### Precision beside the paper's: ml100k" in text
    assert "| DDPG | 0.4182 ± 0.0053 | 0.40" in text
    assert "| DDPG-E | 0.5105 ± 0.0048 | 0.45" in text
    # Recall and accuracy beside the paper's too, ours unmeasured in this ledger.
    assert "#### Recall beside the paper's: ml100k" in text
    assert "| DDPG | 0.4611 ± 0.0091 | – |" in text
    assert "- DDPG-E on ml100k (rated) > DDPG: **holds**" in text
    assert _verdict(text, "Table I: MACS beats CTRL") == paper.UNTESTABLE
    assert "no -E/-J runs beside -CTRL runs" in text
    assert "No piece has been recorded yet." in text
    assert written.summary().startswith("verdicts: ")


def test_a_preset_adds_up_its_pieces_and_overlapping_pieces_count_once(tmp_path: Path) -> None:
    book = tmp_path / "runs.csv"
    for seed in range(3):
        row = _row("table1", "ddpg", "baseline", seed, 0.0, **{"env.candidates": "rated"})
        commit = "0123456789abcdef" * 2 + "01234567" + ("-dirty" if seed == 2 else "")
        ledger.append(book, ledger.Entry(**{**row.__dict__, "env": "ml100k", "commit": commit}))
    pieces = tmp_path / "pieces.csv"
    with pieces.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(paper.PIECE_COLUMNS)
        # The second piece runs inside the first; the third alone, later.
        writer.writerow(["table1-ml100k-rated-ac", "c0ffee", "2026-12-06T10:00:00Z", "3600", "0", "h"])
        writer.writerow(["table1-ml100k-rated-ref-pgpr", "c0ffee", "2026-12-06T09:30:00Z", "1800", "0", "h"])
        writer.writerow(["fig4-td3", "c0ffee", "2026-12-06T12:00:00Z", "600", "0", "h"])
    out = tmp_path / "results.md"
    paper.write_page(book, pieces, out, tmp_path / "figures")
    text = out.read_text()
    expected = (
        "| table1 ml100k (rated) | 3 | 135 | 1.5 h |",
        "| fig4 | 0 | 105 | 10 min |",
        "| fig5_hidden | 0 | 15 | – |",
        "| all | 3 | 305 | 1.7 h |",
        "kept the machine busy for 1.2 h of wall clock",
        "runs per commit: `0123456789ab` (2), `0123456789ab-dirty` (1)). A `-dirty` commit is one that",
    )
    assert [line for line in expected if line not in text] == []
    assert paper.piece_preset("ground-truth") == "ground_truth"
    assert paper.piece_preset("table1-douban_book-catalog-pgpr2") == "table1 douban_book (catalog)"


def test_the_paper_yaml_holds_table_one() -> None:
    numbers = paper.paper_numbers()
    datasets = numbers["table1"]["datasets"]
    assert sorted(datasets) == ["bookcrossing", "douban_book", "ml100k", "ml1m"]
    assert all(len(rows) == 20 for rows in datasets.values())
    assert datasets["ml100k"]["DDPG"]["precision"] == [0.4182, 0.0053]
    assert numbers["claims"]["fig5"]["best_hidden"] == 128


def test_make_paper_runs_every_piece_into_the_ledger(tmp_path: Path) -> None:
    """``make -n paper-runs``: every piece, each sweep with 5 packed seeds and the ledger, the
    Table I pieces of a dataset that is there and a skip line for one that is not."""
    (tmp_path / "ml-100k").mkdir()
    text = _make_n("paper-runs", tmp_path)
    lines = text.splitlines()
    pieces = [line for line in lines if "scripts/paper.py piece" in line]
    # Fig. 4 per algo, Figs. 5 and 6, the ground truth, then 3 datasets x 2 protocols x 7 parts.
    assert len(pieces) == 3 + 3 + 3 * 2 * 7
    # 5 seeds per job, but PGPR's cost-matched baseline (no batched update) in jobs of 3 and 2.
    packs = [
        (part, 3 if "-ref-pgpr --seconds" in line else 5)
        for line in pieces
        for part in line.split(";")
        if "-m macs_exp -m" in part
    ]
    assert sum(k == 3 for _, k in packs) == 2  # ML-100k's two protocols
    assert all("--ledger docs/results/runs.csv --started $start --name" in line for line in pieces)
    assert all(f"trainer.parallel_seeds={k} tracking.ledger=docs/results/runs.csv" in s for s, k in packs)
    for expected in (
        "+experiment=fig4 algo=sac mode=joint macs.replay=eq9",
        "cost_budget.py --ledger docs/results/runs.csv --experiment fig4 --algo td3",
        "+experiment=fig5_hidden",
        "+experiment=fig6_threshold",
        "ground_truth.py --env session --ledger docs/results/runs.csv",
        f"env=ml100k env.data_dir={tmp_path}/ml-100k env.candidates=rated algo=pgpr mode=joint,ctrl",
        "--experiment table1 --algo $algo --env ml100k --protocol catalog --data-dir ml-100k",
        f"skipping: {tmp_path}/ml-1m not found",
    ):
        assert expected in text, expected


def test_a_piece_records_its_time_only_when_a_run_finished_in_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second ``make paper`` skips every run; its pieces' seconds of skipping must not be
    recorded as their wall time. A failed piece is recorded whatever it ran."""
    book, pieces = tmp_path / "runs.csv", tmp_path / "pieces.csv"
    ledger.append(book, _row("fig5_hidden", "ddpg", "expert", 0, 0.5))  # finished 2026-12-06T00:00:00Z
    finished = calendar.timegm((2026, 12, 6, 0, 0, 0, 0, 0, 0))
    main = runpy.run_path(str(REPO / "scripts" / "paper.py"), run_name="paper_script")["main"]

    def piece(name: str, status: int, started: int) -> int:
        common = ["--pieces", str(pieces), "--ledger", str(book), "--seconds", "9", "--name", name]
        return int(main(["piece", *common, "--status", str(status), "--started", str(started)]))

    assert piece("fig5", 0, finished + 1) == 0
    assert f"piece fig5: every run was already in {book}; no time recorded" in capsys.readouterr().out
    assert not pieces.exists()
    assert piece("fig6", 1, finished + 1) == 0
    assert piece("fig5", 0, finished) == 0  # the run finished in the piece's first second
    with pieces.open(newline="") as handle:
        rows = [(r["piece"], r["wall_time_s"], r["status"]) for r in csv.DictReader(handle)]
    assert rows == [("fig6", "9", "1"), ("fig5", "9", "0")]


@pytest.mark.parametrize("original", [False, True])
def test_table1_reads_the_table_where_the_original_ratings_are_missing(
    tmp_path: Path, original: bool
) -> None:
    """As in ../shared/data: without user_book.dat, Douban-Book's rows read the MetaHIN table (and
    PGPR its graph by the douban_book schema); with it, the original format."""
    (tmp_path / "douban-book").mkdir()
    if original:
        (tmp_path / "douban-book" / "user_book.dat").write_text("")
    text = _make_n("paper-table1-douban_book-rated-ref", tmp_path)
    sweeps = [part for part in text.split(";") if "-m macs_exp -m" in part]
    assert len(sweeps) == 2
    table = "env.candidates=rated env.format=table kg.schema=douban_book "
    assert all((table in s) != original for s in sweeps), text


def test_the_large_datasets_and_the_cost_matched_rows_evaluate_once(tmp_path: Path) -> None:
    """On ML-1M every row evaluates once, after training, its expert still every 2,500 user-steps;
    on ML-100k only the cost-matched baselines do (the rows Table I reads by their final number)."""
    for folder in ("ml-1m", "ml-100k"):
        (tmp_path / folder).mkdir()
    once = "'trainer.eval_every=${trainer.total_steps}' trainer.eval_at_start=false"
    for target in ("paper-table1-ml1m-catalog-pgpr1", "paper-table1-ml1m-rated-ref"):
        sweeps = [p for p in _make_n(target, tmp_path).split(";") if "-m macs_exp -m" in p]
        assert sweeps and all(f"{once} expert.eval_every=2500" in s for s in sweeps), target
    assert once not in _make_n("paper-table1-ml100k-rated-ac", tmp_path)
    text = _make_n("paper-table1-ml100k-rated-ref", tmp_path)
    ref = [p for p in text.split(";") if "-m macs_exp -m" in p]
    assert [once in s for s in ref] == [False, True]
    assert "algo=$algo" in ref[1] and "for algo in ddpg sac td3 tpgr;" in text


def _make_n(target: str, data_root: Path) -> str:
    """What ``make -n <target>`` would run, with the datasets under ``data_root``."""
    # Not the flags of a make this test may run under (make test).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(
        ["make", "-n", target, f"DATA_ROOT={data_root}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_empty_ledger_gives_a_page_of_untested_claims(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    written = paper.write_page(tmp_path / "none.csv", tmp_path / "none.csv", out, tmp_path / "figures")
    assert written.summary() == "verdicts: 0 holds, 0 does not hold, 10 not testable"
    assert out.read_text().count("Not run yet: `make paper-") == 5
