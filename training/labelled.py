"""Labelled strings for the classifier: a directory of classes, a stratified split, batches.

The layout is the one of PyTorch's "classifying names" tutorial: one UTF-8
file per class, named after it (`Czech.txt`), one example per line.
"""

import dataclasses
import random
from pathlib import Path

import numpy as np

PAD, UNKNOWN = 0, 1  # ids 0 and 1; characters are 2, 3, ... in alphabet order
FRACTIONS = (0.8, 0.1, 0.1)  # train, valid, test of every class


@dataclasses.dataclass(frozen=True)
class Labelled:
    """A split: strings and their class numbers (indices into `classes`)."""
    texts: tuple
    labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class ClassData:
    """Everything a classifier run reads: classes, splits and the training alphabet."""
    name: str  # the directory's path, as given
    classes: tuple  # class names, sorted
    train: Labelled
    valid: Labelled
    test: Labelled
    alphabet: str  # the characters of the training split, sorted

    def index(self):
        return {char: i + 2 for i, char in enumerate(self.alphabet)}


def read_classes(directory):
    """`{class: [examples]}` from a directory of `<class>.txt` files.

    Raises:
        ValueError: the directory is missing, has no `.txt` files, a file is not
            UTF-8, or a class has fewer than 3 examples (one per split).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory (expected one <class>.txt file per class)")
    files = sorted(directory.glob("*.txt"))
    if len(files) < 2:
        raise ValueError(f"{directory} has {len(files)} <class>.txt file(s); a classifier needs 2 or more")
    examples = {}
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not UTF-8 text (byte {error.start})") from None
        examples[path.stem] = [line.strip() for line in lines if line.strip()]
        if len(examples[path.stem]) < 3:
            raise ValueError(f"{path} has {len(examples[path.stem])} examples; every class needs "
                             "at least 3 (one for each of train, valid and test)")
    return examples


def split(examples, seed=0, fractions=FRACTIONS):
    """Train, valid and test `Labelled`, stratified: each class's examples are shuffled
    (seeded) and cut by `fractions`, so every split holds every class."""
    rng = random.Random(seed)
    parts = [([], []) for _ in fractions]
    for label, name in enumerate(sorted(examples)):
        items = list(examples[name])
        rng.shuffle(items)
        train_end = max(1, int(fractions[0] * len(items)))
        valid_end = max(train_end + 1, int((fractions[0] + fractions[1]) * len(items)))
        for part, chunk in zip(parts, (items[:train_end], items[train_end:valid_end], items[valid_end:])):
            part[0].extend(chunk)
            part[1].extend([label] * len(chunk))
    return [Labelled(tuple(texts), np.array(labels, np.int32)) for texts, labels in parts]


def load(directory, seed=0):
    examples = read_classes(directory)
    train, valid, test = split(examples, seed)
    alphabet = "".join(sorted(set("".join(train.texts))))
    return ClassData(str(directory), tuple(sorted(examples)), train, valid, test, alphabet)


def encode(texts, index):
    """Right-padded int32 ids `[len(texts), longest]`; unseen characters are `UNKNOWN`."""
    ids = np.full((len(texts), max(max(map(len, texts), default=1), 1)), PAD, np.int32)
    for row, text in enumerate(texts):
        ids[row, :len(text)] = [index.get(char, UNKNOWN) for char in text]
    return ids


def batches(data, batch_size, rng, balanced=False):
    """Endless `(ids, labels)` batches of the training split: shuffled passes, or with
    `balanced` each example drawn from a class drawn uniformly (small classes repeat)."""
    train, index = data.train, data.index()
    by_class = [np.flatnonzero(train.labels == label) for label in range(len(data.classes))]
    while True:
        if balanced:
            order = [rng.choice(by_class[label])
                     for label in rng.integers(0, len(by_class), len(train.labels))]
        else:
            order = rng.permutation(len(train.labels))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = order[start:start + batch_size]
            yield encode([train.texts[i] for i in chosen], index), train.labels[chosen]


def confusion(labels, predictions, num_classes):
    """`[true, predicted]` counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix
