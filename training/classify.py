"""A classifier's run: train, evaluate, predict (`charzoo classify ...`).

A run directory holds `config.json`, `classes.json` (classes and alphabet),
`best.weights.h5` (the best validation's weights), `model.keras` and
`metrics.json` (a finished run), `logs/` (TensorBoard) and `export/`.
"""

import dataclasses
import json
import time
import typing
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training import labelled
from training.config import checked_type
from training.export import export_classifier
from training.step import cross_entropy, make_optimizer
from training.tensorboard import confusion_image
from zoo import presets


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    preset: str  # a classifier preset of zoo.presets (CLASSIFIERS)
    model: dict  # CharClassifier arguments, the preset's after overrides
    data: str  # a directory of <class>.txt files, one example per line
    batch_size: int = 64  # strings per step
    optimizer: str = "adam"  # one of training.config.OPTIMIZERS
    learning_rate: float = 3e-3  # initial rate of the ExponentialDecay schedule
    decay_rate: float = 0.5  # the rate is multiplied by this every decay_steps steps
    decay_steps: int = 10_000  # steps per decay period
    staircase: bool = False  # decay in whole periods (True) or smoothly (False)
    clip_norm: float = 5.0  # gradients are clipped to this global norm
    max_time: float | None = 120.0  # seconds of training, validations included; None: epochs
    epochs: float | None = None  # passes over the training split (None: max_time only)
    balanced: bool = False  # draw each example's class uniformly, not by class size
    eval_every_seconds: float = 10.0  # seconds between validations; the best is kept
    seed: int = 0  # the split, the initial weights and the order of batches
    export: bool = True  # write a SavedModel with a `classify` signature to <run>/export


FIELD_TYPES = typing.get_type_hints(ClassifierConfig)
SETTABLE = tuple(name for name in FIELD_TYPES if name not in ("preset", "model", "data"))


def resolve(preset, data, overrides=None):
    """A checked ClassifierConfig from a preset, a data directory and typed overrides."""
    overrides = dict(overrides or {})
    model = {**presets.get_classifier(preset)["model"], **overrides.pop("model", {})}
    unknown = sorted(set(model) - set(presets.CLASSIFIER_ARGUMENTS))
    if unknown:
        raise ValueError(f"unknown classifier argument(s): {', '.join(unknown)}; "
                         f"valid: {', '.join(presets.CLASSIFIER_ARGUMENTS)}")
    for key, value in overrides.items():
        if key not in SETTABLE:
            raise ValueError(f"--set {key}: unknown setting; valid: {', '.join(SETTABLE)}")
        overrides[key] = checked_type(key, value, FIELD_TYPES[key])
    config = ClassifierConfig(preset=preset.lower(), model=model, data=str(data), **overrides)
    if not (config.max_time or config.epochs):
        raise ValueError("a classifier run needs a limit: max_time or epochs")
    # max_time and epochs may be None. NaN would never run out, 0 or less would not train,
    # and clipping to inf gives NaN.
    for name in ("batch_size", "learning_rate", "clip_norm", "decay_rate", "decay_steps",
                 "eval_every_seconds", "max_time", "epochs"):
        value = getattr(config, name)
        if value is not None and not 0 < value < float("inf"):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    return config


def build(config, data):
    return presets.build_classifier(config.preset, vocabulary_size=len(data.alphabet) + 2,
                                    num_classes=len(data.classes), **config.model)


class ClassifierTrainer:
    """The custom train step of a classifier (global-norm clip, decaying rate)."""

    def __init__(self, model, config):
        self.model, self.clip_norm = model, config.clip_norm
        self.optimizer = make_optimizer(config)
        self.optimizer.build(model.trainable_variables)
        ids, labels = tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)
        self.train_step = tf.function(self._train_step, input_signature=[ids, labels])
        self.logits = tf.function(lambda ids: model(ids, training=False), input_signature=[ids])

    def _train_step(self, ids, labels):
        with tf.GradientTape() as tape:
            logits = self.model(ids, training=True)
            loss = cross_entropy(logits, labels)
        gradients = tape.gradient(loss, self.model.trainable_variables)
        gradients = [tf.convert_to_tensor(g) for g in gradients]  # the embedding's slices
        norm = tf.linalg.global_norm(gradients)
        clipped, _ = tf.clip_by_global_norm(gradients, self.clip_norm, use_norm=norm)
        self.optimizer.apply_gradients(zip(clipped, self.model.trainable_variables))
        correct = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == labels, tf.float32)
        return loss, norm, tf.reduce_mean(correct)


def evaluate(logits_of, split, index, num_classes, chunk=512):
    """Accuracy, mean loss and the confusion matrix over a `labelled.Labelled` split;
    `logits_of(ids)` is the model at inference."""
    predictions, losses = [], []
    for start in range(0, len(split.texts), chunk):
        logits = logits_of(labelled.encode(split.texts[start:start + chunk], index))
        labels = split.labels[start:start + chunk]
        losses.append(float(cross_entropy(logits, labels)) * len(labels))
        predictions.append(np.argmax(logits, -1))
    predictions = np.concatenate(predictions)
    confusion = labelled.confusion(split.labels, predictions, num_classes)
    return {"accuracy": float(np.mean(predictions == split.labels)),
            "balanced_accuracy": balanced_accuracy(confusion),
            "loss": sum(losses) / len(split.labels),
            "confusion": confusion.tolist()}


def balanced_accuracy(confusion):
    """The mean over classes of each class's recall (classes absent from the split skipped):
    what `--balanced` sampling trades plain accuracy for."""
    totals = confusion.sum(axis=1)
    present = totals > 0
    return float(np.mean(np.diag(confusion)[present] / totals[present]))


def check_new_run(run):
    if (run / "metrics.json").exists():
        raise ValueError(f"{run} holds a finished classifier run; evaluate it with `charzoo "
                         "classify eval`, or train into another --run-dir")
    if run.exists() and any(run.iterdir()):
        raise ValueError(f"{run} is not empty (an interrupted run?); classifier runs do not "
                         "resume: delete it or choose another --run-dir")


def train(config, run_dir, log=print):
    """Trains, keeps the best validation's weights, evaluates them and exports; returns metrics."""
    run = Path(run_dir)
    check_new_run(run)
    data = labelled.load(config.data, config.seed)
    log(f"charzoo: training classifier {config.preset} into {run}: {len(data.classes)} classes, "
        f"{len(data.train.texts):,} training examples")
    keras.utils.set_random_seed(config.seed)
    model = build(config, data)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    (run / "classes.json").write_text(json.dumps({"classes": data.classes, "alphabet": data.alphabet,
                                                  "data": data.name}, indent=2))
    trainer, index = ClassifierTrainer(model, config), data.index()
    writers = {name: tf.summary.create_file_writer(str(run / "logs" / name)) for name in ("train", "validation")}
    batches = labelled.batches(data, min(config.batch_size, len(data.train.texts)),
                               np.random.default_rng(config.seed), config.balanced)
    steps_per_epoch = max(len(data.train.texts) // config.batch_size, 1)
    target = int(config.epochs * steps_per_epoch) if config.epochs else None
    started = time.monotonic()
    next_validation, best, step, recent = started + config.eval_every_seconds, None, 0, []

    def validate():
        nonlocal best
        result = evaluate(trainer.logits, data.valid, index, len(data.classes))
        with writers["validation"].as_default(step=step):
            tf.summary.scalar("accuracy", result["accuracy"])
            tf.summary.scalar("loss", result["loss"])
        if best is None or result["accuracy"] > best["accuracy"]:
            best = {"step": step, "accuracy": result["accuracy"]}
            model.save_weights(run / "best.weights.h5")
        log(f"step {step:,}  loss {np.mean(recent or [0]):.3f}  valid accuracy "
            f"{result['accuracy']:.3f}  {time.monotonic() - started:,.0f} s")

    while True:
        ids, labels = next(batches)
        loss, norm, accuracy = trainer.train_step(ids, labels)
        step += 1
        recent.append(float(loss))
        if step % 50 == 0:
            with writers["train"].as_default(step=step):
                tf.summary.scalar("loss", float(np.mean(recent)))
                tf.summary.scalar("batch_accuracy", float(accuracy))
                tf.summary.scalar("grad_norm", float(norm))
                tf.summary.scalar("learning_rate", float(trainer.optimizer.learning_rate))
            recent = []
        elapsed = time.monotonic() - started
        done = (target and step >= target) or (config.max_time and elapsed >= config.max_time)
        if done or time.monotonic() >= next_validation:
            validate()
            next_validation = time.monotonic() + config.eval_every_seconds
        if done:
            break
    model.load_weights(run / "best.weights.h5")
    model.save(run / "model.keras")
    metrics = {"steps": step, "seconds": time.monotonic() - started, "best_step": best["step"],
               "classes": list(data.classes), "examples": {"train": len(data.train.texts),
                                                           "valid": len(data.valid.texts),
                                                           "test": len(data.test.texts)},
               **{split: evaluate(trainer.logits, getattr(data, split), index, len(data.classes))
                  for split in ("valid", "test")}}
    metrics["majority"] = float(np.bincount(data.test.labels).max() / len(data.test.labels))
    with writers["validation"].as_default(step=step):
        tf.summary.image("test_confusion", confusion_image(np.array(metrics["test"]["confusion"]))[None])
    for writer in writers.values():
        writer.close()
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if config.export:
        card = {"preset": config.preset, "config": dataclasses.asdict(config),
                "test_accuracy": metrics["test"]["accuracy"], "valid_accuracy": metrics["valid"]["accuracy"],
                "training_data": data.name, "run_dir": str(run.resolve())}
        metrics["export"] = str(export_classifier(model, data.alphabet, data.classes, card,
                                                  run / "export", config.preset))
    return metrics


def load_run(run_dir):
    """`(model, classes, alphabet, config)` of a finished classifier run."""
    import zoo  # noqa: F401  (registers the classifier's layers for loading)

    run = Path(run_dir)
    for name in ("config.json", "classes.json", "model.keras"):
        if not (run / name).is_file():
            raise ValueError(f"{run} is not a finished classifier run: {name} is missing")
    record = json.loads((run / "classes.json").read_text())
    config = json.loads((run / "config.json").read_text())
    try:
        model = keras.models.load_model(run / "model.keras")
    except (ValueError, TypeError, OSError) as error:
        raise ValueError(f"cannot load {run / 'model.keras'}: {str(error).splitlines()[0]}") from None
    return model, record["classes"], record["alphabet"], config


def evaluate_run(run_dir, split="test", data=None):
    """Accuracy, loss and confusion of a finished run on its own data's `split`."""
    model, classes, alphabet, config = load_run(run_dir)
    data = data or config["data"]
    loaded = labelled.load(data, config["seed"])
    if list(loaded.classes) != list(classes):
        raise ValueError(f"{data} has classes {', '.join(loaded.classes)}; the run was trained on "
                         f"{', '.join(classes)}")
    index = {char: i + 2 for i, char in enumerate(alphabet)}
    logits_of = tf.function(lambda ids: model(ids, training=False),
                            input_signature=[tf.TensorSpec([None, None], tf.int32)])
    return {"classes": classes, "split": split,
            **evaluate(logits_of, getattr(loaded, split), index, len(classes))}


def predict(run_dir, texts, top=3):
    """For each text, its `top` classes and probabilities, most likely first."""
    model, classes, alphabet, _ = load_run(run_dir)
    index = {char: i + 2 for i, char in enumerate(alphabet)}
    probabilities = tf.nn.softmax(model(labelled.encode(texts, index), training=False)).numpy()
    order = np.argsort(-probabilities, axis=-1)[:, :top]
    return [[(classes[i], float(row[i])) for i in best] for row, best in zip(probabilities, order)]
