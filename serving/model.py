"""One exported model: load it, check requests against it, sample from it.

Needs only TensorFlow and the SavedModel written by `training.export`: the
model card (`assets/model.json`) gives the alphabet and whether the graph
normalises primes itself, the signatures do the rest.
"""

import json
import logging
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from serving.settings import Limits, SettingError, Settings, check_seed, check_settings, new_seed

# Characters per call of the export's `resume` signature when generating: between
# calls a request whose client has gone, or whose deadline passed, is dropped.
CHUNK = 256


class WithoutGradientWarnings(logging.Filter):
    """Drops TensorFlow's warning, one per function, that an export saved without
    custom gradients cannot be differentiated: serving never asks for gradients."""

    def filter(self, record):
        return "with ops with unsaved custom gradients" not in record.getMessage()


for _logger in ("absl", "tensorflow"):
    logging.getLogger(_logger).addFilter(WithoutGradientWarnings())


def bucket(rows):
    """The batch size to run `rows` rows at: the next power of two, so an XLA
    compiled export compiles for a few shapes only."""
    return 1 << max(rows - 1, 0).bit_length()


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


class ExportedModel:
    """A loaded export and its model card.

    Args:
        path: a version directory (with `saved_model.pb`), or a model
            directory whose newest version is loaded.
        name: str, the model's name; default its directory's name.

    Raises:
        ValueError: `path` holds no export, or its files cannot be read.
    """

    def __init__(self, path, name=None):
        self.path = find_version_dir(path)
        card_path = self.path / "assets" / "model.json"
        self.card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        self.name = name or self.path.parent.name
        self.version = version_of(self.path) or 0
        self.alphabet = self.card["alphabet"]
        self.normalize = self.card.get("normalize")
        # Exports made before the graph normalised primes itself take only the alphabet.
        self.takes_any_prime = bool(self.card.get("normalizes_primes"))
        try:
            check_variables(self.path)
            self._saved = tf.saved_model.load(str(self.path))
        except (tf.errors.OpError, OSError) as error:  # a bad copy, a checksum error, a missing file
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"cannot load {self.path}: {message}") from None
        self._generate = self._saved.signatures["generate"]
        self._start = self._saved.signatures["start"]
        self._resume = self._saved.signatures["resume"]

    def describe(self):
        """The public facts about the model, for listings."""
        card = self.card
        return {
            "name": self.name,
            "version": self.version,
            "family": card.get("family"),
            "preset": card.get("preset"),
            "alphabet": self.alphabet,
            "normalize": self.normalize,
            "state_size": card.get("state_size"),
            "created": card.get("created"),
            "metrics": {k: card.get(k) for k in ("valid_bpc", "test_bpc", "characters_seen")},
        }

    def prepare(self, prime, max_prime=None):
        """The prime, once it is known that the model can read it.

        A model that normalises primes in its graph (like text8, if it was
        trained so) reads any text; for the others any character outside the
        alphabet is an error.

        Raises:
            SettingError: the prime is too long, is not valid Unicode, or has characters
                outside the alphabet.
        """
        if max_prime is not None and len(prime) > max_prime:
            raise SettingError("prime", f"must be at most {max_prime} characters, got {len(prime)}")
        try:  # JSON may carry a lone surrogate such as \ud800; the graph takes UTF-8 only
            prime.encode("utf-8")
        except UnicodeEncodeError as error:
            raise SettingError("prime", f"is not valid Unicode text ({error.reason} at "
                                        f"character {error.start})") from None
        unknown = [] if self.takes_any_prime else sorted(set(prime) - set(self.alphabet))
        if unknown:
            raise SettingError(
                "prime", f"has characters outside the model's alphabet: {''.join(unknown)!r} "
                f"(alphabet: {self.alphabet!r})"
            )
        return prime

    def chunks(self, primes, length, temperatures, top_ks, top_ps, seeds, indices, chunk=CHUNK):
        """Generates for rows with their own settings (primes prepared, settings
        checked), yielding each row's next `chunk` characters as a list of str.

        The chunks join to the same text whatever `chunk` is, so a caller may
        stop between chunks at no cost to the rows that go on elsewhere.
        """
        rows = len(primes)
        pad = bucket(rows) - rows

        def column(values, dtype, filler):
            return tf.constant(np.asarray(list(values) + [filler] * pad, dtype=dtype))

        settings = {"temperature": column(temperatures, np.float32, 0.0),
                    "top_k": column(top_ks, np.int32, 0), "top_p": column(top_ps, np.float32, 1.0),
                    "seed": column(seeds, np.int64, 0), "index": column(indices, np.int32, 0)}
        primes = column(primes, object, " ")
        if length <= chunk:  # one call of `generate` costs ~1.5 ms less than `start` + `resume`
            if length > 0:
                out = self._generate(prime=primes, length=tf.constant(length), **settings)
                yield [t.decode("utf-8") for t in out["text"].numpy()[:rows]]
            return
        started = self._start(prime=primes)
        state, last = started["state"], started["last_ids"]
        for offset in range(0, length, chunk):
            out = self._resume(state=state, last_ids=last, length=tf.constant(min(chunk, length - offset)),
                               offset=tf.constant(offset), **settings)
            state, last = out["state"], out["last_ids"]
            yield [t.decode("utf-8") for t in out["text"].numpy()[:rows]]

    def check(self, prime, settings, seed, limits=Limits()):
        """The prime prepared, once every setting is known to be in range.

        Raises:
            SettingError: naming the first field out of range.
        """
        check_seed(seed)
        check_settings(settings, len(self.alphabet), limits)
        return self.prepare(prime, limits.max_prime)

    def chunks_of(self, prime, settings, seed, chunk=CHUNK):
        """`chunks` for `settings.num_samples` samples of one checked prime."""
        n = settings.num_samples
        return self.chunks([prime] * n, settings.length, [settings.temperature] * n,
                           [settings.top_k] * n, [settings.top_p] * n, [seed] * n, range(n), chunk)

    def sample(self, prime="", length=Settings.length, temperature=Settings.temperature,
               top_k=Settings.top_k, top_p=Settings.top_p, seed=0, num_samples=Settings.num_samples):
        """`num_samples` continuations of `prime` (sample `i` of `seed` each).

        Raises:
            SettingError: a setting is out of range or the prime cannot be read.
        """
        settings = Settings(length, temperature, top_k, top_p, num_samples)
        texts = [""] * num_samples
        for piece in self.chunks_of(self.check(prime, settings, seed), settings, seed):
            texts = [a + b for a, b in zip(texts, piece)]
        return texts


def sample(model_dir, prime="", length=Settings.length, temperature=Settings.temperature,
           top_k=Settings.top_k, top_p=Settings.top_p, seed=None, num_samples=Settings.num_samples):
    """Samples from an export; what `charzoo sample` runs.

    Args:
        model_dir: a version directory or a `<name>/` directory (newest version).
        seed: int, or None for a random one.

    Returns:
        (samples, seed): list of str, and the seed used.

    Raises:
        ValueError: no export at `model_dir`, a bad setting, or a prime that
            cannot be read.
    """
    seed = new_seed() if seed is None else int(seed)
    model = ExportedModel(model_dir)
    return model.sample(prime, length, temperature, top_k, top_p, seed, num_samples), seed
