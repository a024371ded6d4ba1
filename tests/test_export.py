import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import zoo
from serving.stops import cut
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
    assert card["training_corpus"] == {"name": "builtin"} and card["tensorflow_version"] == tf.__version__
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


@pytest.mark.parametrize("signature, arguments, message", [
    ("step", {"ids": [[1]], "state": (1, 3)}, r"state must be \[batch, 32\]"),  # failed deep in the model
    ("step", {"ids": [[1]], "state": (2, 32)}, r"state must be \[batch, 32\]"),  # broadcast silently
    ("step", {"ids": [[27]], "state": (1, 32)}, "ids must be less than the size of the alphabet"),
    ("score_from", {"text": ["ab"], "last_ids": [0, 0], "state": (1, 32)}, "one row of ids per row"),
    ("resume", {"last_ids": [0], "state": (1, 31), "length": 3, "temperature": [1.0], "top_k": [0],
                "top_p": [1.0], "seed": [1], "index": [0], "offset": 0}, r"state must be \[batch, 32\]"),
])
def test_a_state_that_does_not_fit_is_named_not_broadcast(run, signature, arguments, message):
    assert run["model"].state_size == 32 and len(ALPHABET) == 27
    function = run["loaded"].signatures[signature]
    specs = function.structured_input_signature[1]
    inputs = {name: tf.zeros(value) if name == "state" else tf.constant(value, specs[name].dtype)
              for name, value in arguments.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        function(**inputs)


def test_seeded_text_is_reproducible_and_rows_differ(run):
    texts = generate(run["loaded"], ["the cat", "the cat"], length=40, seed=5)
    assert texts == generate(run["loaded"], ["the cat", "the cat"], length=40, seed=5)
    assert texts != generate(run["loaded"], ["the cat", "the cat"], length=40, seed=6)
    assert texts[0] != texts[1]  # two samples of one seed
    assert all(len(t) == 40 and set(t) <= set(ALPHABET) for t in texts)
    assert generate(run["loaded"], ["abc"], length=0) == [""]


def test_rows_with_different_primes_match_their_single_runs(run):
    primes = ["ab", "hello there", "", "x"]
    together = generate_rows(run["loaded"], primes, 25, seed=3)
    for prime, text in zip(primes, together):
        assert generate(run["loaded"], [prime], length=25, seed=3) == [text]
    # An empty prime reads a space.
    assert together[2] == generate(run["loaded"], [" "], length=25, seed=3)[0]


def generate_rows(loaded, primes, length, seed, stops=None, include_stop=False):
    rows = len(primes)
    out = loaded.signatures["generate"](
        prime=tf.constant(primes), length=tf.constant(length), temperature=tf.fill([rows], 1.0),
        top_k=tf.zeros([rows], tf.int32), top_p=tf.ones([rows]),
        seed=tf.fill([rows], tf.constant(seed, tf.int64)), index=tf.zeros([rows], tf.int32),
        stop=tf.constant(stops or [[""]] * rows), include_stop=tf.fill([rows], include_stop))
    return [t.decode() for t in out["text"].numpy()]


@pytest.mark.parametrize("include_stop", [False, True])
def test_generation_ends_at_the_first_stop_string(run, include_stop):
    primes = ["the", "a", "b", "c"]
    stops = [["qu", "zz"], ["", ""], ["x", "y"], ["neverneverx", ""]]
    free = generate_rows(run["loaded"], primes, 700, seed=4)  # three chunks
    ended = generate_rows(run["loaded"], primes, 700, seed=4, stops=stops, include_stop=include_stop)
    for text, row, got in zip(free, stops, ended):
        assert got == cut(text, row, include_stop)[0]
    assert ended[1] == free[1] and len(ended[3]) == 700  # no stop, or none generated
    assert len(ended[2]) < 50  # x or y come soon in an untrained model's text


def test_scores_are_the_models_surprisal_and_add_up_over_pieces(run):
    score = run["loaded"].signatures["score"]
    whole = score(text=tf.constant(["Hello, World 2"]))
    assert whole["text"].numpy()[0].decode() == "hello world two "  # normalised in the graph
    assert int(whole["length"][0]) == 16
    # The first character is predicted after a space; each next one from the step signature.
    ids = [ALPHABET.index(c) for c in " hello world two "]
    logits = run["loaded"].signatures["step"](ids=tf.constant([ids]), state=tf.zeros([1, 32]))["logits"]
    expected = -tf.nn.log_softmax(logits[0, :-1]).numpy()[np.arange(16), ids[1:]] / np.log(2)
    np.testing.assert_allclose(whole["surprisal"][0], expected, rtol=1e-4)
    np.testing.assert_allclose(whole["bits"][0], expected.sum(), rtol=1e-4)
    np.testing.assert_allclose(whole["bpc"][0], expected.mean(), rtol=1e-4)
    first = score(text=tf.constant(["hello wo"]))
    second = run["loaded"].signatures["score_from"](text=tf.constant(["rld two "]), state=first["state"],
                                                    last_ids=first["last_ids"])
    np.testing.assert_allclose(np.concatenate([first["surprisal"][0], second["surprisal"][0]]), expected,
                               rtol=1e-4)


def test_beam_search_finds_the_most_likely_continuation_of_a_constructed_model(tmp_path):
    """An Arch 1 whose logits depend only on the last character: a known Markov chain.
    After "a", "b" is likelier than "c", but "b" leads anywhere and "c" to "c"."""
    size = len(ALPHABET)
    probabilities = np.full((size, size), 1.0 / size)
    a, b, c = (ALPHABET.index(x) for x in "abc")
    probabilities[a] = 0.001
    probabilities[a, b], probabilities[a, c] = 0.5, 0.4
    probabilities[c] = 0.002
    probabilities[c, c] = 0.95
    table = np.log(probabilities / probabilities.sum(1, keepdims=True))
    model = zoo.presets.build("arch1", vocabulary_size=size, units=size, combine="add")
    kernel, recurrent, bias, output, output_bias = model.get_weights()
    model.set_weights([table + 20.0, np.zeros_like(recurrent), np.zeros_like(bias), np.eye(size),
                       np.zeros_like(output_bias)])  # ReLU of table + 20 is table + 20
    loaded = tf.saved_model.load(str(export_model(model, ALPHABET, {}, tmp_path, "chain", xla=False)))
    out = loaded.signatures["beam_search"](prime=tf.constant(["a"]), length=tf.constant(2),
                                           beam_width=tf.constant(3))
    best = out["text"].numpy()[0, 0].decode()
    assert best == "cc"
    assert generate(loaded, ["a"], length=2, temperature=0.0)[0][0] == "b"  # greedy takes the bait
    np.testing.assert_allclose(out["bits"][0, 0], -(table[a, c] + table[c, c]) / np.log(2), rtol=1e-4)


@pytest.mark.parametrize("preset, feedback", [("lstm", None), ("arch2", "sample"), ("arch2", "probs"),
                                              ("arch1-mul", None)])
def test_greedy_text_matches_a_keras_loop(run, tmp_path, preset, feedback):
    """Arch 2 exports its free-running mode: fed-back samples, or the softmax if the run chose it."""
    extra = {"feedback": feedback} if feedback else {}
    model = run["model"] if preset == "lstm" else zoo.presets.build(
        preset, vocabulary_size=27, units=8, **extra)
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
scored = tf.saved_model.load(sys.argv[1]).signatures["score"](text=tf.constant(["The cat."]))
print(json.dumps([[t.decode() for t in out["text"].numpy()], float(scored["bpc"][0])]))
"""


def test_loads_and_samples_without_the_project(run, tmp_path):
    result = subprocess.run([sys.executable, "-I", "-c", ISOLATED, str(run["second"])],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    texts, bpc = json.loads(result.stdout.strip().splitlines()[-1])
    assert texts == generate(run["loaded"], ["the cat", "the cat"], length=40, seed=5)
    assert bpc == pytest.approx(float(run["loaded"].signatures["score"](text=tf.constant(["the cat "]))["bpc"][0]))
