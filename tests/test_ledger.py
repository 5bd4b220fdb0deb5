"""The results ledger (tracking.ledger): what its config hash covers, its rows, and the runs it skips."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, TINY, run_script
from macs_exp.app import compose_config
from macs_exp.reports.runs import ledger_runs
from macs_exp.schema import ConfigError
from macs_exp.tracking import ledger
from macs_exp.trainer.parallel import run_seeds

QUICK = [*TINY, "trainer.total_steps=300", "mode=baseline", "tracking.enabled=false"]


def _hash(*overrides: str) -> str:
    return ledger.config_hash(compose_config(list(overrides)))


def test_the_hash_ignores_where_and_how_a_run_is_recorded_and_shown() -> None:
    base = _hash("algo=sac")
    for same in (
        "tracking.experiment=other",
        "tracking.dir=/elsewhere",
        "tracking.ledger=x.csv",
        "trainer.progress=none",
        "trainer.parallel_seeds=3",
        "trainer.torch_threads=2",
        "trainer.checkpoint_every=7",
        "data.cache_dir=/tmp/c",
        "expert.cache_dir=/tmp/e",
    ):
        assert _hash("algo=sac", same) == base, same


def test_the_hash_changes_with_what_a_run_measures() -> None:
    base = _hash("algo=sac")
    for other in ("seed=1", "algo=td3", "algo.learning_rate=0.01", "trainer.total_steps=100", "mode=expert"):
        assert _hash("algo=sac", other) != base, other


@pytest.mark.parametrize(
    "overrides",
    [
        ["+experiment=fig4", "algo=ddpg", "mode=baseline", "seed=0"],
        ["+experiment=table1", "env.data_dir=data/ml-100k", "env.candidates=rated", "algo=sac", "mode=joint"],
        ["+experiment=table1", "env.data_dir=data/ml-100k", "algo=tpgr", "mode=expert", "seed=3"],
    ],
)
def test_the_committed_ledger_still_finds_its_runs(overrides: list[str]) -> None:
    """Runs docs/results/runs.csv holds are found again by their config: an option added later
    (``ledger.LATER_KEYS``) or a default changed without meaning to would orphan the study."""
    with (REPO / "docs/results/runs.csv").open() as f:
        recorded = {row["config_hash"] for row in csv.DictReader(f)}
    assert _hash(*overrides) in recorded


def test_an_option_added_later_counts_only_when_set_otherwise() -> None:
    base = _hash("mode=expert")
    assert _hash("mode=expert", "trainer.eval_at_start=true", "expert.eval_every=null") == base
    changed = {
        _hash("mode=expert", "trainer.eval_at_start=false"),
        _hash("mode=expert", "expert.eval_every=2500"),
    }
    assert len(changed) == 2 and base not in changed


def test_the_hash_names_a_dataset_by_its_folder_not_its_path() -> None:
    here = _hash("+experiment=table1", "env.data_dir=data/ml-100k")
    assert _hash("+experiment=table1", "env.data_dir=../shared/data/ml-100k") == here
    assert _hash("+experiment=table1", "env.data_dir=data/ml-1m") != here


def _entry(seed: int = 0, **changes: object) -> ledger.Entry:
    fields: dict[str, object] = {
        "config_hash": f"h{seed}",
        "experiment": "fig4",
        "algo": "ddpg",
        "mode": "expert",
        "env": "virtual_taobao",
        "seed": seed,
        "commit": "abc",
        "finished_at": "2026-12-06T00:00:00Z",
        "wall_time_s": 12.5,
        "seeds_in_process": 5,
        "run_id": "",
        "params": {"trainer.budget": "user_steps"},
        "metrics": {"eval/ctr": 0.123456789, "perf/env_steps": 91500.0},
        "curves": {"eval/ctr": [(0, 0.1), (2500, 0.2)]},
    }
    fields.update(changes)
    return ledger.Entry(**fields)  # type: ignore[arg-type]


def test_rows_round_trip_and_append_under_one_header(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    ledger.append(path, _entry(0))
    ledger.append(path, _entry(1))
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(ledger.COLUMNS)
    assert len(lines) == 3
    back = ledger.read(path)
    assert [e.seed for e in back] == [0, 1]
    # Seven significant digits are kept, the rest is noise a diff would show.
    assert back[0].metrics == {"eval/ctr": 0.1234568, "perf/env_steps": 91500.0}
    assert back[0].curves == {"eval/ctr": [(0, 0.1), (2500, 0.2)]}
    assert set(ledger.recorded(path)) == {"h0", "h1"}
    frame = ledger_runs(path, "fig4")
    assert list(frame["run_id"]) == ["h0", "h1"]
    assert frame.loc[0, "metric:eval/ctr"] == pytest.approx(0.1234568)
    assert ledger_runs(path, "fig5_hidden").empty


def test_a_malformed_row_is_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    ledger.append(path, _entry(0))
    with path.open("a") as handle:
        handle.write("h9,fig4,ddpg,expert,virtual_taobao,notaseed,abc,t,1,1,,{},{},{}\n")
    with pytest.raises(ConfigError, match=r"runs.csv, line 3: not a ledger row"):
        ledger.read(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="its header is not the ledger's"):
        ledger.read(path)


def test_a_finished_run_adds_its_row_and_is_then_skipped(tmp_path: Path) -> None:
    book = tmp_path / "runs.csv"
    cfg = compose_config([*QUICK, f"tracking.ledger={book}"])
    first = run_seeds(cfg, tmp_path / "a")
    assert len(first) == 1
    (row,) = ledger.read(book)
    assert row.config_hash == ledger.config_hash(cfg)
    assert (row.algo, row.mode, row.env, row.seed, row.seeds_in_process) == (
        "ddpg",
        "baseline",
        "virtual_taobao",
        0,
        1,
    )
    assert row.metrics["eval/ctr"] == pytest.approx(first[0].final_eval["eval/ctr"], rel=1e-6)
    assert row.metrics["perf/env_steps"] == 300
    assert not any(k.startswith("train/") for k in row.metrics)
    # The key metric's curve, with the env steps at each of its points.
    assert [s for s, _ in row.curves["eval/ctr"]] == [0, 200, 300]
    assert row.curves["perf/env_steps"] == [(0, 0.0), (200, 200.0), (300, 300.0)]
    assert row.wall_time_s > 0

    assert run_seeds(cfg, tmp_path / "b") == []
    assert not (tmp_path / "b").exists()
    assert len(ledger.read(book)) == 1


def test_a_run_another_experiment_recorded_counts_for_both(tmp_path: Path) -> None:
    """Two presets asking for one config (Fig. 5's hidden 128 is Fig. 4's DDPG-E) share its run:
    the second gets a copy of the row, marked same_as the first, and nothing is trained."""
    book = tmp_path / "runs.csv"
    run_seeds(
        compose_config([*QUICK, f"tracking.ledger={book}", "tracking.experiment=fig5_hidden"]), tmp_path / "a"
    )
    again = compose_config([*QUICK, f"tracking.ledger={book}", "tracking.experiment=fig4"])
    assert run_seeds(again, tmp_path / "b") == []
    assert run_seeds(again, tmp_path / "c") == []
    first, second = ledger.read(book)
    assert (first.experiment, first.same_as) == ("fig5_hidden", "")
    assert (second.experiment, second.same_as) == ("fig4", "fig5_hidden")
    assert second.metrics == first.metrics and second.run_id == first.run_id
    assert list(ledger_runs(book, "fig4")["same_as"]) == ["fig5_hidden"]


def test_a_group_runs_only_the_seeds_the_ledger_lacks(tmp_path: Path) -> None:
    book = tmp_path / "runs.csv"
    run_seeds(compose_config([*QUICK, f"tracking.ledger={book}", "seed=1"]), tmp_path / "one")
    group = compose_config([*QUICK, f"tracking.ledger={book}", "seeds=[0,1,2]"])
    results = run_seeds(group, tmp_path / "group")
    assert len(results) == 2
    rows = ledger.read(book)
    assert [(r.seed, r.seeds_in_process) for r in rows] == [(1, 1), (0, 2), (2, 2)]
    # What the ledger left of a group of two seeds: one single run, in the job's folder.
    results = run_seeds(compose_config([*QUICK, f"tracking.ledger={book}", "seeds=[2,3]"]), tmp_path / "last")
    assert len(results) == 1
    assert (tmp_path / "last" / "agent.pt").exists()
    assert sorted(r.seed for r in ledger.read(book)) == [0, 1, 2, 3]


def test_cost_budget_reads_the_ledger(tmp_path: Path) -> None:
    book = tmp_path / "runs.csv"
    for seed, steps in ((0, 90000.0), (1, 93001.0)):
        ledger.append(book, _entry(seed, metrics={"eval/ctr": 0.5, "perf/env_steps": steps}))
    ledger.append(book, _entry(2, mode="baseline", metrics={"perf/env_steps": 30000.0}))
    done = run_script("cost_budget.py", "--experiment", "fig4", "--ledger", str(book))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "91501"
    done = run_script("cost_budget.py", "--experiment", "fig4", "--ledger", str(book), "--algo", "sac")
    assert done.returncode == 2
    assert "no FINISHED sac runs" in done.stderr


@pytest.mark.slow
def test_the_ground_truth_study_records_and_then_reads_its_seeds(tmp_path: Path) -> None:
    book = tmp_path / "runs.csv"
    args = (
        "--env",
        "synthetic",
        "--seeds",
        "0",
        "--configs",
        "paper",
        "--stage2-steps",
        "60",
        "--ledger",
        str(book),
    )
    first = run_script("ground_truth.py", *args)
    assert first.returncode == 0, first.stderr
    (row,) = ledger.read(book)
    assert (row.experiment, row.mode, row.env, row.seed) == ("ground_truth", "paper", "synthetic", 0)
    assert set(row.metrics) == {
        f"ground_truth/{c}" for c in ("before", "after", "gain", "reward_std", "saturation")
    }
    again = run_script("ground_truth.py", *args)
    assert again.returncode == 0, again.stderr
    assert len(ledger.read(book)) == 1
    # The seed's line is printed from the ledger, as it was measured.
    table = [line for line in first.stdout.splitlines() if line.startswith("| 0 |")]
    assert table and table == [line for line in again.stdout.splitlines() if line.startswith("| 0 |")]
    with book.open() as handle:
        assert next(csv.reader(handle)) == list(ledger.COLUMNS)


def test_a_commit_is_dirty_only_when_code_or_config_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ledger, the piece times and the page are tracked and rewritten by `make paper` itself:
    # appending a row must not mark the next run's commit dirty.
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for name in ("src/macs_exp/x.py", "conf/c.yaml", "docs/results/runs.csv", "docs/results.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.chdir(tmp_path / "docs")
    head = ledger.git_commit()
    assert len(head) == 40
    (tmp_path / "docs/results/runs.csv").write_text("a\nb\n")
    (tmp_path / "docs/results.md").write_text("b\n")
    assert ledger.git_commit() == head
    (tmp_path / "conf/c.yaml").write_text("b\n")
    assert ledger.git_commit() == head + "-dirty"
