"""Smoke test of the benchmark harness: tiny shapes, checks the rows, not the speeds."""

import json
import math
import time

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
    assert "tf.function call, a scalar add (TF)" in names  # the machine's dispatch speed
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


def test_quality_rows_judge_bpc_lower_is_better_and_the_plot_draws_each_peer_once(tmp_path):
    from benchmarks import quality

    curve = [{"seconds": 10, "characters": 1000, "bpc": 3.0}, {"seconds": 20, "characters": 2000, "bpc": 2.5}]
    ours = {"test_bpc": 2.4, "best": {"test_bpc": 2.2}, "characters": 2000, "chars_per_second": 100.0,
            "start_up_seconds": 5.0, "first_call_seconds": 3.0}
    peer = {**ours, "test_bpc": 2.5, "best": {"test_bpc": 2.1}}
    last, best = quality.pair_rows(bench.row, "arch1", 20.0, ours, peer, "torch nn.RNN(200)")[:2]
    assert last["met"] is True and last["target"] == 2.5
    assert best["name"].endswith("best validation's weights") and best["value"] == 2.2
    assert best["met"] is False and best["target"] == 2.1
    assert quality.pair_rows(bench.row, "arch1", 20.0, ours, {**peer, "test_bpc": 2.3}, "p")[0]["met"] is False
    assert not any("unaveraged" in r["name"] for r in quality.pair_rows(bench.row, "a", 2.0, ours, peer, "p"))
    averaged = {**ours, "unaveraged": {"valid_bpc": 2.3, "test_bpc": 2.45}}
    trained = quality.pair_rows(bench.row, "lstm-256", 20.0, averaged, peer, "p")[2]
    assert trained["name"].endswith("test BPC of the trained weights, unaveraged")
    assert trained["value"] == 2.45 and trained["peer_value"] == 2.5 and trained["met"] is None
    curves = {name: {"charzoo": curve, "torch": curve, "peer": peer} for name, peer in
              (("lstm-256", "torch nn.LSTM(256)"), ("arch1", "torch nn.RNN(200)"),
               ("arch1-mul", "torch nn.RNN(200)"))}
    quality.plot(curves, tmp_path / "curves.png", "test")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_quality_seed_reaches_charzoo_and_the_table_prints_bpc_to_a_thousandth(capsys):
    from benchmarks import quality
    from training.cli import main

    command = quality.charzoo_command("lstm", {"units": 256}, "builtin", "text8", 60.0, 3, "run")
    assert command[command.index("--seed") + 1] == "3" and "--set=model.units=256" in command
    ours = {"test_bpc": 2.1584, "best": {"test_bpc": 2.1604}, "characters": 2000,
            "chars_per_second": 100.0, "start_up_seconds": 5.0, "first_call_seconds": 3.0}
    peer = {**ours, "test_bpc": 2.1362, "best": {"test_bpc": 2.1217}}
    rows = quality.pair_rows(bench.row, "lstm-512", 60.0, ours, peer, "torch nn.LSTM(512)", seed=3)
    assert rows[0]["name"] == "quality lstm-512, 60 s, seed 3: test BPC"
    table = bench.format_table({"machine": {"cpu": "c", "cores": 2, "tensorflow": "t", "keras": "k",
                                            "torch": None}, "mode": "quick", "seconds": 1.0, "rows": rows[:2]})
    assert "2.158" in table and "2.136" in table and "2.160" in table and "2.122" in table, table
    assert main(["bench", "--quick", "--seed", "1"]) == 2  # a quality option, no quality section
    assert "add --quality" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, expected", [
    (["--quality", "--seconds", "0"], "--seconds 0: give a positive"),  # had no result after 300 s
    (["--quality", "--seconds", "nan"], "--seconds nan: give a positive"),
    (["--only", "names", "--names-seconds", "-5", "--names-data", "."], "--names-seconds -5"),
    (["--quality", "--plot", "/nonexistent/curves.png"], "/nonexistent is not a writable directory"),
    (["--quality", "--plot", "curves.txt"], "give a .png, .pdf or .svg file"),
    (["--only", "names", "--names-data", "/nonexistent"], "--names-data: /nonexistent is not a directory"),
    (["--quality", "--data", "/nonexistent/corpus.txt"], "no corpus at '/nonexistent/corpus.txt'"),
])
def test_bench_inputs_that_would_fail_late_are_refused_at_once_in_one_line(arguments, expected, capsys):
    from training.cli import main

    started = time.monotonic()
    assert main(["bench", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("charzoo: error: ") and expected in err, err
    assert time.monotonic() - started < 30  # before any benchmark ran


# ~30 s and a third busy process beside pytest-xdist's two: it starves the timing tests in CI.
@pytest.mark.slow
def test_a_quality_row_trains_as_a_user_does_and_reads_its_curve(tmp_path):
    from benchmarks import quality

    rows, curves = quality.quality_rows(bench.row, ["arch1"], corpus_spec="builtin",
                                        normalize="text8", seconds=6.0, has_torch=False)
    test_bpc = rows[0]
    assert test_bpc["name"] == "quality arch1, 6 s: test BPC" and 2.0 < test_bpc["value"] < 4.76
    assert test_bpc["peer_value"] is None and test_bpc["met"] is None  # no torch: no verdict
    assert rows[1]["name"].endswith("best validation's weights") and 2.0 < rows[1]["value"] < 4.76
    characters, speed, start_up = (r["value"] for r in rows[2:])
    assert characters > 0 and speed > 0 and start_up > 0
    curve = curves["arch1"]["charzoo"]  # the final validation at least: compilation may take 6 s
    assert curve and curves["arch1"]["torch"] is None
    assert curve[-1]["characters"] == characters
    quality.plot(curves, tmp_path / "curves.png", "test")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_torch_reference_trains_for_its_budget_and_scores_like_charzoo(tmp_path):
    pytest.importorskip("torch")
    import numpy as np

    from benchmarks import torch_lm

    rng = np.random.default_rng(0)
    text = np.tile(rng.integers(0, 5, 50, dtype=np.uint8), 400)  # a period-50 pattern
    spec = {"vocabulary": 5, "cell": "gru", "hidden": 16, "seconds": 3.0,
            "eval_every_seconds": 1.0, "eval_characters": 2000}
    for name, part in (("train", text[:18000]), ("valid", text[18000:19000]), ("test", text[19000:])):
        spec[name] = str(tmp_path / f"{name}.npy")
        np.save(spec[name], part)
    result = torch_lm.train(spec)
    assert 3.0 <= result["seconds"] < 6.0 and result["characters"] > 0
    assert result["test_bpc"] < np.log2(5) and len(result["curve"]) >= 3
    assert result["curve"][-1]["bpc"] == result["valid_bpc"]
    # Early stopping's weights: the last ones, or a periodic validation's that beat them.
    assert result["best"]["valid_bpc"] <= result["valid_bpc"] and result["best"]["test_bpc"] < np.log2(5)
    import torch

    def recurrent_kernel(seed):  # `charzoo bench --quality --seed` reaches the reference too
        return torch_lm.build(torch, "gru", 5, 8, seed=seed)[1].weight_hh_l0

    assert torch.equal(recurrent_kernel(0), recurrent_kernel(0))
    assert not torch.equal(recurrent_kernel(0), recurrent_kernel(1))


# ~40 s and ~30 s on a 2-core AVX2 host; `charzoo bench --only variants,names` runs the rows for real.
@pytest.mark.slow
def test_tiny_variant_rows_compare_each_variant_with_the_closest_keras_layer():
    rows = bench.run(quick=True, tiny=True, sections=("variants",))["rows"]
    assert [r["name"].split(" (")[0] for r in rows] == [
        "train lstm-peephole", "train lstm-cifg", "train lstm-ln", "train arch1-mul",
        "train arch1-orth", "train arch1-ln"]
    assert [r["peer"] for r in rows] == ["Keras LSTM(8)"] * 3 + ["Keras SimpleRNN(8)"] * 3
    for r in rows:
        assert r["value"] > 0 and r["peer_value"] > 0
        assert math.isclose(r["ratio"], r["value"] / r["peer_value"])


@pytest.mark.slow
def test_names_rows_train_both_sides_on_the_same_split(tmp_path):
    from test_classifier import write_classes

    data = write_classes(tmp_path / "data")
    rows = bench.run(quick=True, tiny=True, sections=("names",),
                     names_options={"directory": data, "seconds": 2.0, "rows": ("gru", "lstm-cifg")})["rows"]
    assert [r["name"] for r in rows] == ["names gru, 2 s: test accuracy",
                                         "names lstm-cifg, 2 s: test accuracy"]
    assert 0 <= rows[0]["value"] <= 100 and rows[1]["peer"] is None
    if rows[0]["peer_value"] is not None:  # torch installed
        assert rows[0]["peer"] == "torch nn.GRU(128)" and 0 <= rows[0]["peer_value"] <= 100
