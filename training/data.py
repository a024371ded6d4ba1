"""Corpora as one byte per character: text8, text files, the embedded default.

Every corpus is split by position, as the text8 literature does: the first
90% trains, the next 5% validates, the last 5% tests.
"""

import dataclasses
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"
TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TEXT8_ZIP_BYTES = 31_344_016
TEXT8_CHARACTERS = 100_000_000
TINY_SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                        "tinyshakespeare/input.txt")
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_BYTES = 1_115_394
SPLIT = (0.9, 0.05, 0.05)
DIGITS = "zero one two three four five six seven eight nine".split()


class DataError(Exception):
    """A corpus cannot be had or is not what it claims to be; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A corpus held as ids, one byte per character.

    Attributes:
        name: where it came from (`text8`, `builtin` or a path).
        alphabet: the characters; id i is `alphabet[i]`.
        normalize: `"text8"` if the text was mapped to text8's alphabet, else None.
        train, valid, test: uint8 id arrays of the 90/5/5 split.
        dropped: characters of valid/test outside the training alphabet, left out.
    """

    name: str
    alphabet: str
    normalize: str | None
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    dropped: int = 0

    def split(self, name):
        if name not in ("train", "valid", "test"):
            raise DataError(f"unknown split {name!r}; valid choices are: 'train', 'valid', 'test'")
        return getattr(self, name)

    def decode(self, ids):
        if self.alphabet.isascii():  # a text8-sized split in a second, not a minute
            return np.frombuffer(self.alphabet.encode("ascii"), np.uint8)[ids].tobytes().decode("ascii")
        return "".join(self.alphabet[i] for i in ids)

    def facts(self):
        """What a model card says about the corpus a model was trained on."""
        return {"name": self.name, "normalize": self.normalize, "train_characters": len(self.train),
                "train_sha256": hashlib.sha256(self.decode(self.train).encode("utf-8")).hexdigest()}


def remap(corpus, alphabet):
    """`corpus` with ids of `alphabet` (a model's), which must hold every character it has.

    Raises:
        DataError: naming the corpus's characters that `alphabet` lacks.
    """
    if corpus.alphabet == alphabet:
        return corpus
    missing = sorted(set(corpus.alphabet) - set(alphabet))
    if missing:
        hint = (" (the model was trained on text8-normalised text: add --normalize text8)"
                if set(alphabet) <= set(TEXT8_ALPHABET) else "")
        raise DataError(f"{corpus.name} has characters the model cannot read: "
                        f"{''.join(missing)!r}{hint}")
    table = np.array([alphabet.index(c) for c in corpus.alphabet], np.uint8)
    return dataclasses.replace(corpus, alphabet=alphabet, train=table[corpus.train],
                               valid=table[corpus.valid], test=table[corpus.test])


def cache_dir():
    return Path(os.environ.get("CHARZOO_DATA") or Path.home() / ".cache" / "charzoo")


def normalize_text8_tensor(text):
    """Maps English text to text8's alphabet as text8 itself was made: lowercase,
    each digit spelled out between spaces, every run of other characters one space.

    TensorFlow ops on a string tensor of any shape, so that an export applies
    the very same mapping to primes inside its graph (see `training.generator`).
    """
    text = tf.strings.lower(text, encoding="utf-8")
    for digit, word in enumerate(DIGITS):
        text = tf.strings.regex_replace(text, str(digit), f" {word} ")
    return tf.strings.regex_replace(text, "[^a-z]+", " ")


def normalize_text8(text):
    """`normalize_text8_tensor` of a whole corpus, without a space at either end."""
    return normalize_text8_tensor(tf.constant(text)).numpy().decode("ascii").strip()


def split_bytes(data):
    """Positions of the 90/5/5 split of `data`."""
    first = int(len(data) * SPLIT[0])
    second = first + int(len(data) * SPLIT[1])
    return data[:first], data[first:second], data[second:]


def encode(data, alphabet):
    """Maps a uint8 array of character codes to ids; codes outside `alphabet` map to 255."""
    table = np.full(256, 255, np.uint8)
    table[np.frombuffer(alphabet.encode("latin-1"), np.uint8)] = np.arange(len(alphabet))
    return table[data]


def corpus_from_text(name, text, normalize=None):
    if normalize == "text8":
        text = normalize_text8(text)
    elif normalize is not None:
        raise DataError(f"unknown normalization {normalize!r}; valid choices are: 'text8'")
    if len(text) < 100:
        raise DataError(f"corpus {name!r} has {len(text)} characters; at least 100 are needed")
    if normalize == "text8":
        return corpus_from_codes(name, np.frombuffer(text.encode("ascii"), np.uint8), "text8")
    # Alphabets beyond one byte: ids index the sorted characters of the training split.
    train_text, valid_text, test_text = split_bytes(text)
    alphabet = "".join(sorted(set(train_text)))
    if len(alphabet) > 255:
        raise DataError(f"{name}: {len(alphabet)} distinct characters; at most 255 are supported")
    index = {c: i for i, c in enumerate(alphabet)}
    unknown = sum(c not in index for c in valid_text + test_text)
    arrays = [np.fromiter((index[c] for c in part if c in index), np.uint8)
              for part in (train_text, valid_text, test_text)]
    return Corpus(name, alphabet, None, *arrays, dropped=unknown)


def corpus_from_codes(name, codes, normalize):
    train, valid, test = (encode(part, TEXT8_ALPHABET) for part in split_bytes(codes))
    for part in (train, valid, test):
        if (part == 255).any():
            raise DataError(f"{name}: characters outside text8's alphabet [a-z ]")
    return Corpus(name, TEXT8_ALPHABET, normalize, train, valid, test)


def read_text8_zip(path, expected_characters=TEXT8_CHARACTERS):
    """The 100M characters of a text8.zip as uint8 codes, verified."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = archive.namelist()[0]
            codes = np.frombuffer(archive.read(member), np.uint8)
    except (zipfile.BadZipFile, IndexError, OSError, EOFError) as error:
        raise DataError(f"{path} is not a readable text8.zip ({error})") from None
    if expected_characters is not None and len(codes) != expected_characters:
        raise DataError(f"{path} unzips to {len(codes):,} characters, expected {expected_characters:,}")
    if (encode(codes, TEXT8_ALPHABET) == 255).any():
        raise DataError(f"{path} holds characters outside [a-z ]; it is not text8")
    return codes


def download(url, destination, verify, timeout=30):
    """Downloads through a temporary file, `verify(path)`s it (raising DataError if it is
    not what it should be), then renames it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        verify(temporary)
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def cached(name, url, verify, size, directory=None):
    """The path of corpus file `name` in the cache, downloaded and verified on first use."""
    path = Path(directory or cache_dir()) / name
    if not path.exists():
        print(f"charzoo: downloading {name} from {url} to {path}", flush=True)
        try:
            download(url, path, verify)
        except (urllib.error.URLError, OSError) as error:
            raise DataError(
                f"{name} is not in {path.parent} and cannot be downloaded from {url} ({error}). "
                f"Put {name} ({size:,} bytes) at {path} (or set CHARZOO_DATA to its folder), or "
                "train on another corpus: --data builtin, or --data PATH for a text file (with "
                "--normalize text8 to map it to text8's alphabet)."
            ) from None
    return path


def text8_codes(directory=None, url=TEXT8_URL, expected_bytes=TEXT8_ZIP_BYTES,
                expected_characters=TEXT8_CHARACTERS):
    """text8 from the cache, downloading and verifying it on first use."""

    def verify(path):
        size = os.path.getsize(path)
        if size != expected_bytes:
            raise DataError(f"download of {url} gave {size:,} bytes, expected {expected_bytes:,}")
        read_text8_zip(path, expected_characters)

    path = cached("text8.zip", url, verify, expected_bytes, directory)
    return read_text8_zip(path, expected_characters)


def tiny_shakespeare_text(directory=None, url=TINY_SHAKESPEARE_URL, sha256=TINY_SHAKESPEARE_SHA256):
    """Tiny Shakespeare (char-rnn's 1.1M characters) from the cache, downloaded on first use."""

    def verify(path):
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if digest != sha256:
            raise DataError(f"download of {url} has SHA-256 {digest}, expected {sha256}")

    return cached("tinyshakespeare.txt", url, verify, TINY_SHAKESPEARE_BYTES,
                  directory).read_text(encoding="utf-8")


def builtin_text():
    """English prose every Python installation carries: the documentation's topics."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def load(spec="text8", normalize=None):
    """Loads the corpus named by `spec`: "text8", "builtin", "tinyshakespeare", or a path
    to a text8.zip or text file."""
    if spec == "text8":
        return corpus_from_codes("text8", text8_codes(), "text8")
    if spec == "builtin":
        return corpus_from_text("builtin", builtin_text(), "text8")
    if spec == "tinyshakespeare":
        return corpus_from_text("tinyshakespeare", tiny_shakespeare_text(), normalize)
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"no corpus at {spec!r}: give 'text8', 'builtin', 'tinyshakespeare' or "
                        "the path of a file")
    if zipfile.is_zipfile(path):
        return corpus_from_codes(str(path), read_text8_zip(path, None), "text8")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error})") from None
    return corpus_from_text(str(path), text, normalize)
