"""Refactors preserve behaviour: every (algo, mode, env) logs exactly the metric histories
recorded in ``tests/golden.py``'s fixture (before the plug-in refactor of issue 10; TPGR's when
it landed, issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden import configurations, histories, key

FIXTURE = Path(__file__).parent / "fixtures" / "golden_histories.json"
GOLDEN = json.loads(FIXTURE.read_text())


def test_the_fixture_covers_every_configuration() -> None:
    assert sorted(GOLDEN) == sorted(key(a, m, e) for a, m, e in configurations())


@pytest.mark.slow
@pytest.mark.parametrize(("algo", "mode", "env"), configurations())
def test_metric_histories_match_the_golden_fixture(algo: str, mode: str, env: str, tmp_path: Path) -> None:
    got = histories(algo, mode, env, tmp_path)
    expected = GOLDEN[key(algo, mode, env)]
    assert sorted(got) == sorted(expected)
    for name, points in expected.items():
        assert got[name] == points, f"{name} changed"
