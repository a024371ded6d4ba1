import json
import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import config as configuration
from training import data
from training.cli import main
from training.run_dir import RunDir, load_run_model
from training.loop import TrainingError, steps_in_next_call, train
from training.step import Trainer
from training.tensorboard import read_summaries

WORDS = "the quick brown fox jumps over a lazy dog and then runs far away".split()


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    return data.corpus_from_text("words", " ".join(rng.choice(WORDS, 6000)), "text8")


def small(preset="arch1", **overrides):
    return configuration.resolve(preset, {
        "model": {"units": 8}, "batch_size": 4, "unrollings": 8, "optimizer": "adam",
        "learning_rate": 0.02, "eval_every": 10, "checkpoint_every": 10, "log_every": 4,
        "histogram_every": 10, "steps_per_execution": 4, "eval_characters": 2000,
        "sample_length": 20, "export": False, **overrides})


@pytest.mark.parametrize("step, left_in_epoch, target, expected", [
    (0, 1000, None, 25),  # a full call: the next log step is 50
    (25, 1000, None, 25),
    (30, 1000, None, 1),  # 20 steps to the log at 50
    (0, 24, None, 1),  # the epoch ends first
    (0, 1000, 10, 1),  # so does the run
    (1000, 1000, 1025, 25),
])
def test_a_call_runs_several_steps_only_up_to_the_next_event(step, left_in_epoch, target, expected):
    config = configuration.resolve("arch1", {"log_every": 50, "eval_every": 1000,
                                             "checkpoint_every": 500, "histogram_every": 0})
    assert steps_in_next_call(config, step, left_in_epoch, target) == expected


def test_a_run_trains_evaluates_and_writes_everything(tmp_path, corpus):
    metrics = train(small("arch1", steps=40, export=True), tmp_path / "run", corpus)
    run = tmp_path / "run"
    assert metrics["export"] == str(run / "export" / "arch1" / "1")
    for name in ("config.json", "alphabet.json", "metrics.json", "model.keras", "checkpoints", "logs",
                 "export/arch1/1/saved_model.pb"):
        assert (run / name).exists(), name
    assert metrics["steps"] == 40 and metrics["characters_seen"] == 40 * 4 * 8
    assert metrics["valid_bpc"] < metrics["uniform_bpc"] - 1.0  # words are easy to learn
    assert metrics["valid_characters"] == 4 * ((len(corpus.valid) - 1) // 4) or metrics["valid_characters"] > 0
    assert json.loads((run / "metrics.json").read_text())["test_bpc"] == metrics["test_bpc"]
    assert_tensorboard_explains_the_run(run / "logs")
    saved = RunDir(run).config()
    assert saved.model["units"] == 8 and saved.steps == 40
    _, alphabet, model = load_run_model(run)
    assert alphabet == corpus.alphabet and model.count_params() > 0


def test_a_run_shorter_than_histogram_every_has_histograms_at_its_first_and_last_steps(tmp_path, corpus):
    train(small("arch1", steps=12, histogram_every=1000, eval_every=1000), tmp_path / "run", corpus)
    for tag in ("weights/arch1_0/cell/recurrent_kernel", "gradients/arch1_0/cell/recurrent_kernel"):
        steps = [step for step, _ in read_summaries(tmp_path / "run" / "logs" / "train", tag)]
        assert steps == [4, 12]  # the first call ran 4 steps


def assert_tensorboard_explains_the_run(logs):
    """The run's own event files, read by TensorBoard's reader, hold every kind of summary."""
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    def tags(path):
        accumulator = EventAccumulator(str(path), size_guidance={TENSORS: 0})
        accumulator.Reload()
        return set(accumulator.Tags()["tensors"])

    train_tags = tags(logs / "train")
    for tag in ("loss", "bpc", "learning_rate", "grad_norm", "clipped_fraction", "chars_per_second",
                "sample", "gradient_flow", "gradient_flow/per_step_gain", "spectral_radius/arch1_0",
                "weights/arch1_0/cell/recurrent_kernel", "gradients/arch1_0/cell/recurrent_kernel"):
        assert tag in train_tags, tag
    assert {"loss", "bpc"} <= tags(logs / "validation")
    assert "_hparams_/session_start_info" in tags(logs)


def weights(run_dir):
    return load_run_model(run_dir)[2].get_weights()


# Arch 1's twin (~35 s) runs with the slow tests; the LSTM's state and Adam slots are the harder
# case (here trained in two blocks of streams per step, and with the weights' moving average,
# which the saved model holds while the checkpoint keeps the trained weights), and with dropout
# the masks' random state must resume too.
@pytest.mark.parametrize("preset, extra", [pytest.param("arch1", {}, marks=pytest.mark.slow),
                                           ("lstm", {"batch_shards": 2, "weight_average": 0.9}),
                                           ("lstm", {"bfloat16_products": True}),
                                           ("lstm-dropout", {})])
def test_resume_is_exact(tmp_path, corpus, preset, extra):
    train(small(preset, steps=24, **extra), tmp_path / "straight", corpus)
    first = train(small(preset, steps=12, **extra), tmp_path / "split", corpus)
    second = train(small(preset, steps=24, **extra), tmp_path / "split", corpus)
    assert second["steps"] == 24 and second["batch_shards"] == extra.get("batch_shards", 1)
    assert second["bfloat16_products"] is extra.get("bfloat16_products", False)
    if "weight_average" in extra:  # the figures are the averaged weights', beside the trained ones'
        assert set(second["unaveraged"]) == {"valid_bpc", "test_bpc"}
        assert second["valid_bpc"] != second["unaveraged"]["valid_bpc"]
        saved = Trainer(load_run_model(tmp_path / "split")[2], keras.optimizers.SGD(), 1.0)
        assert saved.evaluate(corpus.valid)["bpc"] == pytest.approx(second["valid_bpc"], abs=1e-6)
    # The clock of the curves goes on from the first part's seconds.
    assert second["training_seconds"] == pytest.approx(first["training_seconds"] + second["seconds"])
    for a, b in zip(weights(tmp_path / "straight"), weights(tmp_path / "split")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_epochs_and_max_time_stop_the_run(tmp_path, corpus):
    per_epoch = (len(corpus.train) - 1) // 4 // 8
    quiet = {"eval_every": 1000, "checkpoint_every": 1000, "histogram_every": 0, "log_every": 100}
    assert train(small("arch2", epochs=0.5, **quiet), tmp_path / "e", corpus)["steps"] == math.ceil(per_epoch / 2)
    timed = train(small("arch2", max_time=1, **quiet), tmp_path / "t", corpus)
    assert timed["stopped_by"] == "max_time" and timed["steps"] > 0


def test_validations_are_logged_against_seconds_and_characters_and_the_run_says_where_time_went(
        tmp_path, corpus):
    metrics = train(small("arch2", steps=12, eval_every=4, histogram_every=0), tmp_path / "run", corpus)
    timing = metrics["timing"]
    assert timing["start_up"] > 0 and timing["first_call"] > 0 and timing["final_evaluation"] > 0
    assert math.isclose(timing["training"] + timing["side_work"], timing["loop"])
    assert metrics["training_seconds"] == pytest.approx(timing["loop"])
    assert metrics["chars_per_second_overall"] < metrics["chars_per_second"]
    validation = tmp_path / "run" / "logs" / "validation"
    seconds, characters, steps = ([step for step, _ in read_summaries(validation, tag)]
                                  for tag in ("bpc_by_seconds", "bpc_by_characters", "bpc"))
    assert steps == [4, 8, 12, 12]  # periodic, then the final
    assert characters == [step * 4 * 8 for step in (4, 8, 12, 12)]  # 4 streams x 8 unrollings
    assert seconds == sorted(seconds) and seconds[-1] == round(metrics["training_seconds"])
    from benchmarks.quality import read_curve  # what `charzoo bench --quality` plots

    assert [point["characters"] for point in read_curve(tmp_path / "run")] == characters


def test_a_checkpoint_from_before_the_training_clock_still_restores(tmp_path):
    from training.run_dir import Checkpoints

    weights = tf.Variable([1.0, 2.0])
    Checkpoints(tmp_path, 1, weights=weights).save(7)  # as runs wrote them before the clock
    restored, clock = tf.Variable([0.0, 0.0]), tf.Variable(0.0, dtype=tf.float64)
    path = Checkpoints(tmp_path, 1, weights=restored, training_seconds=clock).restore()
    assert path.endswith("ckpt-7") and restored.numpy().tolist() == [1.0, 2.0]
    assert float(clock) == 0.0


def test_corrupt_checkpoint_falls_back_to_the_previous(tmp_path, corpus):
    run = tmp_path / "run"
    train(small("arch1", steps=20), run, corpus)
    newest = sorted((run / "checkpoints").glob("ckpt-20.data*"))[0]
    newest.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        metrics = train(small("arch1", steps=25), run, corpus)
    assert metrics["steps"] == 25


def test_divergence_stops_with_a_clear_error(tmp_path, corpus):
    with pytest.raises(TrainingError, match="non-finite"):
        train(small("arch1", steps=30, learning_rate=1e30, clip_norm=1e30), tmp_path / "r", corpus)


def test_cli_trains_and_evaluates_the_builtin_corpus(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "arch1", "--data", "builtin", "--run-dir", run, "--steps", "30",
                 "--set", "model.units=16", "--set", "eval_every=1000", "--seed", "3"]) == 0
    assert "validation" in capsys.readouterr().out
    assert main(["eval", run, "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["split"] == "test" and result["characters"] > 10_000
    assert 0 < result["bpc"] < math.log2(27)
    # The export scores the split as `eval` does: as 128 streams, each reading its first
    # character and scoring the rest, one text per stream.
    test_ids = data.load("builtin").test
    length = (len(test_ids) - 1) // 128
    streams = test_ids[: 128 * length + 1]
    alphabet = " abcdefghijklmnopqrstuvwxyz"
    scored = tf.saved_model.load(f"{run}/export/arch1/1").signatures["score_from"](
        text=tf.constant(["".join(alphabet[i] for i in streams[s * length + 1 : (s + 1) * length + 1])
                          for s in range(128)]),
        state=tf.zeros([128, 32]), last_ids=tf.constant(streams[: 128 * length : length], tf.int32))
    assert int(tf.reduce_sum(scored["length"])) == result["characters"]
    assert float(tf.reduce_sum(scored["bits"])) / result["characters"] == pytest.approx(result["bpc"], abs=1e-3)
    test_text = data.load("builtin").decode(test_ids)
    assert main(["score", f"{run}/export/arch1", "--text", test_text[:500], "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["characters"] == 500 and len(cli["surprisal"]) == 500 and 0 < cli["bpc"] < math.log2(27)
    assert main(["sample", f"{run}/export/arch1", "--prime", "the ", "--length", "30", "--seed", "5",
                 "--num-samples", "2"]) == 0
    samples = capsys.readouterr().out.splitlines()
    assert len(samples) == 2 and all(len(s) == 4 + 30 and s.startswith("the ") for s in samples)


@pytest.mark.parametrize("argv, message", [
    (["train", "nosuch"], "valid choices"),
    (["train", "arch1", "--set", "bogus=1"], "unknown setting"),
    (["train", "arch1", "--batch-size", "0", "--data", "builtin"], "batch_size must be positive"),
    (["train", "arch1", "--max-time", "nan", "--data", "builtin"], "max_time must be zero or more, got nan"),
    (["train", "arch1", "--set", "clip_norm=inf", "--data", "builtin"], "clip_norm must be positive and finite"),
    (["train", "arch1", "--set", "sample_length=-1", "--data", "builtin"], "sample_length must be zero or more"),
    (["train", "arch1", "--data", "/no/such/file"], "no corpus at"),
    (["eval", "/no/such/run"], "not a run directory"),
    (["score", "/no/such/model", "--text", "a"], "neither an exported model"),
    (["score", "/no/such/model", "--file", "/no/such/file"], "cannot read /no/such/file"),
])
def test_cli_user_errors_are_one_line(argv, message, capsys, tmp_path):
    assert main(argv + (["--run-dir", str(tmp_path / "r")] if argv[0] == "train" else [])) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# SIGINT takes the same handler (`loop.stop_requests`); one real process is enough for CI.
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_a_signal_checkpoints_before_exiting(tmp_path, signal_number):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "training.cli", "train", "arch1", "--data", "builtin",
               "--run-dir", str(run), "--steps", "100000", "--set", "model.units=8",
               "--set", "log_every=1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.monotonic() + 60
    while not (run / "logs").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    process.send_signal(signal_number)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert f"{signal.Signals(signal_number).name}: checkpoint saved" in output
    steps = int(output.split("checkpoint saved at step ")[1].split(";")[0])
    assert steps > 0 and (run / "checkpoints" / "checkpoint").exists()


def test_a_terminal_sees_the_scored_text_shaded_by_surprisal():
    import io

    from rich.console import Console

    from training.cli import print_heat_map

    out = io.StringIO()
    print_heat_map("ab", [0.0, 8.0], Console(file=out, force_terminal=True, color_system="truecolor"))
    shown = out.getvalue()
    assert "48;2;255;255;255ma" in shown and "48;2;255;64;64mb" in shown  # white, then red
