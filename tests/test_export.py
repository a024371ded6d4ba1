import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.export import SIGNATURES, export_model, export_run

ALPHABET = " abcdefghijklmnopqrstuvwxyz"
VENV_BIN = Path(sys.executable).parent


def make_run(run_dir, preset="lstm", **overrides):
    """A training run directory as `charzoo train` leaves it, with an untrained model."""
    run_dir.mkdir(parents=True)
    model = zoo.presets.build(preset, vocabulary_size=len(ALPHABET), **overrides)
    model.save(run_dir / "model.keras")
    config = {"preset": preset, "model": model.get_config(), "data": "builtin", "normalize": "text8"}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "alphabet.json").write_text(json.dumps({"alphabet": ALPHABET, "normalize": "text8"}))
    (run_dir / "metrics.json").write_text(json.dumps(
        {"valid_bpc": 4.7, "test_bpc": 4.75, "characters_seen": 1234, "chars_per_second": 10.0, "steps": 3}))
    return model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    model = make_run(run_dir, units=16)
    first = export_run(run_dir)
    second = export_run(run_dir)
    return {"run_dir": run_dir, "model": model, "first": first, "second": second,
            "loaded": tf.saved_model.load(str(second))}


def generate(loaded, primes, length=30, temperature=1.0, top_k=0, top_p=1.0, seed=1):
    out = loaded.signatures["serving_default"](
        prime=tf.constant(primes), length=tf.constant(length), temperature=tf.constant(temperature),
        top_k=tf.constant(top_k), top_p=tf.constant(top_p), seed=tf.constant(seed, tf.int64))
    return [t.decode() for t in out["text"].numpy()]


def test_versioned_atomic_layout(run):
    model_dir = run["run_dir"] / "export" / "lstm"
    assert run["first"] == model_dir / "1" and run["second"] == model_dir / "2"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]  # no staging leftovers
    for version in (run["first"], run["second"]):
        assert (version / "saved_model.pb").is_file()
        assert (version / "variables" / "variables.index").is_file()


def test_model_card(run):
    card = json.loads((run["second"] / "assets" / "model.json").read_text())
    assert card["preset"] == "lstm" and card["family"] == "lstm"
    assert card["alphabet"] == ALPHABET and card["normalize"] == "text8"
    assert card["config"]["model"]["units"] == 16 and card["state_size"] == 32
    assert card["valid_bpc"] == 4.7 and card["test_bpc"] == 4.75 and card["characters_seen"] == 1234
    assert card["training_corpus"] == "builtin" and card["tensorflow_version"] == tf.__version__
    assert card["created"].endswith("+00:00") and card["signatures"] == SIGNATURES


def test_the_graph_normalises_primes_as_the_corpus_was(run):
    start = run["loaded"].signatures["start"]
    states = [start(prime=tf.constant([prime]))["state"].numpy()
              for prime in ("Hi, 2 U!", "hi two u ", "hi two u")]
    np.testing.assert_array_equal(states[0], states[1])
    assert not np.array_equal(states[1], states[2])  # the trailing space is read
    card = json.loads((run["second"] / "assets" / "model.json").read_text())
    assert card["normalizes_primes"] is True


def test_saved_model_cli_shows_the_signatures(run):
    shown = subprocess.run([str(VENV_BIN / "saved_model_cli"), "show", "--dir", str(run["second"]), "--all"],
                           capture_output=True, text=True, check=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in shown
    default = shown.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    for name, dtype in [("prime", "DT_STRING"), ("length", "DT_INT32"), ("temperature", "DT_FLOAT"),
                        ("top_k", "DT_INT32"), ("top_p", "DT_FLOAT"), ("seed", "DT_INT64")]:
        assert f"inputs['{name}'] tensor_info:\n        dtype: {dtype}" in default
    assert "outputs['text'] tensor_info:\n        dtype: DT_STRING" in default


def test_step_reproduces_the_keras_model(run):
    ids = tf.constant(np.random.RandomState(0).randint(0, len(ALPHABET), (3, 7)), tf.int32)
    state = run["loaded"].signatures["initial_state"](batch_size=tf.constant(3))["state"]
    out = run["loaded"].signatures["step"](ids=ids, state=state)
    logits, new_state = run["model"]([ids, run["model"].initial_state(3)], training=False)
    np.testing.assert_allclose(out["logits"].numpy(), logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["state"].numpy(), new_state.numpy(), atol=1e-5)


def test_seeded_text_is_reproducible_and_rows_differ(run):
    texts = generate(run["loaded"], ["the cat", "the cat"], length=40, seed=5)
    assert texts == generate(run["loaded"], ["the cat", "the cat"], length=40, seed=5)
    assert texts != generate(run["loaded"], ["the cat", "the cat"], length=40, seed=6)
    assert texts[0] != texts[1]  # two samples of one seed
    assert all(len(t) == 40 and set(t) <= set(ALPHABET) for t in texts)
    assert generate(run["loaded"], ["abc"], length=0) == [""]


def test_rows_with_different_primes_match_their_single_runs(run):
    primes = ["ab", "hello there", "", "x"]
    generator = run["loaded"].signatures["generate"]
    together = generator(prime=tf.constant(primes), length=tf.constant(25),
                         temperature=tf.fill([4], 1.0), top_k=tf.zeros([4], tf.int32),
                         top_p=tf.ones([4]), seed=tf.fill([4], tf.constant(3, tf.int64)),
                         index=tf.zeros([4], tf.int32))["text"].numpy()
    for prime, text in zip(primes, together):
        assert generate(run["loaded"], [prime], length=25, seed=3) == [text.decode()]
    # An empty prime reads a space.
    assert together[2].decode() == generate(run["loaded"], [" "], length=25, seed=3)[0]


@pytest.mark.parametrize("preset, feedback", [("lstm", None), ("arch2", "sample"), ("arch2", "probs")])
def test_greedy_text_matches_a_keras_loop(run, tmp_path, preset, feedback):
    """Arch 2 exports its free-running mode: fed-back samples, or the softmax if the run chose it."""
    model = run["model"] if preset == "lstm" else zoo.presets.build(
        preset, vocabulary_size=27, units=8, feedback=feedback)
    loaded = run["loaded"] if preset == "lstm" else tf.saved_model.load(
        str(export_model(model, ALPHABET, {"preset": preset}, tmp_path, preset)))
    prime = "the quick"
    ids = tf.constant([[ALPHABET.index(c) for c in prime]], tf.int32)
    logits, state = model([ids, model.initial_state(1)], training=False)
    expected = ""
    for _ in range(20):
        next_id = int(np.argmax(logits[0, -1]))
        expected += ALPHABET[next_id]
        logits, state = model([tf.constant([[next_id]], tf.int32), state], training=False)
    assert generate(loaded, [prime], length=20, temperature=0.0) == [expected]


def test_characters_outside_the_alphabet_are_named(run, tmp_path):
    assert generate(run["loaded"], ["Qa"], temperature=0.0) == generate(run["loaded"], ["qa"], temperature=0.0)
    # A model that was not trained on normalised text reads only its alphabet.
    strict = export_model(run["model"], ALPHABET, {"normalize": None}, tmp_path, "strict", xla=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the alphabet.*Q"):
        generate(tf.saved_model.load(str(strict)), ["Qa"])


def test_export_rejects_a_mismatched_alphabet(run, tmp_path):
    with pytest.raises(ValueError, match="alphabet"):
        export_model(run["model"], "abc", {}, tmp_path, "x")
    with pytest.raises(ValueError, match="not a training run"):
        export_run(tmp_path)


ISOLATED = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("zoo", "training", "serving"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
for name in ("zoo", "training", "serving"):
    try:
        __import__(name)
        raise SystemExit(name + " was importable")
    except ImportError:
        pass
import tensorflow as tf
f = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = f(prime=tf.constant(["the cat", "the cat"]), length=tf.constant(40), temperature=tf.constant(1.0),
        top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(5, tf.int64))
print(json.dumps([t.decode() for t in out["text"].numpy()]))
"""


def test_loads_and_samples_without_the_project(run, tmp_path):
    result = subprocess.run([sys.executable, "-I", "-c", ISOLATED, str(run["second"])],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    texts = json.loads(result.stdout.strip().splitlines()[-1])
    assert texts == generate(run["loaded"], ["the cat", "the cat"], length=40, seed=5)
