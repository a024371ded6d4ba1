"""Reading a run directory back: its config, alphabet and newest weights."""

import json
from pathlib import Path

import tensorflow as tf

from training.config import Config
from zoo.models import CharLM


def build_model(config, vocabulary_size):
    return CharLM(vocabulary_size=vocabulary_size, name=config.preset.replace("-", "_"),
                  **config.model)


def has_checkpoint(run_dir):
    """Whether a run directory holds a checkpoint to resume from."""
    return tf.train.latest_checkpoint(str(Path(run_dir) / "checkpoints")) is not None


def load_run_model(run_dir):
    """(config, alphabet, model) of a run, with the newest checkpoint's weights."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    config = Config.from_json((run_dir / "config.json").read_text())
    alphabet = json.loads((run_dir / "alphabet.json").read_text())["alphabet"]
    model = build_model(config, len(alphabet))
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if latest is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return config, alphabet, model
