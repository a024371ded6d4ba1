"""Many-to-one: labelled data, CharClassifier, `charzoo classify`, the export and `:classify`."""

import json
import random

import httpx
import numpy as np
import pytest
import tensorflow as tf

from live_server import live_server
from serving.app import create_app
from training import classify, labelled
from training.cli import main
from zoo import CharClassifier
from zoo_checks import check_config_round_trip, check_keras_file_round_trip

CLASSES = ("ends_in_a", "ends_in_b", "ends_in_c")


def write_classes(directory, per_class=60, seed=0):
    """Three classes told apart by the last character only, over strings of 1-9 characters:
    a model that read padding, or the first character, could not tell them apart."""
    rng = random.Random(seed)
    directory.mkdir()
    for name in CLASSES:
        lines = ["".join(rng.choice("xyzw") for _ in range(rng.randint(0, 8))) + name[-1]
                 for _ in range(per_class)]
        (directory / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    data = write_classes(root / "data")
    run = root / "run"
    code = main(["classify", "train", "gru", "--data", str(data), "--run-dir", str(run),
                 "--epochs", "30", "--set", "model.units=16", "--set", "model.embedding_size=8",
                 "--set", "max_time=null", "--set", "eval_every_seconds=2"])
    assert code == 0
    return {"data": data, "run": run, "metrics": json.loads((run / "metrics.json").read_text())}


def test_read_classes_refuses_what_is_not_a_class_directory(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        labelled.read_classes(tmp_path / "missing")
    (tmp_path / "only.txt").write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="needs 2 or more"):
        labelled.read_classes(tmp_path)
    (tmp_path / "tiny.txt").write_text("a\n\n")
    with pytest.raises(ValueError, match="at least 3"):
        labelled.read_classes(tmp_path)
    (tmp_path / "tiny.txt").write_bytes(b"\xff\xfe\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        labelled.read_classes(tmp_path)


def test_the_split_is_stratified_seeded_and_disjoint():
    examples = {"a": [f"a{i}" for i in range(50)], "b": [f"b{i}" for i in range(10)]}
    train, valid, test = labelled.split(examples, seed=1)
    assert [len(s.texts) for s in (train, valid, test)] == [48, 6, 6]  # 40+8, 5+1, 5+1
    for part in (train, valid, test):
        assert set(part.labels) == {0, 1}  # every class in every split
    assert not set(train.texts) & set(valid.texts) | set(train.texts) & set(test.texts)
    assert labelled.split(examples, seed=1)[2].texts == test.texts
    assert labelled.split(examples, seed=2)[2].texts != test.texts


def test_encode_pads_with_0_and_marks_unseen_characters():
    ids = labelled.encode(["ab", "b", "aqb"], {"a": 2, "b": 3})
    np.testing.assert_array_equal(ids, [[2, 3, 0], [3, 0, 0], [2, 1, 3]])


def test_balanced_batches_draw_classes_uniformly(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "big.txt").write_text("\n".join(["x"] * 300))
    (directory / "small.txt").write_text("\n".join(["y"] * 10))
    data = labelled.load(directory)
    _, labels = next(labelled.batches(data, 200, np.random.default_rng(0), balanced=True))
    assert 0.4 < labels.mean() < 0.6  # "small" is 1 in 30 of the data
    _, labels = next(labelled.batches(data, 200, np.random.default_rng(0)))
    assert labels.mean() < 0.1


def test_padding_is_masked_in_every_direction_and_pooling():
    for bidirectional in (False, True):
        for pooling in ("last", "mean"):
            model = CharClassifier("lstm-cifg", 9, 4, 6, bidirectional=bidirectional, pooling=pooling)
            padded = model(np.array([[3, 4, 5, 0, 0], [6, 0, 0, 0, 0]], "int32")).numpy()
            exact = [model(np.array([[3, 4, 5]], "int32")).numpy()[0],
                     model(np.array([[6]], "int32")).numpy()[0]]
            np.testing.assert_allclose(padded, exact, rtol=1e-5, atol=1e-6)


def test_the_classifier_round_trips_and_reloads_in_a_fresh_process(tmp_path):
    model = CharClassifier("arch1", 9, 4, 6, bidirectional=True, dropout=0.2, name="c")
    assert check_config_round_trip(model).count_params() == model.count_params()
    check_keras_file_round_trip(model, [np.array([[3, 4, 5, 0], [6, 2, 0, 0]], "int32")], tmp_path)


@pytest.mark.parametrize("make, message", [
    (lambda: CharClassifier("arch2", 9, 4, 6), "'arch1', 'lstm'"),
    (lambda: CharClassifier("gru", 9, 4, 6, pooling="max"), "'last', 'mean'"),
    (lambda: CharClassifier("gru", 9, 0, 6), "positive integer"),
    (lambda: CharClassifier("gru", 9, 4, 6, bidirectional="yes"), "true or false"),
])
def test_bad_classifier_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_training_learns_the_last_character_and_reports_it(trained):
    metrics = trained["metrics"]
    assert metrics["test"]["accuracy"] == 1.0 and metrics["valid"]["accuracy"] == 1.0
    assert metrics["majority"] == pytest.approx(1 / 3)
    assert np.trace(metrics["test"]["confusion"]) == metrics["examples"]["test"] == 18
    assert (trained["run"] / "logs" / "validation").is_dir()


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present():
    confusion = np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]])  # class 1 has no examples
    assert classify.balanced_accuracy(confusion) == pytest.approx((3 / 4 + 2 / 4) / 2)


def test_eval_and_predict_on_the_command_line(trained, capsys):
    assert main(["classify", "eval", str(trained["run"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == 1.0 and result["classes"] == list(CLASSES)
    assert main(["classify", "eval", str(trained["run"]), "--split", "valid"]) == 0
    table = capsys.readouterr().out
    assert "valid accuracy 1.0000, mean recall per class 1.0000" in table and "ends_in_b" in table
    assert main(["classify", "predict", str(trained["run"]), "zzzb", "q", "--top", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("zzzb: ends_in_b") and lines[1].startswith("q: ")  # q: never seen


def test_set_reads_the_classifier_settings():
    from training.config import parse_settings

    assert parse_settings(["balanced=true", "eval-every-seconds=2", "model.units=8"],
                          classify.FIELD_TYPES, classify.SETTABLE) == {"model": {"units": 8}, "balanced": True,
                                                    "eval_every_seconds": 2.0}


def test_user_errors_are_one_line_without_a_traceback(trained, tmp_path, capsys):
    for argv, message in [
        (["classify", "train", "gru", "--data", str(tmp_path / "none")], "is not a directory"),
        (["classify", "train", "gru", "--data", str(trained["data"]), "--set", "model.foo=1"],
         "unknown classifier argument"),
        (["classify", "train", "gru", "--data", str(trained["data"]), "--run-dir", str(trained["run"])],
         "finished classifier run"),
        (["classify", "train", "nope", "--data", str(trained["data"])], "classifier preset"),
        (["classify", "train", "gru", "--data", str(trained["data"]), "--set", "unrollings=5"],
         "--set unrollings: unknown setting; valid: batch_size"),  # a language model's setting
        (["classify", "eval", str(tmp_path)], "config.json is missing"),
        (["classify", "train", "gru", "--data", str(trained["data"]), "--max-time", "nan"],
         "max_time must be positive and finite, got nan"),  # ran until killed
        (["classify", "train", "gru", "--data", str(trained["data"]), "--max-time", "-3"],
         "max_time must be positive"),  # trained a step and exported it
        (["classify", "train", "gru", "--data", str(trained["data"]), "--epochs", "0"],
         "epochs must be positive"),  # trained on: 0 read as no epoch limit
        (["classify", "train", "gru", "--data", str(trained["data"]), "--set", "clip_norm=inf"],
         "clip_norm must be positive and finite"),  # clipping to inf gives NaN
        (["classify", "predict", str(trained["run"]), ""], "at least one character"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_the_export_classifies_alone_and_through_the_service(trained, tmp_path):
    export = trained["run"] / "export" / "gru" / "1"
    card = json.loads((export / "assets" / "model.json").read_text())
    assert card["task"] == "classify" and card["classes"] == list(CLASSES)
    loaded = tf.saved_model.load(str(export))
    out = loaded.signatures["classify"](text=tf.constant(["xya", "wzc", "b", ""]))
    assert [card["classes"][i] for i in out["class_id"].numpy()[:3]] == ["ends_in_a", "ends_in_c", "ends_in_b"]
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)
    served = tmp_path / "served"
    (served / "names").mkdir(parents=True)
    (served / "names" / "1").symlink_to(export)
    with live_server(create_app(served)) as url, httpx.Client(base_url=url, timeout=30) as client:
        answer = client.post("/v1/models/names:classify", json={"texts": ["zzc", "a"], "top": 2}).json()
        assert [row[0]["class"] for row in answer["classes"]] == ["ends_in_c", "ends_in_a"]
        assert len(answer["classes"][0]) == 2 and answer["version"] == 1
        assert client.post("/v1/models/names:classify", json={"texts": [""]}).status_code == 422
        assert client.post("/v1/models/names:classify", json={"texts": "abc"}).status_code == 422
        refused = client.post("/v1/models/names:sample", json={"prime": "a"})
        assert refused.status_code == 422 and ":classify" in refused.json()["detail"]
        assert client.get("/v1/models/names").json()["task"] == "classify"
