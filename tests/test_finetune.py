"""Best checkpoints, exports of the best or last weights, model cards, and fine-tuning."""

import json

import numpy as np
import pytest
import tensorflow as tf

from test_loop import WORDS, small
from training import data, finetune
from training.batches import Windows
from training.export import export_run
from training.loop import TrainingError, train
from training.run_dir import RunDir, build_model


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(1)
    return data.corpus_from_text("words", " ".join(rng.choice(WORDS, 6000)), "text8")


@pytest.fixture(scope="module")
def source(tmp_path_factory, corpus):
    """A run that learned for 20 steps, then was ruined by a huge learning rate:
    its best weights are not its last."""
    run = tmp_path_factory.mktemp("source") / "run"
    quick = {"eval_every": 10, "eval_streams": 1, "checkpoint_every": 10, "histogram_every": 0}
    train(small("arch1", steps=20, **quick), run, corpus)
    metrics = train(small("arch1", steps=40, learning_rate=50.0, **quick), run, corpus)
    return {"run": run, "metrics": metrics, "best": export_run(run), "last": export_run(run, which="last")}


def card(version):
    return json.loads((version / "assets" / "model.json").read_text())


def test_the_best_validation_is_kept_and_exported_by_default(source, corpus):
    metrics, run = source["metrics"], source["run"]
    best = metrics["best"]
    assert best["step"] in (10, 20) and best["valid_bpc"] < metrics["valid_bpc"] - 0.5
    assert json.loads((run / "best" / "best.json").read_text()) == {"step": best["step"],
                                                                    "valid_bpc": best["valid_bpc"]}
    chosen, last = card(source["best"]), card(source["last"])
    assert chosen["checkpoint"] == {"which": "best", "step": best["step"]}
    assert (chosen["valid_bpc"], chosen["test_bpc"]) == (best["valid_bpc"], best["test_bpc"])
    assert last["checkpoint"] == {"which": "last", "step": 40}
    assert last["valid_bpc"] == metrics["valid_bpc"]
    # The exported weights are those figures' weights: scoring the split through each export agrees.
    text = corpus.decode(corpus.valid)
    for path, figures in ((source["best"], best), (source["last"], metrics)):
        scored = tf.saved_model.load(str(path)).signatures["score_from"](
            text=tf.constant([text[1:]]), state=tf.zeros([1, 16]),
            last_ids=tf.constant([corpus.alphabet.index(text[0])]))
        assert float(scored["bpc"][0]) == pytest.approx(figures["valid_bpc"], abs=1e-3)


def test_tensorboard_says_which_step_was_best(source):
    from training.tensorboard import read_summaries

    validation = source["run"] / "logs" / "validation"
    assert read_summaries(validation, "best_bpc")
    _, verdict = read_summaries(validation, "best_checkpoint")[-1]
    assert f"step {source['metrics']['best']['step']:,}'s" in verdict[()].decode()


def test_every_card_field_is_present_and_true(source, corpus):
    export = card(source["best"])
    config = RunDir(source["run"]).config()
    assert export["preset"] == "arch1" and export["config"]["model"] == config.model
    assert export["parameters"] == build_model(config, 27).count_params()
    assert export["alphabet"] == corpus.alphabet and export["normalize"] == "text8"
    assert export["training_corpus"] == corpus.facts()
    assert export["training_corpus"]["train_characters"] == len(corpus.train)
    assert export["steps"] == 40 and export["characters_seen"] == 40 * 4 * 8
    assert export["fine_tuned_from"] is None
    assert set(export["versions"]) == {"charzoo", "tensorflow", "keras"}
    assert export["versions"]["tensorflow"] == tf.__version__ and export["created"]


def first_logged_loss(logs):
    from training.tensorboard import read_summaries

    step, loss = min(read_summaries(logs / "train", "loss"), key=lambda event: event[0])
    return step, float(loss)


def test_fine_tuning_starts_from_the_source_weights_and_records_it(source, corpus, tmp_path):
    other = data.corpus_from_text("other", "a dog ran far " * 500, "text8")  # letters the source knows
    run = tmp_path / "tuned"
    metrics = train(small("arch1", steps=4, log_every=1, init_from=str(source["run"])), run, other)
    # Its first step's loss is the source's best weights' loss on that first batch.
    model = build_model(RunDir(source["run"]).config(), 27)
    RunDir(source["run"]).load_weights(model, "best")
    inputs, targets = Windows(data.remap(other, corpus.alphabet).train, 4, 8)[0]
    logits, _ = model([tf.constant(inputs), model.initial_state(4)])
    expected = float(tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
        targets, logits, from_logits=True)))
    assert first_logged_loss(run / "logs") == (1, pytest.approx(expected, rel=1e-5))
    assert optimizer_steps(run) == 4  # a fresh optimizer unless --init-optimizer asks
    lineage = metrics["fine_tuned_from"]
    assert lineage["path"] == str(source["run"].resolve()) and lineage["kind"] == "run"
    assert lineage["checkpoint"] == {"which": "best", "step": source["metrics"]["best"]["step"]}
    assert card(export_run(run))["fine_tuned_from"] == lineage
    # An export is a source too: its weights are the ones it was exported with.
    from_export = build_model(RunDir(source["run"]).config(), 27)
    facts = finetune.load_weights(finetune.find_source(source["best"]), from_export)
    assert facts["kind"] == "export" and facts["checkpoint"] == card(source["best"])["checkpoint"]
    for a, b in zip(from_export.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def optimizer_steps(run):
    return int(tf.train.load_checkpoint(str(run / "checkpoints")).get_tensor(
        "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


def test_fine_tuning_carries_the_optimizer_only_when_asked(source, corpus, tmp_path):
    words = data.corpus_from_text("w", "a dog ran far " * 500, "text8")
    carried = tmp_path / "carried"
    metrics = train(small("arch1", steps=3, init_from=str(source["run"]), init_optimizer=True), carried, words)
    assert optimizer_steps(carried) == optimizer_steps(source["run"]) + 3  # the schedule's clock goes on
    assert metrics["fine_tuned_from"]["checkpoint"] == {"which": "last", "step": 40, "optimizer": True}
    with pytest.raises(TrainingError, match="an export, which keeps no optimizer"):
        train(small("arch1", steps=2, init_from=str(source["best"]), init_optimizer=True), tmp_path / "e", words)
    with pytest.raises(TrainingError, match="trained with adam, this run with sgd"):
        train(small("arch1", steps=2, init_from=str(source["run"]), init_optimizer=True, optimizer="sgd"),
              tmp_path / "f", words)
    with pytest.raises(TrainingError, match="trained without a moving average of its weights, this run with"):
        train(small("arch1", steps=2, init_from=str(source["run"]), init_optimizer=True, weight_average=0.99),
              tmp_path / "g", words)
    with pytest.raises(ValueError, match="give --init-from"):
        small("arch1", init_optimizer=True)


def test_fine_tuning_refuses_what_the_source_cannot_read(source, tmp_path):
    digits = data.corpus_from_text("digits", "a1b2c3 " * 100)  # not normalised: digits
    with pytest.raises(data.DataError, match="cannot read: '123'"):
        train(small("arch1", steps=2, init_from=str(source["run"])), tmp_path / "a", digits)
    words = data.corpus_from_text("w", "a dog ran " * 100, "text8")
    with pytest.raises(TrainingError, match="units"):
        train(small("arch1", steps=2, init_from=str(source["run"]), model={"units": 9}), tmp_path / "b", words)
    with pytest.raises(TrainingError, match="it is a arch1 model"):
        train(small("gru", steps=2, init_from=str(source["run"])), tmp_path / "c", words)
    with pytest.raises(TrainingError, match="neither a run directory"):
        train(small("arch1", steps=2, init_from=str(tmp_path)), tmp_path / "d", words)
