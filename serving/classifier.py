"""One exported classifier: strings in, class probabilities out (`POST ...:classify`).

Needs only TensorFlow and the SavedModel written by `training.export.export_classifier`:
its `classify` signature maps characters to ids itself; the model card lists the classes.
"""

import tensorflow as tf

from serving.export_dir import read_export, version_of
from serving.settings import SettingError

MAX_TEXTS = 256  # strings per request
MAX_TEXT = 200  # characters per string (names are short; longer texts are refused, not cut)


class ExportedClassifier:
    """A loaded classifier export and its model card.

    Args:
        path: a version directory, or a model directory whose newest version is loaded.
        name: str, the model's name; default its directory's name.

    Raises:
        ValueError: `path` holds no export, or its files cannot be read.
    """

    task = "classify"

    def __init__(self, path, name=None):
        self.path, self.card, saved = read_export(path)
        self.name = name or self.path.parent.name
        self.version = version_of(self.path) or 0
        self.classes = self.card["classes"]
        self._classify = saved.signatures["classify"]
        self._saved = saved
        self.batch_sizes = set()  # nothing to warm per batch size: no XLA here
        self.warm_up()

    def warm_up(self, batch_sizes=(1,)):
        """Runs the signature once: its first call prepares the graph (~1 s)."""
        self._classify(text=tf.constant(["a"]))

    def describe(self):
        card = self.card
        return {"name": self.name, "version": self.version, "task": "classify",
                "family": card.get("family"), "preset": card.get("preset"), "classes": self.classes,
                "created": card.get("created"),
                "metrics": {k: card.get(k) for k in ("valid_accuracy", "test_accuracy")}}

    def classify(self, texts, top=3):
        """For each text its `top` classes, likeliest first, as `{"class", "probability"}`.

        Raises:
            SettingError: no texts, too many, an empty or too long one, or a bad `top`.
        """
        if not texts or len(texts) > MAX_TEXTS:
            raise SettingError("texts", f"must hold 1 to {MAX_TEXTS} strings, got {len(texts)}")
        for i, text in enumerate(texts):
            if not 0 < len(text) <= MAX_TEXT:
                raise SettingError("texts", f"[{i}] must have 1 to {MAX_TEXT} characters, got {len(text)}")
        if not 1 <= top <= len(self.classes):
            raise SettingError("top", f"must be between 1 and {len(self.classes)}, got {top}")
        try:
            encoded = tf.constant([text.encode("utf-8") for text in texts])
        except UnicodeEncodeError:
            raise SettingError("texts", "must be valid Unicode (a lone surrogate is not)") from None
        probabilities = self._classify(text=encoded)["probabilities"].numpy()
        answers = []
        for row in probabilities:
            best = row.argsort()[::-1][:top]
            answers.append([{"class": self.classes[i], "probability": round(float(row[i]), 6)}
                            for i in best])
        return answers
