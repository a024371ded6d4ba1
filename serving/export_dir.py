"""Exports on disk: version directories, model cards, variables, loading.

Needs only TensorFlow and the files `training.export` writes.
"""

import json
import logging
import re
from pathlib import Path

import tensorflow as tf

from serving.graph_identity import graph_digest


class WithoutGradientWarnings(logging.Filter):
    """Drops TensorFlow's warning, one per function, that an export saved without
    custom gradients cannot be differentiated: serving never asks for gradients."""

    def filter(self, record):
        return "with ops with unsaved custom gradients" not in record.getMessage()


for _logger in ("absl", "tensorflow"):
    logging.getLogger(_logger).addFilter(WithoutGradientWarnings())


def version_of(path):
    """The version number a directory's name spells, or None (`²` is a digit
    to `str.isdigit` but not a number to `int`)."""
    return int(path.name) if re.fullmatch(r"[0-9]+", path.name) else None


def find_version_dir(path):
    """`path` if it is an export, else the newest `<version>/` export inside it.

    Raises:
        ValueError: neither is an export.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted(
        (version_of(p), p) for p in path.glob("*")
        if version_of(p) is not None and (p / "saved_model.pb").is_file()
    ) if path.is_dir() else []
    if not versions:
        raise ValueError(f"{path} is neither an exported model nor a directory of versions")
    return versions[-1][1]


def check_variables(version_dir):
    """Reads every saved tensor, so that a corrupt export (a bad copy, a checksum
    error) fails here, before `tf.saved_model.load` builds its graphs: TensorFlow
    never frees those, ~60 MB per failed attempt for an LSTM-512."""
    prefix = version_dir / "variables" / "variables"
    if not prefix.with_suffix(".index").is_file():
        return  # a model without variables
    reader = tf.train.load_checkpoint(str(prefix))
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)


def read_card(version_dir):
    card_path = version_dir / "assets" / "model.json"
    return json.loads(card_path.read_text()) if card_path.is_file() else {}


def cannot_load(path, error):
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(f"cannot load {path}: {message}")


def read_export(path):
    """`(version_dir, model card, loaded SavedModel)` of an export (see `find_version_dir`).

    Raises:
        ValueError: `path` holds no export, or its files cannot be read.
    """
    path = find_version_dir(path)
    try:
        card = read_card(path)
        check_variables(path)
        saved = tf.saved_model.load(str(path))
    except (tf.errors.OpError, OSError, ValueError) as error:  # a bad copy, a checksum error, a missing file
        raise cannot_load(path, error) from None
    return path, card, saved


def digest_or_none(version_dir):
    """`graph_identity.graph_digest`, or None for an export it cannot read (then
    no other version is served through this one's graph)."""
    try:
        return graph_digest(version_dir)
    except Exception:  # noqa: BLE001  (an optimisation: never a reason not to serve)
        return None
