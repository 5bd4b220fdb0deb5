"""Refactors preserve behaviour: every (algo, mode, env) logs exactly the metric histories
recorded in ``tests/golden.py``'s fixture (before the plug-in refactor of issue 10; TPGR's when
it landed, issue 15).

Exactly, but for the training window's loss values (``train/*``): the loss of an update is a
mean over its minibatch, which the CPU's vector kernels sum in an order of their own. On an AMD
EPYC the fixture's SAC and TPGR losses (recorded elsewhere) come out up to 6e-7 apart, relative,
while every update, every evaluation and every other metric is bit-identical. Those are compared
to 1e-6 relative; everything else, evaluations included, to the bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden import configurations, histories, key

FIXTURE = Path(__file__).parent / "fixtures" / "golden_histories.json"
GOLDEN = json.loads(FIXTURE.read_text())
# The training window's losses and diagnostics (module doc).
LOSS_PREFIX = "train/"


def test_the_fixture_covers_every_configuration() -> None:
    assert sorted(GOLDEN) == sorted(key(a, m, e) for a, m, e in configurations())


@pytest.mark.slow
@pytest.mark.parametrize(("algo", "mode", "env"), configurations())
def test_metric_histories_match_the_golden_fixture(algo: str, mode: str, env: str, tmp_path: Path) -> None:
    got = histories(algo, mode, env, tmp_path)
    expected = GOLDEN[key(algo, mode, env)]
    assert sorted(got) == sorted(expected)
    for name, points in expected.items():
        if name.startswith(LOSS_PREFIX):
            assert [s for s, _ in got[name]] == [s for s, _ in points], f"{name}'s steps changed"
            assert [v for _, v in got[name]] == pytest.approx([v for _, v in points], rel=1e-6), name
        else:
            assert got[name] == points, f"{name} changed"
