"""Exports a trained model as a self-contained, versioned TensorFlow SavedModel.

The export lives in TF Serving's layout, `models_dir/<name>/<version>/`, with
the signatures of `training.generator` and a model card in
`assets/model.json`; it loads with `tf.saved_model.load` alone.
"""

import datetime
import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from training.generator import SIGNATURES, Generator
from training.run_dir import RunDir


def next_version(model_dir):
    """1 + the highest integer-named version under `model_dir` (1 if none)."""
    versions = [int(p.name) for p in Path(model_dir).glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def remove_stale_exports(model_dir):
    """Removes what exports killed midway (`kill -9`, a power cut) left behind.

    An export is staged in `.export-<pid>-*` and renamed into place; a staging
    directory whose process is gone is garbage. One whose process lives (or
    whose pid was reused, or that another machine writes on a shared disk) is
    kept: deleting a live export is worse than keeping a dead one.
    """
    for path in model_dir.glob(".export-*"):
        pid = path.name.split("-")[1] if path.name.count("-") >= 2 else ""
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def export_model(model, alphabet, card, models_dir, name, xla=None):
    """Writes `model` as the next version of `models_dir/<name>/`.

    The SavedModel is written to a hidden sibling directory and renamed into
    place, so a server scanning `models_dir` never sees half an export.

    Args:
        model: a `zoo.CharLM`.
        alphabet: str, character `i` is id `i`.
        card: dict, merged into `assets/model.json` (preset, config, metrics...).
        models_dir: str or Path, the model repository.
        name: str, the model's name in the repository.
        xla: bool or None. False runs the sampling loop as a plain graph;
            otherwise it is compiled with XLA if the model compiles (about
            10x faster for one stream, but each new batch size compiles
            once, ~1-2 s, on first use).

    Returns:
        Path of the new version directory.

    Raises:
        ValueError: the alphabet does not match the model, or the name is bad.
    """
    if len(alphabet) != model.vocabulary_size or len(set(alphabet)) != len(alphabet):
        raise ValueError(
            f"alphabet of {len(alphabet)} characters does not fit a model of "
            f"vocabulary size {model.vocabulary_size} (or repeats a character)"
        )
    generator = Generator(model, alphabet, card.get("normalize"), xla)

    def write(staging):
        save(model, generator.signatures(), staging)
        return {
            **card,
            "family": model.family,
            "alphabet": alphabet,
            "state_size": int(model.state_size),
            "vocabulary_size": int(model.vocabulary_size),
            "tensorflow_version": tf.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "signatures": SIGNATURES,
            # The graph maps any prime to the alphabet itself (`normalize`); else
            # characters outside the alphabet are an error.
            "normalizes_primes": generator.normalize is not None,
            "xla": generator.uses_xla,
        }

    return write_version(models_dir, name, write)


def save(model, signatures, directory, **tracked):
    """`tf.saved_model.save` of `model`'s variables with `signatures`; `tracked` are
    further objects the signatures use (a lookup table)."""
    root = tf.Module()  # the saved object: the model's variables, under `model`
    root.model = model
    for name, value in tracked.items():
        setattr(root, name, value)
    # Dropout's random-number states are Keras variables that TensorFlow's tracking does
    # not find under `model`; a traced inference graph still captures them.
    root.all_variables = list(model.variables)
    # The export is for inference: without its loops' custom gradients, each of
    # which TensorFlow registers for good on every load, a hot-reloaded LSTM-512
    # version costs the server ~30 MB for good instead of ~110 (tf#40171).
    tf.saved_model.save(root, str(directory), signatures=signatures,
                        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))


def write_version(models_dir, name, write):
    """Writes `models_dir/name/<next version>/` atomically: `write(staging)` saves into a
    hidden staging directory and returns the model card, which goes to
    `assets/model.json`; then the directory is renamed into place."""
    if not name or name.startswith(".") or "/" in name or os.sep in name:
        raise ValueError(f"invalid model name {name!r}")
    model_dir = Path(models_dir) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_exports(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".export-{os.getpid()}-", dir=model_dir))
    try:
        card = write(staging)
        (staging / "assets").mkdir(exist_ok=True)
        (staging / "assets" / "model.json").write_text(json.dumps(card, indent=2))
        # Retry on a race with another exporter taking the same version number.
        while True:
            target = model_dir / str(next_version(model_dir))
            try:
                staging.rename(target)
                return target
            except OSError:
                if not target.exists():
                    raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_classifier(model, alphabet, classes, card, models_dir, name):
    """Exports a `zoo.CharClassifier` with a `classify` signature (also `serving_default`):
    `text` (a batch of UTF-8 strings) -> `probabilities` `[batch, classes]` and `class_id`.
    The model card lists the classes in order."""
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(list(alphabet)), tf.range(2, len(alphabet) + 2, dtype=tf.int64)), default_value=1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def classify(text):
        characters = tf.strings.unicode_split(text, "UTF-8")
        ids = tf.cast(table.lookup(characters).to_tensor(default_value=0), tf.int32)
        ids = tf.pad(ids, [[0, 0], [0, tf.maximum(1 - tf.shape(ids)[1], 0)]])  # no string is empty
        probabilities = tf.nn.softmax(model(ids, training=False))
        return {"probabilities": probabilities,
                "class_id": tf.argmax(probabilities, -1, output_type=tf.int32)}

    def write(staging):
        save(model, {"classify": classify, "serving_default": classify}, staging, alphabet_table=table)
        return {**card, "task": "classify", "family": model.family, "classes": list(classes),
                "alphabet": alphabet, "parameters": model.count_params(),
                "signatures": {"classify": "text [batch] string -> probabilities [batch, "
                                           "classes] float32, class_id [batch] int32"},
                "tensorflow_version": tf.__version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    return write_version(models_dir, name, write)


def export_run(run_dir, models_dir=None, name=None, which="best"):
    """Exports a finished training run's best (or last) weights, with their lineage.

    Args:
        run_dir: a finished run (`config.json`, `alphabet.json`, `model.keras`,
            and `metrics.json` for the card's figures).
        models_dir: the model repository; default `<run_dir>/export`.
        name: the model's name; default the run's preset name.
        which: `"best"` (the best validation's weights; the last if the run
            kept no best) or `"last"` (the final weights).

    Returns:
        Path of the new version directory.

    Raises:
        ValueError: the run directory is missing or incomplete, or `which` is unknown.
    """
    import keras

    import zoo  # noqa: F401  (registers CharLM and its layers for loading)

    run = RunDir(run_dir)
    missing = run.missing_for_export()
    if missing:
        raise ValueError(f"{run.path} is not a training run: {missing[0]} is missing")
    config, alphabet = run.config_values(), run.alphabet()
    metrics = run.metrics() or {}
    model = run.load_model()  # the final model; the best weights are loaded into it
    checkpoint = run.load_weights(model, which)
    # The figures of the weights exported: the best's, or the last's.
    figures = metrics.get("best") if checkpoint["which"] == "best" else metrics
    preset = config.get("preset") or config.get("model", {}).get("family", "model")
    card = {
        "name": name or preset,
        "preset": preset,
        "config": config,
        "parameters": model.count_params(),
        "normalize": alphabet.get("normalize"),
        "training_corpus": metrics.get("training_corpus") or {"name": metrics.get("corpus") or config.get("data")},
        "steps": metrics.get("steps"),
        "characters_seen": metrics.get("characters_seen"),
        "checkpoint": checkpoint,
        "valid_bpc": (figures or {}).get("valid_bpc"),
        "test_bpc": (figures or {}).get("test_bpc"),
        "fine_tuned_from": run.lineage(),
        "metrics": metrics,
        "run_dir": str(run.path.resolve()),
        "versions": {"charzoo": charzoo_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__},
    }
    return export_model(model, alphabet["alphabet"], card,
                        models_dir if models_dir is not None else run.exports, name or preset)


def charzoo_version():
    try:
        return importlib.metadata.version("charzoo")
    except importlib.metadata.PackageNotFoundError:
        return None  # run from a checkout that was never installed
