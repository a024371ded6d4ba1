"""Reading a run directory back: its config, alphabet and newest weights."""

import json
from pathlib import Path

import tensorflow as tf

from training.checkpoints import CheckpointMismatch, Checkpoints
from training.config import Config
from zoo.models import CharLM


def build_model(config, vocabulary_size):
    return CharLM(vocabulary_size=vocabulary_size, name=config.preset.replace("-", "_"),
                  **config.model)


def has_checkpoint(run_dir):
    """Whether a run directory holds a checkpoint to resume from."""
    return tf.train.latest_checkpoint(str(Path(run_dir) / "checkpoints")) is not None


def read_json(path):
    """A run file's contents; ValueError naming the file if it is not JSON (edited by hand, cut short)."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore it or start a new run") from None


def load_run_model(run_dir):
    """(config, alphabet, model) of a run, with the newest readable checkpoint's weights.

    Raises:
        FileNotFoundError: not a run, or no readable checkpoint.
        ValueError: a run file is not JSON, or the checkpoint does not fit the model.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    config = Config(**read_json(run_dir / "config.json"))
    alphabet = read_json(run_dir / "alphabet.json")["alphabet"]
    model = build_model(config, len(alphabet))
    try:
        restored = Checkpoints(run_dir / "checkpoints", config.keep_checkpoints, model=model).restore()
    except CheckpointMismatch as error:
        raise ValueError(str(error)) from None
    if restored is None:
        raise FileNotFoundError(f"{run_dir} has no readable checkpoint")
    return config, alphabet, model
