"""The plug-in refactor (issue 10) preserves behaviour: every (algo, mode, env) logs exactly
the metric histories it logged before it (``tests/golden.py`` recorded them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden import ALGOS, ENVS, MODES, histories, key

FIXTURE = Path(__file__).parent / "fixtures" / "golden_histories.json"
GOLDEN = json.loads(FIXTURE.read_text())


def test_the_fixture_covers_every_configuration() -> None:
    assert sorted(GOLDEN) == sorted(key(a, m, e) for a in ALGOS for m in MODES for e in ENVS)


@pytest.mark.slow
@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("algo", ALGOS)
def test_metric_histories_match_the_golden_fixture(algo: str, mode: str, env: str, tmp_path: Path) -> None:
    got = histories(algo, mode, env, tmp_path)
    expected = GOLDEN[key(algo, mode, env)]
    assert sorted(got) == sorted(expected)
    for name, points in expected.items():
        assert got[name] == points, f"{name} changed"
