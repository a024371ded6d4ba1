"""`charzoo train` and `export` against changed commands and impossible paths (issue #10, items 8-11).

Each test reproduces a failure seen on the old CLI at the scale of a test and
checks the fixed behaviour: a refusal in one line on stderr with status 2,
and nothing on disk touched.
"""

import contextlib
import inspect
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import zoo
from training.run_dir import CheckpointMismatch, Checkpoints
from training.cli import main

WORDS = "the quick brown fox jumps over a lazy dog and then runs far away".split()


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    rng = np.random.default_rng(0)
    (root / "words.txt").write_text(" ".join(rng.choice(WORDS, 4000)))
    (root / "other.txt").write_text(" ".join(rng.choice(WORDS[::-1], 4000)))
    (root / "short.txt").write_text("a tiny text that cannot fill one window of sixty four streams " * 3)
    return root


def train_args(run, text, *extra):
    return ["train", "arch1", "--data", str(text), "--normalize", "text8", "--run-dir", str(run),
            "--batch-size", "4", "--unrollings", "8", "--steps", "6",
            *[f"--set={s}" for s in ("model.units=8", "eval_characters=500", "eval_every=1000",
                                     "checkpoint_every=2", "log_every=2", "histogram_every=1000",
                                     "steps_per_execution=1", "sample_length=5", "export=false")],
            *extra]


@contextlib.contextmanager
def no_unreadable_warning():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
    assert not [w for w in seen if "unreadable" in str(w.message)]


def snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def one_line_error(capsys, *expected):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("charzoo: error: ") and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


# 8. Unknown model arguments.
ARCH1_ARGUMENTS = ("units, num_layers, dropout, activation, combine, recurrent_initializer, unroll, "
                   "layer_norm, recurrent_dropout")
ARCH2_ARGUMENTS = "units, num_layers, dropout, activation, feedback, recurrent_initializer"
LSTM_ARGUMENTS = ("units, num_layers, embedding_size, embedding_initializer, dropout, recurrent_initializer, "
                  "recurrent_dropout")


@pytest.mark.parametrize("preset, setting, valid", [
    ("arch1", "model.foo=1", ARCH1_ARGUMENTS),
    ("arch1", "model.bidirectional=true", ARCH1_ARGUMENTS),  # the classifier's only
    ("lstm", "model.bidirectional=true", LSTM_ARGUMENTS),  # the classifier's only
    ("lstm", "model.activation=relu", LSTM_ARGUMENTS),  # read by arch1/2 only
    ("arch2", "model.combine=add", ARCH2_ARGUMENTS),
    ("arch2", "model.recurrent_dropout=0.5", ARCH2_ARGUMENTS),  # no hidden state to drop
])
def test_unknown_model_arguments_are_refused_with_the_valid_ones(preset, setting, valid, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", preset, "--data", "builtin", "--run-dir", str(run), "--set", setting]) == 2
    name = setting.split("=")[0].split(".")[1]
    one_line_error(capsys, f"unknown model argument for {preset}: {name}", f"valid: {valid}")
    assert not run.exists()


def test_the_table_of_family_arguments_matches_charlm_and_each_layer():
    from zoo.char_lm import family_arguments

    parameters = set(inspect.signature(zoo.CharLM).parameters) - {"family", "vocabulary_size", "kwargs"}
    assert set().union(*map(family_arguments, zoo.FAMILIES)) == parameters
    for layer in zoo.FAMILIES.values():  # what CharLM passes on, each family's layer takes
        assert set(layer.char_lm_arguments) <= set(inspect.signature(layer).parameters), layer


def test_charlm_refuses_what_it_would_ignore():
    with pytest.raises(ValueError, match="unknown CharLM argument: bidirectional"):
        zoo.CharLM("lstm", vocabulary_size=27, units=4, bidirectional=True)


# 9. A resume with another batch size, unrollings or corpus.
def test_a_resume_that_changes_what_cannot_change_is_refused_and_touches_nothing(texts, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(run, texts / "words.txt")) == 0
    capsys.readouterr()
    before = snapshot(run)
    assert sum(name.startswith("checkpoints/") and name.endswith(".index") for name in before) == 3
    for extra, change in ((["--batch-size", "8"], "batch_size 4 -> 8"),
                          (["--unrollings", "16"], "unrollings 8 -> 16"),
                          (["--data", str(texts / "other.txt")], "data "),
                          (["--set", "weight_average=0.9"], "weight_average None -> 0.9")):
        assert main(train_args(run, texts / "words.txt", *extra, "--steps", "20")) == 2
        one_line_error(capsys, change, "nothing was changed")
        assert snapshot(run) == before
    # The same command with a higher step limit resumes from the newest checkpoint, warning of nothing.
    with no_unreadable_warning():
        assert main(train_args(run, texts / "words.txt", "--steps", "8")) == 0
    assert "resuming" in capsys.readouterr().out and "ckpt-6" in (run / "checkpoints" / "checkpoint").read_text()


def test_a_checkpoint_that_does_not_fit_is_a_mismatch_not_unreadable(tmp_path):
    import tensorflow as tf

    Checkpoints(tmp_path, 3, state=tf.Variable(tf.zeros([4, 3]))).save(1)
    Checkpoints(tmp_path, 3, state=tf.Variable(tf.zeros([4, 3]))).save(2)
    with no_unreadable_warning(), pytest.raises(CheckpointMismatch, match="ckpt-2 does not fit"):
        Checkpoints(tmp_path, 3, state=tf.Variable(tf.zeros([8, 3]))).restore()


# 10. Impossible paths.
def test_impossible_run_dir_export_and_checkpoint_paths_are_one_line_errors(texts, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(train_args(blocker / "run", texts / "words.txt")) == 2
    one_line_error(capsys, str(blocker / "run"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("a file where the checkpoints go")
    assert main(train_args(run, texts / "words.txt")) == 2
    one_line_error(capsys, str(run / "checkpoints"))
    (run / "checkpoints").unlink()
    assert main(train_args(run, texts / "words.txt")) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(blocker / "models")]) == 2
    one_line_error(capsys, "cannot write the export", str(blocker))


def test_a_real_process_prints_no_traceback(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess.run([sys.executable, "-m", "training.cli", "train", "arch1", "--data", "builtin",
                           "--run-dir", str(blocker / "run")], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("charzoo: error: cannot create")


# 11. Failed runs, killed exports, finished runs.
def test_a_run_that_failed_on_bad_data_does_not_block_a_retry(texts, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(run, texts / "short.txt", "--batch-size", "64", "--unrollings", "64")) == 2
    one_line_error(capsys, "cannot fill one window")
    assert not (run / "config.json").exists()
    # A run directory left without any checkpoint (here by hand) holds nothing to keep either.
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text('{"preset": "arch1", "data": "elsewhere"}')
    assert main(train_args(run, texts / "words.txt")) == 0


def test_a_killed_export_is_cleaned_up_by_the_next(texts, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(run, texts / "words.txt")) == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    models = tmp_path / "models" / "arch1"
    (models / f".export-{dead}-x1y2").mkdir(parents=True)  # what kill -9 left
    (models / f".export-{os.getpid()}-live").mkdir()  # an export still being written
    assert main(["export", str(run), "--out", str(tmp_path / "models")]) == 0
    assert sorted(p.name for p in models.iterdir()) == [f".export-{os.getpid()}-live", "1"]


def test_a_finished_run_started_again_says_so_and_exports_nothing(texts, tmp_path, capsys):
    run = tmp_path / "run"
    command = train_args(run, texts / "words.txt", "--set=export=true")
    assert main(command) == 0
    capsys.readouterr()
    metrics = (run / "metrics.json").read_bytes()
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "is finished (6 steps" in out and f"charzoo export {run}" in out
    assert sorted(p.name for p in (run / "export" / "arch1").iterdir()) == ["1"]
    assert (run / "metrics.json").read_bytes() == metrics
    assert main(command + ["--steps", "8"]) == 0  # a larger limit trains on, and exports
    assert sorted(p.name for p in (run / "export" / "arch1").iterdir()) == ["1", "2"]


def test_eval_falls_back_past_unreadable_checkpoints_and_names_a_broken_config(texts, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(run, texts / "words.txt")) == 0
    capsys.readouterr()
    data_files = sorted((run / "checkpoints").glob("ckpt-*.data-*"), key=lambda p: int(p.name[5:].split(".")[0]))
    data_files[-1].write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ckpt-6 is unreadable"):
        assert main(["eval", str(run), "--json"]) == 0
    capsys.readouterr()
    for path in data_files:
        path.write_bytes(b"garbage")
    with pytest.warns(UserWarning):
        assert main(["eval", str(run)]) == 2
    one_line_error(capsys, "has no readable checkpoint")
    (run / "config.json").write_text("{cut short")
    assert main(["eval", str(run)]) == 2
    one_line_error(capsys, f"{run / 'config.json'} is not valid JSON")
    assert main(train_args(run, texts / "words.txt")) == 2
    one_line_error(capsys, f"{run / 'config.json'} is not valid JSON")
