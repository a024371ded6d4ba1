"""One exported model: load it, check requests, sample from it.

Needs only TensorFlow and the SavedModel written by `training.export`: the
model card (`assets/model.json`) gives the alphabet and how to normalise
primes, the signatures do the rest.
"""

import json
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DEFAULTS = {"length": 200, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "num_samples": 1}


def normalize_text8(text, alphabet):
    """Maps text to text8's conventions: lowercase, digits as words, one space
    for every run of other characters."""
    text = text.lower()
    text = re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text)
    text = "".join(c if c in alphabet else " " for c in text)
    return re.sub(" +", " ", text)


def check_settings(length, temperature, top_k, top_p, num_samples, max_length=None, max_samples=None):
    """Raises ValueError, naming the field, if a sampling setting is out of range."""
    longest = max_length if max_length is not None else 2**31 - 1
    if not 0 <= length <= longest:
        raise ValueError(f"length must be between 0 and {longest}, got {length}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    most = max_samples if max_samples is not None else 2**20
    if not 1 <= num_samples <= most:
        raise ValueError(f"num_samples must be between 1 and {most}, got {num_samples}")


def bucket(rows):
    """The batch size to run `rows` rows at: the next power of two, so an XLA
    compiled export compiles for a few shapes only."""
    return 1 << max(rows - 1, 0).bit_length()


def find_version_dir(path):
    """`path` if it is an export, else the newest `<version>/` export inside it.

    Raises:
        ValueError: neither is an export.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted(
        (int(p.name), p) for p in path.glob("*") if p.name.isdigit() and (p / "saved_model.pb").is_file()
    ) if path.is_dir() else []
    if not versions:
        raise ValueError(f"{path} is neither an exported model nor a directory of versions")
    return versions[-1][1]


class ExportedModel:
    """A loaded export and its model card.

    Args:
        path: a version directory (with `saved_model.pb`), or a model
            directory whose newest version is loaded.

    Raises:
        ValueError: `path` holds no export.
    """

    def __init__(self, path):
        self.path = find_version_dir(path)
        card_path = self.path / "assets" / "model.json"
        self.card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        self.name = self.card.get("name") or self.path.parent.name
        self.version = int(self.path.name) if self.path.name.isdigit() else 0
        self.alphabet = self.card["alphabet"]
        self.normalize = self.card.get("normalize")
        self._saved = tf.saved_model.load(str(self.path))
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

    def prepare(self, prime):
        """The prime as the model can read it.

        Normalised like text8 if the model was trained so; otherwise any
        character outside the alphabet is an error.

        Raises:
            ValueError: naming the characters outside the alphabet.
        """
        if self.normalize == "text8":
            prime = normalize_text8(prime, self.alphabet)
        unknown = sorted(set(prime) - set(self.alphabet))
        if unknown:
            raise ValueError(
                f"prime has characters outside the model's alphabet: {''.join(unknown)!r} "
                f"(alphabet: {self.alphabet!r})"
            )
        return prime

    def generate_rows(self, primes, length, temperatures, top_ks, top_ps, seeds, indices):
        """One call of the graph for rows with their own settings; primes prepared.

        Returns:
            list of str, `length` characters per row.
        """
        rows = len(primes)
        pad = bucket(rows) - rows

        def column(values, dtype, filler):
            return tf.constant(np.asarray(list(values) + [filler] * pad, dtype=dtype))

        out = self._generate(
            prime=column(primes, object, " "),
            length=tf.constant(length, tf.int32),
            temperature=column(temperatures, np.float32, 0.0),
            top_k=column(top_ks, np.int32, 0),
            top_p=column(top_ps, np.float32, 1.0),
            seed=column(seeds, np.int64, 0),
            index=column(indices, np.int32, 0),
        )
        return [t.decode("utf-8") for t in out["text"].numpy()[:rows]]

    def sample(self, prime="", length=200, temperature=1.0, top_k=0, top_p=1.0, seed=0, num_samples=1):
        """`num_samples` continuations of `prime` (sample `i` of `seed` each).

        Raises:
            ValueError: a setting is out of range or the prime cannot be read.
        """
        check_settings(length, temperature, top_k, top_p, num_samples)
        prime = self.prepare(prime)
        n = num_samples
        return self.generate_rows([prime] * n, length, [temperature] * n, [top_k] * n,
                                  [top_p] * n, [seed] * n, range(n))

    def stream(self, prime="", length=200, temperature=1.0, top_k=0, top_p=1.0, seed=0,
               num_samples=1, chunk=16):
        """Yields the samples `chunk` characters at a time, as lists of str.

        The chunks join to exactly what `sample` returns with the same
        arguments. Stop iterating to stop the generation.
        """
        check_settings(length, temperature, top_k, top_p, num_samples)
        prime = self.prepare(prime)
        n, rows = num_samples, bucket(num_samples)
        settings = {
            "temperature": tf.fill([rows], np.float32(temperature)),
            "top_k": tf.fill([rows], np.int32(top_k)),
            "top_p": tf.fill([rows], np.float32(top_p)),
            "seed": tf.fill([rows], np.int64(seed)),
            "index": tf.range(rows, dtype=tf.int32),
        }
        started = self._start(prime=tf.constant([prime] * rows))
        state, last = started["state"], started["last_ids"]
        for offset in range(0, length, chunk):
            out = self._resume(state=state, last_ids=last, length=tf.constant(min(chunk, length - offset)),
                               offset=tf.constant(offset), **settings)
            state, last = out["state"], out["last_ids"]
            yield [t.decode("utf-8") for t in out["text"].numpy()[:n]]


def sample(model_dir, prime="", length=200, temperature=1.0, top_k=0, top_p=1.0, seed=None, num_samples=1):
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


def new_seed():
    """A random seed that JSON and JavaScript round-trip exactly (< 2**53)."""
    return int(np.random.default_rng().integers(0, 2**53))
