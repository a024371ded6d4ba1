"""Mirrored training on two logical CPUs against one device; prints the differences as JSON.

Run in its own process by tests/test_distribute.py: the logical devices must be
set before TensorFlow initialises its devices.
"""

import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

from training import config as configuration  # noqa: E402 - after the device set-up
from training import data  # noqa: E402
from training.batches import Windows  # noqa: E402
from training.distribute import DistributedTrainer, make_strategy  # noqa: E402
from training.run_dir import build_model, load_run_model  # noqa: E402
from training.loop import train  # noqa: E402
from training.step import Trainer, make_optimizer, set_seed  # noqa: E402

STEPS = 4


def build(config, strategy=None):
    set_seed(config.seed)  # the same initial weights for both
    if strategy is None:
        model = build_model(config, 27)
        return Trainer(model, make_optimizer(config), config.clip_norm)
    with strategy.scope():
        model = build_model(config, 27)
        return DistributedTrainer(strategy, model, make_optimizer(config), config.clip_norm)


def run(trainer, windows, batch_size):
    state = trainer.model.initial_state(batch_size)
    outs = []
    for index in range(STEPS):
        out = trainer.train_step(*windows[index], state)
        state = out["state"]
        outs.append(out)
    return outs


def max_difference(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


def compare(strategy, preset, overrides):
    config = configuration.resolve(preset, {"model": {"units": 8}, "batch_size": 4, "unrollings": 8,
                                            **overrides})
    ids = np.random.default_rng(0).integers(0, 27, 4 * 8 * STEPS + 1).astype(np.uint8)
    windows = Windows(ids, config.batch_size, config.unrollings)
    single, mirrored = build(config), build(config, strategy)
    initial = max_difference(single.model.get_weights(), mirrored.model.get_weights())
    ones, twos = run(single, windows, 4), run(mirrored, windows, 4)
    replica_weights = [strategy.experimental_local_results(v.value)
                       for v in mirrored.model.trainable_variables]
    return {
        "initial": initial,
        "weights": max_difference(single.model.get_weights(), mirrored.model.get_weights()),
        "replicas_apart": max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in replica_weights),
        "state": max_difference([o["state"] for o in ones], [o["state"] for o in twos]),
        "loss": max_difference([o["loss"] for o in ones], [o["loss"] for o in twos]),
        "grad_norm": max_difference([o["grad_norm"] for o in ones], [o["grad_norm"] for o in twos]),
        "clipped": [bool(o["clipped"]) for o in twos],
        "iterations": int(mirrored.optimizer.iterations.numpy()),
    }


def non_finite(strategy):
    """A NaN in replica 1's streams: no update anywhere, the old state kept."""
    config = configuration.resolve("arch1", {"model": {"units": 8}})
    trainer = build(config, strategy)
    before = trainer.model.get_weights()
    state = np.zeros((4, trainer.model.state_size), np.float32)
    state[3, 0] = np.nan
    ids = np.zeros((4, 8), np.int32)
    out = trainer.train_step(ids, ids, state)
    return {
        "finite": bool(out["finite"]),
        "weights": max_difference(before, trainer.model.get_weights()),
        "state_kept": bool(np.array_equal(np.asarray(out["state"]), state, equal_nan=True)),
        "iterations": int(trainer.optimizer.iterations.numpy()),
    }


def indivisible(strategy):
    trainer = build(configuration.resolve("arch1", {"model": {"units": 8}}), strategy)
    ids = np.zeros((3, 8), np.int32)
    try:
        trainer.train_step(ids, ids, trainer.model.initial_state(3))
    except ValueError as error:
        return str(error)
    return None


def runs():
    """train() mirrored, stopped and resumed, against train() on one device straight through."""
    words = np.random.default_rng(0).choice("the quick brown fox jumps over a lazy dog".split(), 3000)
    corpus = data.corpus_from_text("words", " ".join(words), "text8")
    settings = {"model": {"units": 8}, "batch_size": 4, "unrollings": 8, "optimizer": "adam",
                "learning_rate": 0.02, "eval_every": 1000, "checkpoint_every": 1000,
                "eval_characters": 2000, "sample_length": 5, "export": False,
                "steps_per_execution": 3,  # calls of 3 steps: 0-3-6, resumed 6-9-12
                "weight_average": 0.9}  # the moving average, too, is mirrored and resumed
    # stdout is for the JSON result only.
    with tempfile.TemporaryDirectory() as directory, contextlib.redirect_stdout(sys.stderr):
        directory = Path(directory)
        single = train(configuration.resolve("arch1", {**settings, "steps": 12}), directory / "one", corpus)
        for steps in (6, 12):
            mirrored = train(configuration.resolve("arch1", {**settings, "steps": steps,
                                                             "strategy": "mirrored"}),
                             directory / "two", corpus)
        weights = [load_run_model(directory / name)[2].get_weights() for name in ("one", "two")]
    return {"weights": max_difference(*weights), "steps": mirrored["steps"],
            "valid_bpc": abs(single["valid_bpc"] - mirrored["valid_bpc"])}


def main():
    strategy = make_strategy("mirrored")
    results = {
        "replicas": strategy.num_replicas_in_sync,
        "adam_arch1": compare(strategy, "arch1", {"optimizer": "adam", "learning_rate": 0.02}),
        "adam_lstm": compare(strategy, "lstm", {"optimizer": "adam", "learning_rate": 0.02}),
        # Each replica draws its own dropout masks: the numbers differ from one device's.
        "dropout_lstm": compare(strategy, "lstm-dropout", {"optimizer": "adam", "learning_rate": 0.02}),
        # SGD moves by the gradient itself, so a gradient counted twice would show...
        "sgd": compare(strategy, "arch1", {"optimizer": "sgd", "learning_rate": 0.5, "clip_norm": 1e9}),
        # ...and so would clipping by any other norm than that of the summed gradient.
        "sgd_clipped": compare(strategy, "arch1", {"optimizer": "sgd", "learning_rate": 1.0,
                                                   "clip_norm": 0.001}),
        "non_finite": non_finite(strategy),
        "indivisible": indivisible(strategy),
        "runs": runs(),
    }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
