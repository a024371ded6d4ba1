"""A run directory, and the only code that reads or writes its files.

    config.json     the run's Config             alphabet.json  its corpus's alphabet
    fine_tuned_from.json  the run or export whose weights it started from (--init-from)
    checkpoints/    weights, optimizer, cursor   metrics.json   final metrics (a finished run)
    best/           the weights of the best validation so far, and best.json saying which
    model.keras     the final model              logs/          TensorBoard (written by tensorboard.py)
    export/         SavedModels (written by export.py)
"""

import json
import warnings
from pathlib import Path

import keras
import tensorflow as tf

from training.config import Config
from training.step import keeps_average, make_optimizer
from zoo import presets

# What a resumed run cannot change: its checkpoints hold weights, optimizer slots,
# carried state and a cursor of these shapes and this corpus. Limits, schedules,
# logging and export settings may change.
FIXED = ("preset", "model", "batch_size", "unrollings", "optimizer", "data", "normalize", "init_from",
         "init_optimizer", "weight_average")


class RunDirError(ValueError):
    """A run directory cannot be used as asked; the message says why and what to do."""


class CheckpointMismatch(RunDirError):
    """A readable checkpoint that does not fit the run's model, optimizer or state."""


def build_model(config, vocabulary_size):
    """The run's model, freshly initialised: its preset built with the run's model arguments."""
    return presets.build(config.preset, vocabulary_size, **config.model)


def alphabet_record(corpus):
    return {"alphabet": corpus.alphabet, "normalize": corpus.normalize}


def read_json(path):
    """A run file's contents; RunDirError naming the file if it is not JSON (edited by hand, cut short)."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path} is not valid JSON ({error}); restore it or start a new run") from None


def write_json(path, value):
    """Writes through a temporary file, so a reader never sees half a file."""
    temporary = Path(f"{path}.tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True))
    temporary.replace(path)


class RunDir:
    """The files of one training run (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        self.checkpoint_dir = self.path / "checkpoints"
        self.best_dir = self.path / "best"
        self.logs = self.path / "logs"
        self.exports = self.path / "export"

    def create(self):
        """Creates the directory and its checkpoints', or says which path is impossible."""
        for path in (self.path, self.checkpoint_dir):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise RunDirError(f"cannot create {path}: {error.strerror or error}") from None
        if self.logs.exists() and not self.logs.is_dir():
            raise RunDirError(f"cannot write TensorBoard logs: {self.logs} is not a directory")

    def has_config(self):
        return (self.path / "config.json").is_file()

    def has_checkpoint(self):
        """Whether there is a checkpoint to resume from."""
        return tf.train.latest_checkpoint(str(self.checkpoint_dir)) is not None

    def config_values(self):
        """config.json as a dict of Config fields."""
        if not self.has_config():
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.json)")
        return read_json(self.path / "config.json")

    def config(self):
        return Config(**self.config_values())

    def write_config(self, config):
        write_json(self.path / "config.json", json.loads(config.to_json()))

    def alphabet(self):
        """`{"alphabet": str, "normalize": "text8" or None}`."""
        return read_json(self.path / "alphabet.json")

    def write_alphabet(self, corpus):
        write_json(self.path / "alphabet.json", alphabet_record(corpus))

    def has_alphabet(self):
        return (self.path / "alphabet.json").is_file()

    def lineage(self):
        """Where the run's first weights came from (`--init-from`), or None."""
        path = self.path / "fine_tuned_from.json"
        return read_json(path) if path.is_file() else None

    def write_lineage(self, facts):
        write_json(self.path / "fine_tuned_from.json", facts)

    def metrics(self):
        """The final metrics of a finished run, or None."""
        path = self.path / "metrics.json"
        return read_json(path) if path.is_file() else None

    def write_metrics(self, metrics):
        write_json(self.path / "metrics.json", metrics)

    def save_model(self, model):
        model.save(self.path / "model.keras")

    def load_model(self):
        """The final model (needs `zoo` imported, which registers its classes)."""
        return keras.models.load_model(self.path / "model.keras")

    def missing_for_export(self):
        return [name for name in ("config.json", "alphabet.json", "model.keras")
                if not (self.path / name).is_file()]

    def resume_conflicts(self, config, corpus):
        """What `config` and `corpus` would change that a resumed run cannot (empty if none)."""
        if not (self.has_config() and self.has_checkpoint()):
            return []
        old, new = self.config_values(), json.loads(config.to_json())
        changes = [f"{key} {old.get(key)!r} -> {new[key]!r}" for key in FIXED if old.get(key) != new[key]]
        if (self.path / "alphabet.json").exists() and self.alphabet() != alphabet_record(corpus):
            changes.append("the corpus's alphabet")
        return changes

    def checkpoints(self, keep, **objects):
        return Checkpoints(self.checkpoint_dir, keep, **objects)

    def best(self, model):
        return BestCheckpoint(self.best_dir, model)

    def load_weights(self, model, which="best"):
        """Loads the weights `export` and `--init-from` mean into `model`; returns
        `{"which": "best" | "last", "step": int or None}`.

        `"best"` is the best validation's checkpoint, or the final model if the
        run has none (runs made before best checkpoints were kept); `"last"` the
        final model (`model.keras`).

        Raises:
            RunDirError: `which` is unknown, or the weights do not fit `model`.
        """
        if which not in ("best", "last"):
            raise RunDirError(f"unknown checkpoint {which!r}; valid choices are: 'best', 'last'")
        record = self.best(model).record() if which == "best" else None
        metrics = self.metrics() or {}
        if record is None and not (self.path / "model.keras").is_file():
            raise RunDirError(f"{self.path} has no weights to use yet: neither a best checkpoint "
                              "nor a final model.keras")
        try:
            if record:
                self.best(model).restore()
                return {"which": "best", "step": record["step"]}
            model.set_weights(self.load_model().get_weights())
        except (ValueError, tf.errors.OpError) as error:
            raise RunDirError(f"the weights of {self.path} do not fit this model "
                              f"({first_line(error)})") from None
        return {"which": "last", "step": metrics.get("steps")}


def dropout_seed_states(model):
    """The variables of `model`'s dropout random generators (Keras `SeedGenerator`s)."""
    return [variable for variable in model.variables if variable.path.endswith("seed_generator_state")]


class Checkpoints:
    """The last `keep` checkpoints of a run's `objects` (TF trackables).

    `tf.train.CheckpointManager` writes each checkpoint's files under temporary
    names and renames them, then rewrites its index atomically, so a save cut
    short is never listed. A listed checkpoint whose files cannot be read
    (missing, truncated, a checksum error) is reported and the one before it
    is tried; one that reads but does not fit (another batch size, another
    model) stops the run, since every older one would not fit either and
    starting afresh would overwrite them.
    """

    # Objects added after runs were first written: a checkpoint without them still restores.
    OPTIONAL = ("training_seconds", "dropout_seeds")

    def __init__(self, directory, keep, **objects):
        if "model" in objects:
            # Keras keeps dropout's random state in variables its layers do not track for
            # tf.train.Checkpoint; without them a resumed run would draw other masks.
            objects["dropout_seeds"] = dropout_seed_states(objects["model"])
        self.objects = objects
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=keep)

    def readable_part(self, path):
        """The checkpoint object for what `path` holds: all objects, less optional ones it lacks."""
        saved = {name.split("/")[0] for name, _ in tf.train.list_variables(path)}
        missing = [name for name in self.OPTIONAL if name in self.objects and name not in saved]
        if not missing:
            return self.checkpoint
        return tf.train.Checkpoint(**{k: v for k, v in self.objects.items() if k not in missing})

    def save(self, step):
        return self.manager.save(checkpoint_number=step)

    def restore(self):
        """Restores the newest readable checkpoint; returns its path, or None if there is none.

        Raises:
            CheckpointMismatch: the newest readable checkpoint does not fit the objects.
        """
        for path in reversed(self.manager.checkpoints):
            try:
                checkpoint = self.readable_part(path)
            except Exception as error:  # noqa: BLE001  (missing or unreadable index)
                warnings.warn(f"checkpoint {path} is unreadable ({first_line(error)}); "
                              "trying the one before")
                continue
            try:
                checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
                return path
            except (ValueError, AssertionError) as error:  # read, but of other shapes or objects
                raise CheckpointMismatch(
                    f"checkpoint {path} does not fit this run ({first_line(error)}); was its "
                    "configuration changed? Nothing was overwritten") from None
            except Exception as error:  # noqa: BLE001  (missing, truncated, bad checksums: all unreadable)
                warnings.warn(f"checkpoint {path} is unreadable ({first_line(error)}); "
                              "trying the one before")
        return None


class BestCheckpoint:
    """The model weights of a run's best validation so far, with `best.json` naming
    the step and its validation BPC (kept apart from the last checkpoints, which
    roll over)."""

    def __init__(self, directory, model):
        self.directory = Path(directory)
        self.checkpoint = tf.train.Checkpoint(model=model)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=1)

    def record(self):
        """`{"step", "valid_bpc"}` of the best checkpoint, or None."""
        path = self.directory / "best.json"
        return read_json(path) if path.is_file() and self.manager.latest_checkpoint else None

    def offer(self, step, valid_bpc):
        """Saves the model if `valid_bpc` is the best yet; returns whether it was."""
        record = self.record()
        if record is not None and record["valid_bpc"] <= valid_bpc:
            return False
        self.save(step, valid_bpc)
        return True

    def save(self, step, valid_bpc):
        self.manager.save(checkpoint_number=step)
        self.write_record(step, valid_bpc)

    def write_record(self, step, valid_bpc):
        write_json(self.directory / "best.json", {"step": step, "valid_bpc": valid_bpc})

    def restore(self):
        self.checkpoint.restore(self.manager.latest_checkpoint).expect_partial().assert_existing_objects_matched()


def first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_run_model(path):
    """(config, alphabet, model) of a run, with the newest readable checkpoint's weights,
    or their moving average where the run keeps one (the weights its validations score).

    Raises:
        FileNotFoundError: not a run, or no readable checkpoint.
        RunDirError: a run file is not JSON, or the checkpoint does not fit the model.
    """
    run = RunDir(path)
    config = run.config()
    alphabet = run.alphabet()["alphabet"]
    model = build_model(config, len(alphabet))
    optimizer = make_optimizer(config)
    optimizer.build(model.trainable_variables)  # the average is one of its variables
    if run.checkpoints(config.keep_checkpoints, model=model, optimizer=optimizer).restore() is None:
        raise FileNotFoundError(f"{run.path} has no readable checkpoint")
    if keeps_average(optimizer):
        optimizer.finalize_variable_values(model.trainable_variables)
    return config, alphabet, model
