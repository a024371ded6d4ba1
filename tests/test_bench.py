"""Smoke test of the benchmark harness: tiny shapes, checks the rows, not the speeds."""

import json
import math

import pytest

from benchmarks import bench

KEYS = {"name", "value", "unit", "peer", "peer_value", "ratio", "target", "met"}


@pytest.mark.slow  # ~50 s: the harness's training rows; `charzoo bench --quick` runs them for real
def test_tiny_run_rows_are_consistent():
    result = bench.run(quick=True, tiny=True, sections=("train", "pipeline"))
    json.dumps(result)
    assert {"cpu", "cores", "tensorflow", "torch"} <= set(result["machine"])
    names = [r["name"] for r in result["rows"]]
    assert any(n.startswith("train lstm") for n in names)
    assert any(n.startswith("Windows") for n in names)
    for r in result["rows"]:
        assert KEYS <= set(r)
        assert r["value"] > 0
        if r["peer_value"]:
            assert math.isclose(r["ratio"], r["value"] / r["peer_value"])
            if r["target"] is not None:
                assert r["met"] == (r["ratio"] >= r["target"])
        else:
            assert r["ratio"] is None
        if r["target"] is None:
            assert r["met"] is None
    assert "train arch1" in bench.format_table(result)


def test_row_targets():
    assert bench.row("x", 2.0, "u", "p", 1.0, target=3.0)["met"] is False
    assert bench.row("x", 3.0, "u", "p", 1.0, target=3.0)["met"] is True
    assert bench.row("x", 1000.0, "MB", target=1536.0, lower_is_better=True)["met"] is True
    assert bench.row("x", 1.0, "u", "p", None, target=1.0)["met"] is None


def test_tiny_soak_gives_no_wrong_answer_and_no_5xx():
    result = bench.run(quick=True, tiny=True, sections=("soak",))
    rows = {r["name"].split(": ", 1)[1]: r for r in result["rows"]}
    assert rows["wrong answers"]["value"] == 0 and rows["5xx answers"]["value"] == 0, rows
    assert "valid" in rows["wrong answers"]["note"] and rows["p99 latency of valid requests"]["value"] > 0
