"""Starting a run from the weights of another run or export (`charzoo train --init-from`).

Only the weights come along: the optimizer, the data cursor, the carried state
and the schedule start afresh, as for a new run, unless `--init-optimizer` asks
to carry a source run's optimizer (its moments and step count) too. The new corpus is read in the
source's alphabet, so its ids mean what they meant to the source model.
"""

import dataclasses
import json
from pathlib import Path

import tensorflow as tf

from training.run_dir import RunDir, RunDirError, first_line


@dataclasses.dataclass(frozen=True)
class Source:
    """A run directory or an export whose weights a new run starts from."""

    path: Path  # the run directory, or the export's version directory
    kind: str  # "run" or "export"
    alphabet: str  # the source's characters, id i is alphabet[i]
    normalize: str | None  # how the source's corpus was normalised
    preset: str | None
    model: dict  # the source's CharLM arguments
    facts: dict  # what the new run records about where it started


def latest_export(path):
    """`path` if it is a SavedModel, else its newest integer-named version, else None."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = [p for p in path.glob("*") if p.name.isdigit() and (p / "saved_model.pb").is_file()]
    return max(versions, key=lambda p: int(p.name), default=None)


def find_source(path):
    """The `Source` at `path`: a run directory (with config.json) or an export.

    Raises:
        RunDirError: neither, or its files cannot be read.
    """
    run = RunDir(path)
    if run.has_config():
        config, record, metrics = run.config_values(), run.alphabet(), run.metrics() or {}
        facts = {"path": str(run.path.resolve()), "kind": "run", "preset": config.get("preset"),
                 "steps": metrics.get("steps"), "valid_bpc": metrics.get("valid_bpc"),
                 "training_corpus": metrics.get("training_corpus")}
        return Source(run.path, "run", record["alphabet"], record.get("normalize"), config.get("preset"),
                      config.get("model", {}), facts)
    export = latest_export(path)
    card_path = export / "assets" / "model.json" if export else None
    if card_path is None or not card_path.is_file():
        raise RunDirError(f"--init-from {path}: neither a run directory (config.json) nor an export "
                          "with a model card (MODELS/NAME[/VERSION])")
    card = json.loads(card_path.read_text())
    facts = {"path": str(export.resolve()), "kind": "export", "preset": card.get("preset"),
             "steps": card.get("steps"), "valid_bpc": card.get("valid_bpc"),
             "training_corpus": card.get("training_corpus"), "checkpoint": card.get("checkpoint")}
    return Source(export, "export", card["alphabet"], card.get("normalize"), card.get("preset"),
                  card.get("config", {}).get("model", {}), facts)


def load_weights(source, model):
    """Loads the source's weights into `model`; returns the facts the run records.

    Raises:
        RunDirError: the weights do not fit `model`.
    """
    if source.kind == "run":
        checkpoint = RunDir(source.path).load_weights(model, "best")
        return {**source.facts, "checkpoint": checkpoint}
    # An export's variables are a checkpoint of its root object, whose `model` is the CharLM.
    try:
        status = tf.train.Checkpoint(model=model).read(str(source.path / "variables" / "variables"))
        status.expect_partial().assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as error:
        raise RunDirError(f"the weights of {source.path} do not fit this model ({first_line(error)})") from None
    return source.facts


def load_optimizer(source, model, optimizer, optimizer_name):
    """Loads the source run's last checkpoint into `model` and `optimizer`; returns
    the facts the run records.

    The weights come from the same checkpoint as the optimizer's moments (they
    were accumulated for those weights), and its step count comes along, so the
    learning-rate schedule continues from it.

    Raises:
        RunDirError: the source is an export, uses another optimizer, or has no
            readable checkpoint that fits.
    """
    if source.kind != "run":
        raise RunDirError(f"--init-optimizer: {source.path} is an export, which keeps no optimizer; "
                          "give the run directory it was exported from")
    run = RunDir(source.path)
    theirs = run.config_values().get("optimizer")
    if theirs != optimizer_name:
        raise RunDirError(f"--init-optimizer: {source.path} trained with {theirs}, this run with "
                          f"{optimizer_name}; --set optimizer={theirs} or leave the optimizer behind")
    averaged = run.config_values().get("weight_average")
    if bool(averaged) != bool(optimizer.use_ema):  # the average is one of the optimizer's variables
        raise RunDirError(f"--init-optimizer: {source.path} trained "
                          f"{'with' if averaged else 'without'} a moving average of its weights, "
                          f"this run {'without' if averaged else 'with'}; --set weight_average="
                          f"{averaged or 'none'} or leave the optimizer behind")
    try:
        restored = run.checkpoints(1, model=model, optimizer=optimizer).restore()
    except RunDirError as error:
        raise RunDirError(f"--init-optimizer: {error}") from None
    if restored is None:
        raise RunDirError(f"--init-optimizer: {source.path} has no readable checkpoint")
    step = int(restored.rsplit("-", 1)[-1])  # checkpoints are numbered by step
    return {**source.facts, "checkpoint": {"which": "last", "step": step, "optimizer": True}}


def check_model(source, preset, model_arguments):
    """Raises RunDirError unless the new run's preset and model are the source's."""
    if source.preset and source.preset != preset:
        raise RunDirError(f"--init-from {source.path}: it is a {source.preset} model; fine-tune it "
                          f"as `charzoo train {source.preset} --init-from ...`, not as {preset}")
    if source.model and source.model != model_arguments:
        changed = sorted(k for k in set(source.model) | set(model_arguments)
                         if source.model.get(k) != model_arguments.get(k))
        raise RunDirError(
            f"--init-from {source.path}: its model differs from this run's in "
            + ", ".join(f"{k} ({source.model.get(k)!r} there, {model_arguments.get(k)!r} here)" for k in changed)
            + "; train the source's preset with its model settings")
